"""DAG files parse cleanly, import nothing heavy at parse time, and follow our task conventions.

Parsed in a subprocess with its own AIRFLOW_HOME so Airflow's config never leaks into the rest
of the test session.
"""

import json
import subprocess
import sys
from pathlib import Path

DAGS = Path(__file__).resolve().parents[2] / "dags"

PROBE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
bag = DagBag(dag_folder=sys.argv[1])
heavy = sorted({m.split('.')[0] for m in set(sys.modules) - before}
               & {"torch", "ray", "mlflow", "pandas", "pyarrow", "great_expectations", "exfm", "boto3"})
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "heavy": heavy, "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "schedule": str(getattr(dag.timetable, "description", None) or type(dag.timetable).__name__), "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "tasks": {t.task_id: {"retries": t.retries, "timeout": str(t.execution_timeout),
                              "upstream": sorted(t.upstream_task_ids)} for t in dag.tasks},
    }
print("RESULT " + json.dumps(out))
"""


def _parse(tmp_path):
    env = {"AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(DAGS)], env=env, text=True,
                          capture_output=True, timeout=300)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(line[-1][len("RESULT "):])


def test_dags_parse_without_errors_or_heavy_imports(tmp_path):
    out = _parse(tmp_path)
    assert out["errors"] == {}
    assert out["heavy"] == [], f"heavy modules imported at DAG-parse time: {out['heavy']}"
    daily = out["dags"]["exfm_daily"]
    assert daily["catchup"] is False and daily["max_active_runs"] == 1
    assert daily["schedule"] != "None"
    tasks = daily["tasks"]
    assert set(tasks) == {"land", "train_fm", "augment", "vm_names", "train_vm"}
    for name, t in tasks.items():
        assert t["retries"] >= 1, f"{name} has no retries"
        assert t["timeout"] != "None", f"{name} has no execution_timeout"
    # the pipeline's picture: land feeds DAS and the FM; the VM fan-out waits for DAS
    assert tasks["train_fm"]["upstream"] == ["land"]
    assert tasks["augment"]["upstream"] == ["land"]
    assert tasks["train_vm"]["upstream"] == ["vm_names"]
    assert tasks["vm_names"]["upstream"] == ["augment"]
