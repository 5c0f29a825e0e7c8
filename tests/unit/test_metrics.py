"""Metrics agree with scikit-learn (AUC, logloss) and the textbook NE / calibration."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import log_loss, roc_auc_score

from exfm.train.metrics import all_metrics, auc, calibration, logloss, normalized_entropy


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 200), st.integers(0, 10_000), st.booleans())
def test_auc_and_logloss_match_sklearn(n, seed, coarse):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1
    p = rng.random(n)
    if coarse:  # many ties
        p = np.round(p, 1).clip(0.05, 0.95)
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-6)
    assert logloss(y, p) == pytest.approx(log_loss(y, p, labels=[0, 1]), abs=1e-6)


def test_ne_and_calibration_by_hand():
    y = np.array([0, 0, 0, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6])
    ctr = 0.25
    h = -(ctr * math.log(ctr) + (1 - ctr) * math.log(1 - ctr))
    assert normalized_entropy(y, p) == pytest.approx(log_loss(y, p) / h, abs=1e-9)
    assert calibration(y, p) == pytest.approx(1.2)
    # predicting the empirical CTR everywhere gives NE = 1
    assert normalized_entropy(y, np.full(4, ctr)) == pytest.approx(1.0)


def test_edge_cases_are_nan_or_clamped():
    assert math.isnan(auc([1, 1], [0.2, 0.3]))
    assert math.isnan(normalized_entropy([0, 0], [0.1, 0.2]))
    assert math.isnan(calibration([0, 0], [0.1, 0.2]))
    assert math.isfinite(logloss([1, 0], [0.0, 1.0]))  # clamped to [eps, 1 - eps]
    assert set(all_metrics([0, 1], [0.2, 0.8])) == {"auc", "logloss", "ne", "calibration"}
