"""The embedded stack's Airflow hooks: ``core.hostname_callable`` for loopback log servers, and
the connect arguments of its SQLite metadata database.

Airflow itself is started through the launcher :func:`exfm.paths.airflow_launcher` (it rebinds
the log servers to ``$EXFM_AIRFLOW_LOG_SERVER_HOST``); this module stays free of Airflow imports.
"""

from __future__ import annotations

import os

HOST_ENV = "EXFM_AIRFLOW_LOG_SERVER_HOST"


def loopback_hostname() -> str:
    """``core.hostname_callable`` of the embedded stack: the address the log servers bind."""
    return os.environ.get(HOST_ENV) or "127.0.0.1"


# ``database.sql_alchemy_connect_args`` (and ``_async``) of an Airflow on SQLite: how long a
# connection waits for another process's write lock before "database is locked". sqlite3's
# default is 5 s; the scheduler, the DAG processor, the API server, every task and the CLI write
# to the one file, and on a busy machine a `backfill create` waited longer than that six times in
# a row. Airflow adds its own keys to these dicts, so each engine gets its own.
SQLITE_BUSY_TIMEOUT_S = 60.0
SQLITE_CONNECT_ARGS: dict = {"timeout": SQLITE_BUSY_TIMEOUT_S}
SQLITE_CONNECT_ARGS_ASYNC: dict = {"timeout": SQLITE_BUSY_TIMEOUT_S}
