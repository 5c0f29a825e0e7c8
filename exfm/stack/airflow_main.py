"""The embedded stack's Airflow hostname: ``core.hostname_callable`` for loopback log servers.

Airflow itself is started through the launcher :func:`exfm.paths.airflow_launcher` (it rebinds
the log servers to ``$EXFM_AIRFLOW_LOG_SERVER_HOST``); this module stays free of Airflow imports.
"""

from __future__ import annotations

import os

HOST_ENV = "EXFM_AIRFLOW_LOG_SERVER_HOST"


def loopback_hostname() -> str:
    """``core.hostname_callable`` of the embedded stack: the address the log servers bind."""
    return os.environ.get(HOST_ENV) or "127.0.0.1"
