"""The embedded stack's Airflow hostname: ``core.hostname_callable`` for loopback log servers.

Airflow itself is started through ``infra/local/airflow_launcher.py`` (it rebinds the log
servers to ``$EXFM_AIRFLOW_LOG_SERVER_HOST``); this module stays free of Airflow imports.
"""

from __future__ import annotations

import os
from pathlib import Path

HOST_ENV = "EXFM_AIRFLOW_LOG_SERVER_HOST"
LAUNCHER = Path(__file__).resolve().parents[2] / "infra" / "local" / "airflow_launcher.py"


def loopback_hostname() -> str:
    """``core.hostname_callable`` of the embedded stack: the address the log servers bind."""
    return os.environ.get(HOST_ENV) or "127.0.0.1"
