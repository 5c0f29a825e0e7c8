"""The VM promotion decision, pure: the day's figures in, ``promoted`` / ``refused`` /
``no_decision`` and a readable reason out. :mod:`exfm.promotion.gate` feeds it from the registry
and records it on the version.

Example:
    >>> from exfm.config.promotion import PromotionConfig
    >>> d = decide(PromotionConfig(), {"ne": 0.80, "calibration": 1.0, "rows": 1000},
    ...            {"ne": 0.82, "calibration": 1.0, "rows": 1000}, None)
    >>> d.decision, d.challenger, d.champion
    ('promoted', 0.8, 0.82)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from exfm.config.promotion import PromotionConfig
from exfm.promotion.rules import check_not_worse, in_band

PROMOTED, REFUSED, NO_DECISION = "promoted", "refused", "no_decision"
TAG_PREFIX = "gate."


@dataclass
class Decision:
    """One gate decision (or a manual promote / rollback), as recorded on the version."""

    decision: str  # promoted | refused | no_decision | manual_promote | rollback
    reason: str
    metric: str
    # the figures on the day's slice: the metric of each model, the challenger's calibration
    challenger: float | None = None
    champion: float | None = None
    control: float | None = None
    calibration: float | None = None
    rows: int = 0
    # where and what: the VM, the day whose rows judged, the versions compared, who decided
    vm: str = ""
    day: str = ""
    challenger_version: str | None = None
    champion_version: str | None = None
    control_version: str | None = None
    by: str = "gate"
    checks: list[str] = field(default_factory=list)

    @property
    def promoted(self) -> bool:
        return self.decision in (PROMOTED, "manual_promote", "rollback")

    def as_dict(self) -> dict:
        return asdict(self)

    def tags(self) -> dict[str, str]:
        """Version tags ``gate.<field>`` (strings; None left out), plus ``gate.json``."""
        out = {f"{TAG_PREFIX}{k}": (v if isinstance(v, str) else json.dumps(v))
               for k, v in self.as_dict().items() if v is not None and k != "checks"}
        out[f"{TAG_PREFIX}json"] = json.dumps(self.as_dict(), sort_keys=True)
        return out

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> "Decision | None":
        raw = tags.get(f"{TAG_PREFIX}json")
        return cls(**json.loads(raw)) if raw else None


def decide(p: PromotionConfig, challenger: dict | None, champion: dict | None,
           control: dict | None) -> Decision:
    """Judge a challenger from the day's evaluations (``evaluate()`` dicts: ``ne``, ``auc``,
    ``logloss``, ``calibration``, ``rows``) of the challenger, the champion (None: there is none
    yet) and its control arm (None: no control). Nothing is read or written here."""
    m = p.metric
    fig = lambda e: None if e is None else float(e[m])  # noqa: E731
    d = Decision(decision=NO_DECISION, reason="", metric=m, challenger=fig(challenger),
                 champion=fig(champion), control=fig(control))
    if challenger is None:
        d.reason = "no challenger: no version trained before this day"
        return d
    d.rows = int(challenger.get("rows", 0))
    d.calibration = float(challenger["calibration"])
    if d.rows < p.min_rows:
        d.reason = f"{d.rows} rows in the day's slice < promotion.min_rows {p.min_rows}"
        return d
    if not in_band(d.calibration, p.calibration_band):
        lo, hi = p.calibration_band
        d.decision = REFUSED
        d.reason = f"calibration {d.calibration:.3f} outside the band [{lo}, {hi}]"
        return d
    for name, base in (("champion", champion), ("control", control if p.vs_control else None)):
        if base is None:
            continue
        c = check_not_worse(m, d.challenger, float(base[m]), p.max_abs_worsening,
                            p.max_rel_worsening, against=name)
        d.checks.append(c.reason)
        if not c.ok:
            d.decision, d.reason = REFUSED, c.reason
            return d
    d.decision = PROMOTED
    d.reason = "; ".join(d.checks) if d.checks else (
        f"first champion ({m} {d.challenger:.5f}, calibration {d.calibration:.3f} in band)")
    return d
