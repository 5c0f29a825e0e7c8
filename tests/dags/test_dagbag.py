"""DAG files parse cleanly, import nothing heavy at parse time, and follow our task conventions.

Parsed in a subprocess with its own AIRFLOW_HOME so Airflow's config never leaks into the rest
of the test session, as Airflow's DAG processor and task runner parse them: a ``BundleDagBag``
whose bundle path (the DAGs folder) is on ``sys.path``, so a DAG imports ``exfm_notify`` beside it
with no ``sys.path`` edit of its own.
"""

import json
import subprocess
import sys
from pathlib import Path

DAGS = Path(__file__).resolve().parents[2] / "dags"

PROBE = r"""
import json, sys
from pathlib import Path
from airflow.dag_processing.dagbag import BundleDagBag
before = set(sys.modules)
path_before = list(sys.path)
bag = BundleDagBag(dag_folder=sys.argv[1], bundle_path=Path(sys.argv[1]))
new = set(sys.modules) - before
# exfm.oncall (stdlib only) is named by the deadline's callback; nothing else of exfm
heavy = sorted(({m.split('.')[0] for m in new}
                & {"torch", "ray", "mlflow", "pandas", "pyarrow", "great_expectations", "boto3"})
               | {m for m in new if m.startswith("exfm.") and m != "exfm.oncall"})
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "heavy": heavy, "dags": {},
       "sys_path_added": [p for p in sys.path if p not in path_before]}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "schedule": str(getattr(dag.timetable, "description", None) or type(dag.timetable).__name__), "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "start_date": str(dag.start_date), "end_date": str(dag.end_date),
        "tasks": {t.task_id: {"retries": t.retries, "timeout": str(t.execution_timeout),
                              "depends_on_past": t.depends_on_past,
                              "wait_for_downstream": t.wait_for_downstream,
                              "mode": getattr(t, "mode", None),
                              "pool": t.pool, "pool_slots": t.pool_slots,
                              "outlets": [getattr(o, "name", None) for o in t.outlets],
                              "on_failure": [type(c).__name__ for c in
                                             (t.on_failure_callback if isinstance(
                                                 t.on_failure_callback, list)
                                              else [t.on_failure_callback])
                                             if c is not None],
                              "upstream": sorted(t.upstream_task_ids)} for t in dag.tasks},
        "land_downstream": sorted(dag.task_dict["land"].downstream_task_ids)
                           if "land" in dag.task_dict else None,
        "map_index_template": getattr(dag.task_dict.get("train_vm"), "map_index_template", None),
        "deadline": [{"reference": type(d.reference).__name__, "minutes":
                      d.interval.total_seconds() / 60, "callback": d.callback.path,
                      "kwargs": d.callback.kwargs} for d in (dag.deadline or [])],
    }
print("RESULT " + json.dumps(out))
"""


