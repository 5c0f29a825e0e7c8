"""The day report run: one MLflow run per day in ``exfm-pipeline`` (named ``report/<day>``).

It reads, for each configured VM, the day's runs in ``exfm-vm`` (tags ``day``, ``vm``, ``arm``:
progressive ``eval/*`` figures of the FM arm and of the control arm), the FM version that taught
it and the freshness gap the VM task logged (``fm/freshness_gap_days``), the ``degraded`` run
tag, and the promotion gate's decision of that day (``gate.*`` tags of the VM's live versions,
through the registry's lookup); then logs the table (``vms.json``
through ``mlflow.log_table``, ``report.md``), ``report/<vm>/*`` metrics with ``step`` = day
index, and PNG plots over the last ``history_days`` days. A re-run of the day logs into the same
run (idempotent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Callable

from exfm.config import ExfmConfig
from exfm.oncall import mlflow_run_url
from exfm.promotion.freshness import day_index
from exfm.report.table import VMDayRow, figures, headline, to_markdown


@dataclass
class DayReport:
    """Where the report is and its headline lines (what ``make demo`` prints)."""

    day: str
    run_id: str
    url: str
    headline: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"day": self.day, "run_id": self.run_id, "url": self.url,
                "headline": self.headline, "rows": self.rows}


def _vm_runs(client, exp_id: str, vm: str, days: list[str]) -> dict:
    """``{(day, arm): run}`` of ``vm``'s runs on ``days`` (the newest run per day and arm)."""
    runs = client.search_runs([exp_id], f"tags.vm = '{vm}'",  # no IN on tags in MLflow search
                              order_by=["attributes.start_time ASC"], max_results=5000)
    want = set(days)
    return {(r.data.tags.get("day"), r.data.tags.get("arm")): r for r in runs
            if r.data.tags.get("day") in want}


def _gate_decisions(cfg: ExfmConfig, registered: str) -> dict[str, tuple[str, str]]:
    """``{day: (decision, reason)}`` from the ``gate.*`` tags of ``registered``'s live versions
    (the registry's lookup: registrations not complete and versions superseded by a re-run of
    their day are left out; archived ones kept, their decisions are history). ``{}`` when the
    model is not registered yet; a registry that does not answer raises ``RegistryError``."""
    from exfm.registry.mlflow_registry import live_versions

    out = {}
    for v in sorted(live_versions(cfg, registered, include_archived=True),
                    key=lambda v: int(v.version)):
        d = v.tags.get("gate.day")
        if d and v.tags.get("gate.by", "gate") == "gate":
            out[d] = (v.tags.get("gate.decision", "-"), v.tags.get("gate.reason", ""))
    return out


def collect_rows(cfg: ExfmConfig, days: list[str]) -> list[VMDayRow]:
    """One :class:`VMDayRow` per configured VM and day in ``days`` that has an FM-arm run."""
    from exfm.registry.mlflow_registry import connect, experiment_name, vm_model_name

    client = connect(cfg)
    exp = client.get_experiment_by_name(experiment_name(cfg, "vm"))
    if exp is None:
        return []
    rows = []
    for vm in cfg.vms:
        runs = _vm_runs(client, exp.experiment_id, vm.name, days)
        gates = _gate_decisions(cfg, vm_model_name(vm.name))
        for d in days:
            fm = runs.get((d, "fm"))
            if fm is None:
                continue
            m, tags = fm.data.metrics, fm.data.tags
            ctrl = runs.get((d, "control"))
            fv = tags.get("fm_version")
            fv = None if fv in (None, "none") else fv
            gap = m.get("fm/freshness_gap_days")  # logged by the VM task (none: no FM taught it)
            decision, reason = gates.get(d, ("-", ""))
            rows.append(VMDayRow(
                vm=vm.name, day=d, auc=m.get("eval/auc"), ne=m.get("eval/ne"),
                calibration=m.get("eval/calibration"),
                control_auc=ctrl.data.metrics.get("eval/auc") if ctrl else None,
                control_ne=ctrl.data.metrics.get("eval/ne") if ctrl else None,
                freshness_gap=int(gap) if gap is not None and fv else None,
                promoted=decision, gate_reason=reason,
                degraded=tags.get("degraded") == "true", fm_version=fv))
    return rows


