"""The day report's content, pure: one row per VM, the FM-vs-control lift, markdown, headline
lines and matplotlib (Agg) figures. No MLflow here.

Lift is the paper's: NE lift % = (NE_control - NE_fm) / NE_control x 100 (> 0: the FM helped),
AUC lift = AUC_fm - AUC_control; both on the progressive (next-day) figures.

Example:
    >>> r = VMDayRow(vm="v", day="2026-01-02", ne=0.78, control_ne=0.80, auc=0.71, control_auc=0.70)
    >>> round(r.ne_lift_pct, 2)
    2.5
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

COLUMNS = ["vm", "day", "auc", "ne", "calibration", "control_auc", "control_ne", "ne_lift_pct",
           "auc_lift", "freshness_gap", "promoted", "gate_reason", "degraded", "fm_version"]


def _f(x: float | None, nd: int = 4) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


@dataclass
class VMDayRow:
    """One VM on one day: progressive metrics of its FM arm and control arm, the freshness gap
    of the FM that taught it, the gate's decision and whether it trained degraded."""

    vm: str
    day: str
    # the FM arm's progressive figures (yesterday's version scored on this day's slice)
    auc: float | None = None
    ne: float | None = None
    calibration: float | None = None
    # the control arm's (the same VM trained without FM)
    control_auc: float | None = None
    control_ne: float | None = None
    # the age of the FM that taught the day; the promotion gate's decision of the day
    freshness_gap: int | None = None
    promoted: str = "-"  # promoted | refused | no_decision | - (no gate ran)
    gate_reason: str = ""
    degraded: bool = False
    fm_version: str | None = None

    @property
    def ne_lift_pct(self) -> float | None:
        if self.ne is None or not self.control_ne:
            return None
        return (self.control_ne - self.ne) / self.control_ne * 100

    @property
    def auc_lift(self) -> float | None:
        if self.auc is None or self.control_auc is None:
            return None
        return self.auc - self.control_auc

    def record(self) -> dict:
        return {**asdict(self), "ne_lift_pct": self.ne_lift_pct, "auc_lift": self.auc_lift}


def to_markdown(day: str, rows: list[VMDayRow], links: dict[str, str] | None = None) -> str:
    """The report as markdown: the table, then the links (Data Docs of the gates, ...)."""
    head = ["VM", "AUC", "NE", "calib.", "NE lift %", "AUC lift", "gap (d)", "promoted", "why",
            "degraded"]
    lines = [f"# exfm day report {day}", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r.vm, _f(r.auc), _f(r.ne), _f(r.calibration, 3), _f(r.ne_lift_pct, 2),
            _f(r.auc_lift), "-" if r.freshness_gap is None else str(r.freshness_gap),
            r.promoted, r.gate_reason.replace("|", "/"), "yes" if r.degraded else "no"]) + " |")
    if links:
        lines += ["", "## Links", ""] + [f"- [{k}]({v})" for k, v in links.items()]
    return "\n".join(lines) + "\n"


def headline(day: str, rows: list[VMDayRow]) -> list[str]:
    """A few lines for a terminal (``make demo``): one per VM."""
    out = [f"day {day}: {len(rows)} VM(s)"]
    for r in rows:
        lift = _f(r.ne_lift_pct, 2)
        gap = "-" if r.freshness_gap is None else r.freshness_gap
        out.append(f"  {r.vm}: NE {_f(r.ne)} (lift {lift}% vs control), calibration "
                   f"{_f(r.calibration, 3)}, FM gap {gap}d, {r.promoted}"
                   + (", DEGRADED" if r.degraded else ""))
    return out


def figures(history: list[VMDayRow]) -> dict:
    """PNG-ready figures over days, per VM: ``lift.png`` (NE lift %), ``calibration.png``,
    ``freshness.png`` (gap in days). ``history``: rows of any days, any VMs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_vm: dict[str, list[VMDayRow]] = {}
    for r in sorted(history, key=lambda r: r.day):
        by_vm.setdefault(r.vm, []).append(r)
    out = {}
    for fname, title, get in (("lift.png", "NE lift % (FM arm vs control)", lambda r: r.ne_lift_pct),
                              ("calibration.png", "calibration (sum p / sum y)",
                               lambda r: r.calibration),
                              ("freshness.png", "FM freshness gap (days)",
                               lambda r: r.freshness_gap)):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for vm, rs in by_vm.items():
            pts = [(r.day, get(r)) for r in rs if get(r) is not None]
            if pts:
                ax.plot([d for d, _ in pts], [v for _, v in pts], marker="o", label=vm)
        ax.set_title(title)
        ax.set_xlabel("day")
        ax.tick_params(axis="x", labelrotation=30)
        if by_vm:
            ax.legend(fontsize=8)
        fig.tight_layout()
        out[fname] = fig
    return out