def _parse(tmp_path, schedule: dict | None = None):
    env = {"AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)}
    if schedule is not None:
        env["EXFM_SCHEDULE"] = json.dumps(schedule)
    proc = subprocess.run([sys.executable, "-c", PROBE, str(DAGS)], env=env, text=True,
                          capture_output=True, timeout=300)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(line[-1][len("RESULT "):])


def test_dags_parse_without_errors_or_heavy_imports(tmp_path):
    out = _parse(tmp_path)
    assert out["errors"] == {}
    assert out["heavy"] == [], f"heavy modules imported at DAG-parse time: {out['heavy']}"
    assert out["sys_path_added"] == [str(DAGS)], "only Airflow's own bundle path on sys.path"
    daily = out["dags"]["exfm_daily"]
    assert daily["catchup"] is False and daily["max_active_runs"] == 1
    assert daily["schedule"] != "None"
    tasks = daily["tasks"]
    assert set(tasks) == {"wait_for_data", "land", "gate_raw", "bless_fm", "train_fm", "augment",
                          "gate_augmented", "vm_names", "train_vm", "promote", "report"}
    for name, t in tasks.items():
        if name != "wait_for_data":  # a sensor's timeout fails it once, no retry storm
            assert t["retries"] >= 1, f"{name} has no retries"
        assert t["timeout"] != "None", f"{name} has no execution_timeout"
        assert t["depends_on_past"], f"{name} does not wait for the previous day"
        assert t["on_failure"] == ["ExfmFailureNotifier"], f"{name}: no on-call alert on failure"
    assert tasks["wait_for_data"]["retries"] == 0 and tasks["wait_for_data"]["mode"] == "reschedule"
    assert tasks["land"]["upstream"] == ["wait_for_data"] and tasks["land"]["wait_for_downstream"]
    # the pipeline's picture: land -> gate_raw -> bless_fm -> augment -> gate_augmented -> VMs ->
    # promote -> report; train_fm beside them after gate_raw. train_fm and augment also take land
    # directly, so land's wait_for_downstream holds day d until d-1's FM and DAS are done.
    assert tasks["gate_raw"]["upstream"] == ["land"]
    assert tasks["train_fm"]["upstream"] == ["gate_raw", "land"]
    assert tasks["bless_fm"]["upstream"] == ["gate_raw"]
    assert tasks["augment"]["upstream"] == ["bless_fm", "land"]
    assert tasks["gate_augmented"]["upstream"] == ["augment"]
    assert tasks["vm_names"]["upstream"] == ["gate_augmented"]
    assert tasks["train_vm"]["upstream"] == ["vm_names"]
    assert tasks["promote"]["upstream"] == ["train_vm"]
    assert tasks["report"]["upstream"] == ["gate_augmented", "gate_raw", "promote"]
    assert daily["land_downstream"] == ["augment", "gate_raw", "train_fm"]
    assert daily["map_index_template"] == "{{ vm }}"


def test_calendar_comes_from_the_stack(tmp_path):
    """start/end date and the data wait come from $EXFM_SCHEDULE (what `exfm stack up` exports
    from the config), so the schedule and the data line up."""
    out = _parse(tmp_path, {"start_date": "2025-03-04", "end_date": "2025-03-11",
                            "data_wait_s": 120, "poke_s": 10})
    daily = out["dags"]["exfm_daily"]
    assert daily["start_date"].startswith("2025-03-04") and daily["end_date"].startswith("2025-03-11")


def test_pools_deadline_and_assets_come_from_the_stack(tmp_path):
    """What `exfm stack up` exports from the config (exfm.config.schedule.dag_settings): the
    Ray-bound tasks in exfm_ray with their slots, train_fm alone in exfm_fm_chain, the deadline,
    and the assets each task produces."""
    from exfm.config import load_config
    from exfm.config.schedule import dag_settings

    cfg = load_config(None, ["das.max_actors=3", "schedule.ray_pool_slots=2", "deadline.minutes=90",
                             "storage.bucket=lake"], env={})
    out = _parse(tmp_path, dag_settings(cfg, "2026-01-01", None, ray_cpus=8))
    tasks = out["dags"]["exfm_daily"]["tasks"]
    assert (tasks["augment"]["pool"], tasks["augment"]["pool_slots"]) == ("exfm_ray", 2)  # capped
    assert (tasks["train_vm"]["pool"], tasks["train_vm"]["pool_slots"]) == ("exfm_ray", 1)
    assert (tasks["train_fm"]["pool"], tasks["train_fm"]["pool_slots"]) == ("exfm_fm_chain", 1)
    assert {tasks[t]["pool"] for t in ("land", "gate_raw", "promote", "report")} == {"default_pool"}
    assert tasks["land"]["outlets"] == ["exfm_raw"] and tasks["train_fm"]["outlets"] == ["exfm_fm"]
    assert tasks["augment"]["outlets"] == ["exfm_augmented_days"]  # alias: only a committed day
    assert tasks["train_vm"]["outlets"] == ["exfm_vm"]
    [deadline] = out["dags"]["exfm_daily"]["deadline"]
    assert deadline == {"reference": "DagRunQueuedAtDeadline", "minutes": 90.0,
                        "callback": "exfm.oncall.deadline_missed",
                        "kwargs": {"dag_id": "exfm_daily", "minutes": 90,
                                   "reference": "queued_at"}}
    # without exfm's pools (a stack that did not create them): the default pool, no deadline
    bare = _parse(tmp_path, {"start_date": "2026-01-01", "deadline": None})
    assert {t["pool"] for t in bare["dags"]["exfm_daily"]["tasks"].values()} == {"default_pool"}
    assert bare["dags"]["exfm_daily"]["deadline"] == []
