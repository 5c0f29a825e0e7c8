"""The comparison rules of every gate, pure: "not worse by a margin" and the calibration band.

A metric's worsening is MLflow ``MetricThreshold``-style: ``candidate - baseline`` when lower is
better (NE, LogLoss), ``baseline - candidate`` when higher is better (AUC). A candidate passes
when the worsening is at most ``max_abs`` and, if ``max_rel`` is set, at most
``max_rel * |baseline|``. NaN figures never pass (nothing to judge on).

Example:
    >>> check_not_worse("ne", 0.80, 0.79, max_abs=0.0).ok
    False
    >>> check_not_worse("auc", 0.71, 0.70, max_abs=0.0).ok
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LOWER_IS_BETTER = {"ne": True, "logloss": True, "auc": False}


@dataclass(frozen=True)
class Comparison:
    """One "candidate vs baseline" verdict: ``ok``, the ``worsening`` (> 0 = worse) and why."""

    ok: bool
    worsening: float
    reason: str


def worsening(metric: str, candidate: float, baseline: float) -> float:
    """How much worse ``candidate`` is than ``baseline`` on ``metric`` (negative = better)."""
    if metric not in LOWER_IS_BETTER:
        raise ValueError(f"metric '{metric}': one of {sorted(LOWER_IS_BETTER)}")
    d = candidate - baseline
    return d if LOWER_IS_BETTER[metric] else -d


def check_not_worse(metric: str, candidate: float, baseline: float, max_abs: float = 0.0,
                    max_rel: float | None = None, against: str = "baseline") -> Comparison:
    """Is ``candidate`` not worse than ``baseline`` by more than the margins?"""
    if not (math.isfinite(candidate) and math.isfinite(baseline)):
        return Comparison(False, float("nan"), f"{metric} undefined (candidate {candidate}, "
                                                f"{against} {baseline})")
    w = worsening(metric, candidate, baseline)
    limit = max_abs if max_rel is None else min(max_abs, max_rel * abs(baseline))
    figures = f"{metric} {candidate:.5f} vs {against} {baseline:.5f}"
    if w > limit:
        return Comparison(False, w, f"{figures}: worse by {w:.5f} > margin {limit:.5f}")
    return Comparison(True, w, f"{figures}: not worse (worsening {w:.5f} <= margin {limit:.5f})")


def in_band(value: float, band: tuple[float, float]) -> bool:
    """``low <= value <= high`` (NaN is outside)."""
    lo, hi = band
    return math.isfinite(value) and lo <= value <= hi
