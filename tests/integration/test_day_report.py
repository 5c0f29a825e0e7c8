"""The day report against a real MLflow: for each day of a 3-day run made here directly (VM runs
with progressive figures for the FM arm and the control arm, an FM version per day, one gate
decision), the report run exists in ``exfm-pipeline`` with its table, markdown and plots, its
figures (lift, freshness gap, promoted, degraded) are right, and a re-run reuses the run. Every
exfm experiment carries ``mlflow.experimentKind=custom_model_development``."""

from __future__ import annotations

import json

import mlflow
import pytest

from exfm.config import VMConfig
from exfm.registry.mlflow_registry import connect, ensure_experiments, experiment_name
from exfm.report.day_report import log_day_report

pytestmark = pytest.mark.integration

DAYS = ["2026-02-01", "2026-02-02", "2026-02-03"]


@pytest.fixture(scope="module")
def rcfg(stack_cfg):
    return stack_cfg.model_copy(update={
        "vms": [VMConfig(name="rep-a", model="fam"), VMConfig(name="rep-b", model="fam")],
        "das": stack_cfg.das.model_copy(update={"fm_model": "exfm-fm-reporttest"})})


def _vm_run(cfg, vm, day, arm, ne, auc, cal, fm_version, degraded=False, gap=None):
    """A VM run as the VM task logs it (the FM arm's freshness gap as fm/freshness_gap_days)."""
    mlflow.set_experiment(experiment_name(cfg, "vm"))
    tags = {"day": day, "vm": vm, "arm": arm, "component": "vm", "fm_version": fm_version}
    if degraded:
        tags["degraded"] = "true"
    with mlflow.start_run(run_name=f"{vm}/{day}/{arm}", tags=tags):
        mlflow.log_metrics({"eval/ne": ne, "eval/auc": auc, "eval/calibration": cal,
                            **({"fm/freshness_gap_days": gap} if gap is not None else {})})


def test_day_report_for_each_day_of_a_backfill(rcfg):
    cfg = rcfg
    client = connect(cfg)
    ensure_experiments(cfg, vms=["rep-a", "rep-b"])
    for name in ("mlflow.experimentKind",):
        for fam in ("fm", "vm", "das", "pipeline"):
            exp = client.get_experiment_by_name(experiment_name(cfg, fam))
            assert exp.tags[name] == "custom_model_development"
    # FM versions trained on 01-31 and 02-01 (02-02 reuses the 02-01 one: gap 2 on 02-03)
    fm = {}
    for d in ("2026-01-31", "2026-02-01"):
        mv = client.create_model_version("exfm-fm-reporttest", source="s3://none/fm")
        client.set_model_version_tag("exfm-fm-reporttest", mv.version, "day", d)
        fm[d] = str(mv.version)
    teacher = {"2026-02-01": fm["2026-01-31"], "2026-02-02": fm["2026-02-01"],
               "2026-02-03": fm["2026-02-01"]}
    gap = {"2026-02-01": 1, "2026-02-02": 1, "2026-02-03": 2}
    for i, d in enumerate(DAYS):
        _vm_run(cfg, "rep-a", d, "fm", 0.78 - 0.01 * i, 0.72, 1.02, teacher[d], gap=gap[d])
        _vm_run(cfg, "rep-a", d, "control", 0.80, 0.70, 0.99, "none")
        _vm_run(cfg, "rep-b", d, "fm", 0.85, 0.65, 1.4, teacher[d], degraded=(i == 2),
                gap=gap[d])
    # a gate decision of 02-03 recorded on a version of rep-a
    mv = client.create_model_version("exfm-vm-rep-a", source="s3://none/vm")
    for k, v in {"gate.day": "2026-02-03", "gate.decision": "promoted",
                 "gate.reason": "ne 0.76 vs champion 0.77: not worse"}.items():
        client.set_model_version_tag("exfm-vm-rep-a", mv.version, k, v)
    # a decision of 02-02 on a version that a re-run of its day superseded: not the day's decision
    old = client.create_model_version("exfm-vm-rep-a", source="s3://none/vm")
    for k, v in {"gate.day": "2026-02-02", "gate.decision": "refused",
                 "gate.reason": "stale", "superseded_by": mv.version}.items():
        client.set_model_version_tag("exfm-vm-rep-a", old.version, k, v)

    reports_logs: list[str] = []
    reports = [log_day_report(cfg, d, links={"gate_raw": f"file:///docs/{d}/index.html"},
                              log=reports_logs.append) for d in DAYS]
    for rep, d in zip(reports, DAYS):
        run = client.get_run(rep.run_id)
        assert run.info.run_name == f"report/{d}" and run.data.tags["day"] == d
        files = {a.path for a in client.list_artifacts(rep.run_id)}
        assert {"vms.json", "report.md", "plots"} <= files
        plots = {a.path for a in client.list_artifacts(rep.run_id, "plots")}
        assert plots == {"plots/lift.png", "plots/calibration.png", "plots/freshness.png"}
        # the run's page, in the UI's runs view (MLflow 3.17 opens on GenAI otherwise)
        assert rep.url.endswith(f"/runs/{rep.run_id}?workflowType=machine_learning")
        assert rep.headline[0] == f"day {d}: 2 VM(s)"
    assert {r["vm"]: r["promoted"] for r in reports[1].rows}["rep-a"] == "-"
    last = reports[-1]
    rows = {r["vm"]: r for r in last.rows}
    assert rows["rep-a"]["ne_lift_pct"] == pytest.approx((0.80 - 0.76) / 0.80 * 100)
    assert rows["rep-a"]["freshness_gap"] == 2 and rows["rep-a"]["promoted"] == "promoted"
    assert rows["rep-b"]["degraded"] is True and rows["rep-b"]["ne_lift_pct"] is None
    metrics = client.get_run(last.run_id).data.metrics
    assert metrics["report/rep-a/freshness_gap"] == 2 and metrics["report/rep-b/degraded"] == 1
    table = json.loads(mlflow.artifacts.load_text(f"runs:/{last.run_id}/vms.json"))
    assert "ne_lift_pct" in table["columns"] and len(table["data"]) == 2
    md = mlflow.artifacts.load_text(f"runs:/{last.run_id}/report.md")
    assert "| rep-b |" in md and "[gate_raw](file:///docs/2026-02-03/index.html)" in md
    # a re-run of the day logs into the same run; with max_gap_days 1 the freshness alert fires
    logs = []
    strict = cfg.model_copy(update={"freshness": cfg.freshness.model_copy(update={"max_gap_days": 1})})
    assert log_day_report(strict, DAYS[-1], log=logs.append).run_id == last.run_id
    assert any("FMStale: freshness gap 2 day(s) > freshness.max_gap_days 1" in m
               and "rep-b (degraded)" in m for m in logs), logs
    assert not any("FMStale" in m for m in reports_logs)
