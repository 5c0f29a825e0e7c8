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
    return _auc(y > 0.5, p)


def _auc(pos: np.ndarray, p: np.ndarray) -> float:
    n_pos = int(pos.sum())
    n_neg = len(p) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # Any sort will do (the default is numpy's fastest): equal scores form one run below, and
    # each run's positives get the run's average rank (1-based), whatever their order inside it.
    order = np.argsort(p)
    sp = p[order]
    starts = np.r_[0, np.flatnonzero(sp[1:] != sp[:-1]) + 1]
    ends = np.r_[starts[1:], len(sp)]
    pos_per_run = np.add.reduceat(pos[order].astype(np.float64), starts)
    rank_sum = float(((starts + ends + 1) / 2.0 * pos_per_run).sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def logloss(y, p, eps: float = EPS) -> float:
    """Mean BCE of predictions clamped to [eps, 1 - eps]."""
    y, p = _arrays(y, p)
    return _logloss(y, p, eps)


def _logloss(y: np.ndarray, p: np.ndarray, eps: float = EPS) -> float:
    if len(y) == 0:
        return float("nan")
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _ne(y: np.ndarray, ll: float) -> float:
    if len(y) == 0:
        return float("nan")
    ctr = float(np.mean(y))
    if ctr <= 0.0 or ctr >= 1.0:
        return float("nan")
    return ll / -(ctr * math.log(ctr) + (1 - ctr) * math.log(1 - ctr))


def normalized_entropy(y, p, eps: float = EPS) -> float:
    """logloss / H(mean y); NaN when the data has one class only."""
    y, p = _arrays(y, p)
    return _ne(y, _logloss(y, p, eps) if len(y) else float("nan"))


def calibration(y, p) -> float:
    """sum p / sum y (1.0 is perfect); NaN without positives."""
    y, p = _arrays(y, p)
    s = float(y.sum())
    return float(p.sum() / s) if s > 0 else float("nan")


def all_metrics(y, p) -> dict[str, float]:
    """{"auc", "logloss", "ne", "calibration"} of predictions ``p`` against labels ``y``."""
    y, p = _arrays(y, p)
    ll = _logloss(y, p)
    s = float(y.sum())
    return {"auc": _auc(y > 0.5, p), "logloss": ll, "ne": _ne(y, ll),
            "calibration": float(p.sum() / s) if s > 0 else float("nan")}
