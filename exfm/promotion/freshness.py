"""The FM freshness policy, pure: how stale the teacher of a day is, and what a VM does about it.

The gap of day ``d`` is ``d - the training day of the FM snapshot that augmented d`` (1 when the
FM trains every day). Above ``freshness.max_gap_days`` the alert fires and the VM follows
``freshness.policy``: ``fail`` (the VM task fails, naming the gap) or ``degraded`` (the VM trains
without FM supervision and is tagged ``degraded=true``).

Example:
    >>> from exfm.config.promotion import FreshnessConfig
    >>> freshness_verdict(FreshnessConfig(max_gap_days=2, policy="degraded"),
    ...                   "2026-01-05", "2026-01-02").status
    'degraded'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date

from exfm.config.promotion import FreshnessConfig

EPOCH = date(1970, 1, 1)


class StaleFMError(RuntimeError):
    """The FM that taught a day is older than ``freshness.max_gap_days`` under policy ``fail``."""


def day_index(day: str) -> int:
    """Days since 1970-01-01: the ``step`` of every per-day metric, so MLflow's charts draw each
    model's figures over days, whatever the data source."""
    return (date.fromisoformat(day) - EPOCH).days


def gap_days(day: str, fm_day: str | None) -> int | None:
    """Days between ``day`` and its FM snapshot's training day; None when no FM taught it."""
    if fm_day is None:
        return None
    return (date.fromisoformat(day) - date.fromisoformat(fm_day)).days


@dataclass(frozen=True)
class FreshnessVerdict:
    """``status``: ``ok`` | ``no_fm`` | ``degraded`` | ``fail``; ``alert``: the gap is above the
    limit; ``message``: one readable line."""

    day: str
    fm_day: str | None
    gap: int | None
    max_gap: int
    status: str
    alert: bool
    message: str

    @property
    def degraded(self) -> bool:
        return self.status == "degraded"

    def as_dict(self) -> dict:
        return asdict(self)


def freshness_verdict(f: FreshnessConfig, day: str, fm_day: str | None) -> FreshnessVerdict:
    """What the policy says for ``day`` taught by an FM trained on ``fm_day``."""
    gap = gap_days(day, fm_day)
    if gap is None:
        return FreshnessVerdict(day, None, None, f.max_gap_days, "no_fm", False,
                                f"{day}: no FM snapshot taught this day")
    if gap <= f.max_gap_days:
        return FreshnessVerdict(day, fm_day, gap, f.max_gap_days, "ok", False,
                                f"{day}: FM of {fm_day}, freshness gap {gap} day(s)")
    msg = (f"{day}: FM snapshot of {fm_day} is {gap} day(s) old > freshness.max_gap_days "
           f"{f.max_gap_days}; policy {f.policy}")
    return FreshnessVerdict(day, fm_day, gap, f.max_gap_days, f.policy, True, msg)


def enforce_freshness(f: FreshnessConfig, day: str, fm_day: str | None) -> FreshnessVerdict:
    """:func:`freshness_verdict`, raising :class:`StaleFMError` under policy ``fail``."""
    v = freshness_verdict(f, day, fm_day)
    if v.status == "fail":
        raise StaleFMError(v.message)
    return v
