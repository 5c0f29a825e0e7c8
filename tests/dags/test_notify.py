"""The failure notifier in a real Airflow run: a task that fails (a gate's reason) under
``dag.test()`` with ``ExfmFailureNotifier`` as its ``on_failure_callback``; the alert reaches a
local webhook (an HTTP server on 127.0.0.1) with the DAG, task, day, try and the reason, and the
task downstream of the failed one does not run.

Airflow runs in a subprocess with its own AIRFLOW_HOME (SQLite), as in ``test_dagbag``."""

import subprocess
import sys
from pathlib import Path

from tests.webhook import webhook_server

DAGS = Path(__file__).resolve().parents[2] / "dags"

PROBE = r"""
import os, pendulum
from airflow.sdk import dag, task
from exfm_notify import ExfmFailureNotifier

HOOK, MARKER = os.environ["PROBE_HOOK"], os.environ["PROBE_MARKER"]

@dag(dag_id="notify_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
     catchup=False, default_args={"retries": 0,
                                  "on_failure_callback": ExfmFailureNotifier(webhook=HOOK)})
def probe():
    @task
    def gate_raw():
        raise RuntimeError("gate_raw 2026-01-03: label rate of click 0.000 below 0.001")

    @task
    def augment():
        open(MARKER, "w").write("ran")

    gate_raw() >> augment()

d = probe()
if __name__ == "__main__":
    d.test(logical_date=pendulum.datetime(2026, 1, 3, tz="UTC"))
"""


def test_failed_task_alert_reaches_the_webhook(tmp_path):
    marker = tmp_path / "augment_ran"
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "notify_probe.py").write_text(PROBE)
    with webhook_server() as hook:
        env = {"AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
               "AIRFLOW__CORE__DAGS_FOLDER": str(folder), "PATH": str(Path(sys.executable).parent),
               "HOME": str(tmp_path), "PYTHONPATH": f"{DAGS}:{DAGS.parent}",
               "PROBE_HOOK": f"{hook.url}/hook", "PROBE_MARKER": str(marker)}
        subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=env,
                       capture_output=True, timeout=300, check=True)
        proc = subprocess.run([sys.executable, str(folder / "notify_probe.py")], env=env,
                              text=True, capture_output=True, timeout=300)
        received = hook.bodies
    assert received, proc.stdout[-3000:] + proc.stderr[-3000:]
    alert = received[0]["alert"]
    assert (alert["dag_id"], alert["task_id"], alert["day"]) == ("notify_probe", "gate_raw", "2026-01-03")
    assert alert["try_number"] == 1 and "label rate of click" in alert["reason"]
    assert alert["log_url"] and "/dags/notify_probe/runs/" in alert["log_url"]
    assert "[exfm] FAILED notify_probe.gate_raw day 2026-01-03" in received[0]["text"]
    assert not marker.exists()  # downstream of the failed gate did not run
