"""The gates' pure rules: "not worse by a margin" (MetricThreshold-style), the VM promotion
decision with its calibration guard and control arm, and the FM freshness policy."""

from __future__ import annotations

import math

import pytest

from exfm.config import load_config
from exfm.config.promotion import FreshnessConfig, PromotionConfig
from exfm.promotion.decision import Decision, decide
from exfm.promotion.freshness import (StaleFMError, day_index, enforce_freshness,
                                      freshness_verdict, gap_days)
from exfm.promotion.rules import check_not_worse, in_band, worsening


def ev(ne, cal=1.0, rows=1000, auc=0.7):
    return {"ne": ne, "auc": auc, "logloss": ne / 2, "calibration": cal, "rows": rows}


def test_worsening_direction_and_margins():
    assert worsening("ne", 0.81, 0.80) == pytest.approx(0.01)
    assert worsening("auc", 0.69, 0.70) == pytest.approx(0.01)
    assert check_not_worse("ne", 0.805, 0.80, max_abs=0.01).ok
    assert not check_not_worse("ne", 0.815, 0.80, max_abs=0.01).ok
    # the relative margin tightens: 1% of 0.80 = 0.008 < 0.01
    assert not check_not_worse("ne", 0.809, 0.80, max_abs=0.01, max_rel=0.01).ok
    assert not check_not_worse("ne", math.nan, 0.80, max_abs=1.0).ok
    with pytest.raises(ValueError, match="metric 'mse'"):
        worsening("mse", 1, 2)
    assert in_band(1.0, (0.8, 1.25)) and not in_band(1.3, (0.8, 1.25))
    assert not in_band(math.nan, (0.8, 1.25))


def test_decide_promotes_refuses_and_records_figures():
    p = PromotionConfig(max_abs_worsening=0.005)
    d = decide(p, ev(0.80), ev(0.82), ev(0.81))
    assert d.decision == "promoted" and d.challenger == 0.80 and d.champion == 0.82
    assert len(d.checks) == 2
    worse = decide(p, ev(0.83), ev(0.82), None)
    assert worse.decision == "refused" and "vs champion" in worse.reason
    # not worse than the champion, but worse than its control arm
    ctrl = decide(p, ev(0.80), ev(0.82), ev(0.78))
    assert ctrl.decision == "refused" and "vs control" in ctrl.reason
    assert decide(p.model_copy(update={"vs_control": False}), ev(0.80), ev(0.82),
                  ev(0.78)).decision == "promoted"
    first = decide(p, ev(0.80), None, None)
    assert first.decision == "promoted" and "first champion" in first.reason
    assert decide(p, None, ev(0.8), None).decision == "no_decision"
    assert decide(p, ev(0.80, rows=10), None, None).decision == "no_decision"


def test_calibration_guard_refuses_even_a_better_challenger():
    d = decide(PromotionConfig(), ev(0.70, cal=1.6), ev(0.82), None)
    assert d.decision == "refused" and "calibration 1.600 outside" in d.reason
    assert d.calibration == 1.6


def test_decision_tags_round_trip():
    d = decide(PromotionConfig(), ev(0.80), ev(0.82), None)
    d.vm, d.day, d.challenger_version, d.champion_version = "v", "2026-01-02", "3", "2"
    tags = d.tags()
    assert tags["gate.decision"] == "promoted" and tags["gate.champion"] == "0.82"
    assert all(isinstance(v, str) for v in tags.values())
    assert Decision.from_tags(tags) == d


def test_promotion_config_band_is_checked():
    with pytest.raises(Exception, match="calibration_band"):
        load_config(None, ["promotion.calibration_band=[1.1, 1.3]"], env={})


def test_freshness_policy_at_the_configured_gap():
    f = FreshnessConfig(max_gap_days=2, policy="degraded")
    assert gap_days("2026-01-05", "2026-01-04") == 1 and gap_days("2026-01-05", None) is None
    assert freshness_verdict(f, "2026-01-04", "2026-01-02").status == "ok"  # gap 2 = limit
    v = freshness_verdict(f, "2026-01-05", "2026-01-02")
    assert v.status == "degraded" and v.alert and v.degraded and v.gap == 3
    assert freshness_verdict(f, "2026-01-05", None).status == "no_fm"
    fail = FreshnessConfig(max_gap_days=2, policy="fail")
    assert enforce_freshness(fail, "2026-01-04", "2026-01-02").status == "ok"
    with pytest.raises(StaleFMError, match="3 day\\(s\\) old > freshness.max_gap_days 2"):
        enforce_freshness(fail, "2026-01-05", "2026-01-02")
    assert day_index("1970-01-02") == 1 and day_index("2026-01-02") - day_index("2026-01-01") == 1
