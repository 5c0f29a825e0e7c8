"""Offline metrics of a served prediction (METHOD.md "Metrics"), numpy only.

NE and calibration follow TorchRec (``torchrec/metrics/ne.py``, ``calibration.py``): predictions
are clamped to [eps, 1 - eps] before the log; NE = logloss / entropy of the empirical CTR;
calibration = sum p / sum y. Undefined values (one class only, no positives) are NaN.

Example:
    >>> all_metrics([0, 1, 1], [0.2, 0.6, 0.9])["auc"]
    1.0
"""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-12


def _arrays(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} differ in length")
    return y, p


def auc(y, p) -> float:
    """Area under the ROC curve (ties share their average rank); NaN with one class only."""
    y, p = _arrays(y, p)
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    sp = p[order]
    ranks = np.empty(len(p), dtype=np.float64)
    # average rank (1-based) of each run of equal scores
    starts = np.r_[0, np.flatnonzero(np.diff(sp)) + 1]
    ends = np.r_[starts[1:], len(sp)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(y, p, eps: float = EPS) -> float:
    """Mean BCE of predictions clamped to [eps, 1 - eps]."""
    y, p = _arrays(y, p)
    if len(y) == 0:
        return float("nan")
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def normalized_entropy(y, p, eps: float = EPS) -> float:
    """logloss / H(mean y); NaN when the data has one class only."""
    y, _ = _arrays(y, p)
    if len(y) == 0:
        return float("nan")
    ctr = float(np.mean(y))
    if ctr <= 0.0 or ctr >= 1.0:
        return float("nan")
    h = -(ctr * math.log(ctr) + (1 - ctr) * math.log(1 - ctr))
    return logloss(y, p, eps) / h


def calibration(y, p) -> float:
    """sum p / sum y (1.0 is perfect); NaN without positives."""
    y, p = _arrays(y, p)
    s = float(y.sum())
    return float(p.sum() / s) if s > 0 else float("nan")


def all_metrics(y, p) -> dict[str, float]:
    """{"auc", "logloss", "ne", "calibration"} of predictions ``p`` against labels ``y``."""
    return {"auc": auc(y, p), "logloss": logloss(y, p), "ne": normalized_entropy(y, p),
            "calibration": calibration(y, p)}
