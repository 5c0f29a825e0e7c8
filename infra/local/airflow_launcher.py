"""``python infra/local/airflow_launcher.py <airflow args>``: the ``airflow`` CLI with loopback
log servers. Kept out of the ``exfm`` library, which never imports Airflow.

Airflow 3.3's worker and trigger log servers (started by ``airflow scheduler`` and ``airflow
triggerer``) call ``uvicorn.run(host="")``, i.e. every interface, and no setting changes that. The
embedded stack binds everything to ``cfg.host``, so this launcher rebinds a wildcard host to
``$EXFM_AIRFLOW_LOG_SERVER_HOST`` before handing over to Airflow's own ``main``. The log servers
run in forked children, which inherit the patch. Tasks report ``hostname`` =
``exfm.stack.airflow_main.loopback_hostname`` (``core.hostname_callable``), so the API server
fetches a running task's log from the loopback address the server really listens on.
"""

from __future__ import annotations

import os
import sys

HOST_ENV = "EXFM_AIRFLOW_LOG_SERVER_HOST"


def _bind_log_servers(host: str) -> None:
    import uvicorn

    original = uvicorn.run

    def run(app, *args, **kwargs):
        if kwargs.get("host") in ("", None, "0.0.0.0", "::"):
            kwargs["host"] = host
        return original(app, *args, **kwargs)

    uvicorn.run = run


def main() -> int:
    host = os.environ.get(HOST_ENV)
    if host:
        _bind_log_servers(host)
    from airflow.__main__ import main as airflow_main

    sys.argv[0] = "airflow"
    return airflow_main() or 0


if __name__ == "__main__":
    sys.exit(main())
