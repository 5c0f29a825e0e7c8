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


def test_gap_notes_say_why_das_served_an_older_fm():
    rows = [{"day": "2026-01-04", "vm": "d0", "fm_version": "3", "gap": 1},
            {"day": "2026-01-05", "vm": "d0", "fm_version": "3", "gap": 2},
            {"day": "2026-01-05", "vm": "d1", "fm_version": "3", "gap": 2},
            {"day": "2026-01-09", "vm": "d0", "fm_version": "6", "gap": 3},
            {"day": "2026-01-01", "vm": "d0", "fm_version": "none", "gap": None}]
    asked = []

    def skipped(day, version):
        asked.append((day, version))
        if day == "2026-01-05":
            return [{"version": "4", "day": "2026-01-04", "blessed": "false",
                     "reason": "ne 0.969 vs serving 0.942: worse by 0.027 > margin 0.010"}]
        return []

    notes = demo.gap_notes(rows, skipped, "exfm-fm")
    assert asked == [("2026-01-05", "3"), ("2026-01-09", "6")]  # once per stale day
    assert notes == [
        "gap 2 on 2026-01-05: DAS served exfm-fm v3; exfm-fm v4 (trained 2026-01-04) not blessed: "
        "ne 0.969 vs serving 0.942: worse by 0.027 > margin 0.010",
        "gap 3 on 2026-01-09: DAS served exfm-fm v6; no FM snapshot was trained after v6's day "
        "(fm.every_days, or a train_fm that did not run)"]