def _report_run_id(client, exp_id: str, day: str) -> str | None:
    runs = client.search_runs([exp_id], f"tags.component = 'report' and tags.day = '{day}'",
                              max_results=1)
    return runs[0].info.run_id if runs else None


def log_day_report(cfg: ExfmConfig, day: str, links: dict[str, str] | None = None,
                   history_days: int = 30, log: Callable[[str], None] = print) -> DayReport:
    """Log (or re-log) the report run of ``day``; ``links``: name -> URL (the gates' Data Docs,
    ...). Returns its run id, UI URL and headline lines."""
    import mlflow
    import pandas as pd
    import matplotlib.pyplot as plt

    from exfm.registry.mlflow_registry import connect, ensure_experiments

    client = connect(cfg)
    exp_id = ensure_experiments(cfg, vms=[])["pipeline"]
    d0 = date.fromisoformat(day)
    days = [(d0 - timedelta(days=k)).isoformat() for k in range(history_days - 1, -1, -1)]
    history = collect_rows(cfg, days)
    today = [r for r in history if r.day == day]
    run_id = _report_run_id(client, exp_id, day)
    mlflow.set_experiment(experiment_id=exp_id)  # resuming a run needs its experiment active
    with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else exp_id,
                          run_name=None if run_id else f"report/{day}",
                          tags={"day": day, "component": "report"}) as run:
        step = day_index(day)
        for r in today:
            vals = {"ne": r.ne, "auc": r.auc, "calibration": r.calibration,
                    "ne_lift_pct": r.ne_lift_pct, "auc_lift": r.auc_lift,
                    "freshness_gap": r.freshness_gap, "promoted": float(r.promoted == "promoted"),
                    "degraded": float(r.degraded)}
            mlflow.log_metrics({f"report/{r.vm}/{k}": float(v) for k, v in vals.items()
                                if v is not None}, step=step)
        records = [r.record() for r in today]
        mlflow.log_table(pd.DataFrame(records) if records else pd.DataFrame({"vm": []}),
                         artifact_file="vms.json")
        mlflow.log_text(to_markdown(day, today, links), "report.md")
        for fname, fig in figures(history).items():
            mlflow.log_figure(fig, f"plots/{fname}")
            plt.close(fig)
        if links:
            mlflow.set_tags({f"link.{k}": v for k, v in links.items()})
    url = mlflow_run_url(cfg.oncall.mlflow_base_url or cfg.tracking_uri, run.info.run_id, exp_id)
    lines = headline(day, today)
    log(f"day report {day}: {url}")
    stale = [r for r in today if r.freshness_gap is not None
             and r.freshness_gap > cfg.freshness.max_gap_days]
    if stale:
        freshness_alert(cfg, day, stale, url, log)
    return DayReport(day=day, run_id=run.info.run_id, url=url, headline=lines, rows=records)


def freshness_alert(cfg: ExfmConfig, day: str, stale: list[VMDayRow], report_url: str | None = None,
                    log: Callable[[str], None] = print) -> bool:
    """The FM-freshness alert: the VMs of ``day`` taught by an FM older than
    ``freshness.max_gap_days``, logged and POSTed like a failure (True if delivered)."""
    from exfm.oncall import build_alert, notify, webhook_url

    worst = max(r.freshness_gap for r in stale)
    reason = (f"FMStale: freshness gap {worst} day(s) > freshness.max_gap_days "
              f"{cfg.freshness.max_gap_days} (policy {cfg.freshness.policy}) for "
              + ", ".join(f"{r.vm}{' (degraded)' if r.degraded else ''}" for r in stale))
    alert = build_alert("exfm_daily", "report", day, None, reason, mlflow_url=report_url)
    return notify(alert, webhook_url(cfg.oncall.webhook_url), cfg.oncall.timeout_s, log=log)
