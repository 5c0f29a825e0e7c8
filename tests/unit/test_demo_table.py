"""exfm demo's progress line and results table (pure formatting of Airflow/MLflow answers)."""

from exfm.commands import demo


def test_running_names_busy_tasks_with_their_vm():
    tis = [{"task_id": "land", "state": "success", "map_index": -1},
           {"task_id": "train_fm", "state": "running", "map_index": -1},
           {"task_id": "train_vm", "state": "queued", "map_index": 0, "rendered_map_index": "d0"}]
    assert demo._running(tis) == "train_fm (running), train_vm[d0] (queued)"
    assert demo._running([{"task_id": "land", "state": "success", "map_index": -1}]) == "-"


def test_table_prints_lift_and_dashes_for_missing_arms():
    lines = []
    demo.print_table([{"day": "2026-01-02", "vm": "d0", "fm_auc": 0.71, "ctl_auc": 0.69,
                       "lift_auc": 0.02, "fm_version": "1", "gap": 1},
                      {"day": "2026-01-02", "vm": "d1", "fm_auc": 0.6, "ctl_auc": 0.65,
                       "lift_auc": -0.05, "fm_version": "1", "gap": 1}], log=lines.append)
    assert lines[0].split() == demo.COLUMNS
    assert "0.0200" in lines[1] and "-0.0500" in lines[2]
    assert lines[1].split()[5] == "-"  # no NE logged: a dash, not None
