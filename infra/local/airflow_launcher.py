"""``python infra/local/airflow_launcher.py <airflow args>``: the ``airflow`` CLI with loopback
log servers. Kept out of the ``exfm`` library, which never imports Airflow.

Airflow 3.3's worker and trigger log servers (started by ``airflow scheduler`` and ``airflow
triggerer``) call ``uvicorn.run(host="")``, i.e. every interface, and no setting changes that. The
embedded stack binds everything to ``cfg.host``, so this launcher rebinds a wildcard host to
``$EXFM_AIRFLOW_LOG_SERVER_HOST`` before handing over to Airflow's own ``main``. The log servers
run in forked children, which inherit the patch. Tasks report ``hostname`` =
``exfm.stack.airflow_main.loopback_hostname`` (``core.hostname_callable``), so the API server
fetches a running task's log from the loopback address the server really listens on.

The long-running services (``scheduler``, ``triggerer``, ``dag-processor``) run under a small
supervisor: Airflow's scheduler exits on some database races (e.g. ``StaleDataError: UPDATE
statement on table 'dag_run' expected to update 1 row(s); 0 were matched`` when a backfill is
created while its loop runs, apache/airflow#63926) and expects something to start it again, as
Kubernetes or systemd would. The supervisor runs the service as its child, starts it again after
an error exit (at most ``MAX_RESTARTS`` in ``WINDOW_S``, then it gives up with the child's exit
code), and passes SIGTERM / SIGINT to the child and ends, so ``exfm stack down`` works as before
(the child shares the supervisor's process group).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

HOST_ENV = "EXFM_AIRFLOW_LOG_SERVER_HOST"
SUPERVISED = ("scheduler", "triggerer", "dag-processor")
CHILD_ENV = "EXFM_AIRFLOW_SUPERVISED_CHILD"
MAX_RESTARTS, WINDOW_S, PAUSE_S = 5, 600.0, 5.0


def _bind_log_servers(host: str) -> None:
    import uvicorn

    original = uvicorn.run

    def run(app, *args, **kwargs):
        if kwargs.get("host") in ("", None, "0.0.0.0", "::"):
            kwargs["host"] = host
        return original(app, *args, **kwargs)

    uvicorn.run = run


def supervise(cmd: list[str], name: str, env: dict | None = None, pause_s: float = PAUSE_S,
              max_restarts: int = MAX_RESTARTS, window_s: float = WINDOW_S) -> int:
    """Run ``cmd`` until it exits 0 or a stop signal arrives; after an error exit, run it again
    (``pause_s`` later; more than ``max_restarts`` in ``window_s`` seconds: give up). Returns the
    last exit code (0 after a stop signal that the child obeyed)."""
    stopping = False
    child: subprocess.Popen | None = None

    def on_signal(sig, _frame):
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    starts: list[float] = []
    while True:
        child = subprocess.Popen(cmd, env=env)
        rc = child.wait()
        if stopping or rc == 0:
            return 0 if stopping and rc in (0, -signal.SIGTERM, -signal.SIGINT) else rc
        now = time.monotonic()
        starts = [t for t in starts if now - t < window_s] + [now]
        if len(starts) > max_restarts:
            print(f"[exfm] airflow {name} exited with code {rc}, {len(starts)} times in "
                  f"{window_s:.0f} s: not restarting it", file=sys.stderr, flush=True)
            return rc
        print(f"[exfm] airflow {name} exited with code {rc}: starting it again in "
              f"{pause_s:.0f} s (restart {len(starts)} of at most {max_restarts} in "
              f"{window_s:.0f} s)", file=sys.stderr, flush=True)
        deadline = time.monotonic() + pause_s
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)
        if stopping:
            return 0


def main() -> int:
    args = sys.argv[1:]
    if args and args[0] in SUPERVISED and not os.environ.get(CHILD_ENV):
        return supervise([sys.executable, os.path.abspath(__file__), *args], args[0],
                         env={**os.environ, CHILD_ENV: "1"})
    host = os.environ.get(HOST_ENV)
    if host:
        _bind_log_servers(host)
    from airflow.__main__ import main as airflow_main

    sys.argv[0] = "airflow"
    return airflow_main() or 0


if __name__ == "__main__":
    sys.exit(main())
