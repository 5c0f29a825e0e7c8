"""The point-in-time selection rules of exfm.registry.chain on registry listings (the listing
itself is exercised against a real MLflow in tests/integration/test_scheduler.py)."""

from types import SimpleNamespace

import pytest

from exfm.config import ExfmConfig
from exfm.registry import chain


def _v(version, day, **tags):
    return SimpleNamespace(version=str(version), tags={"day": day, **tags})


@pytest.fixture
def registry(monkeypatch):
    versions: list = []
    monkeypatch.setattr(chain, "live_versions", lambda cfg, name, include_archived=False: [
        v for v in versions if not v.tags.get("superseded_by")])
    return versions


def test_warm_start_is_the_previous_days_snapshot(registry):
    cfg = ExfmConfig()
    assert chain.fm_warm_start(cfg, "2026-01-01") is None  # the chain's first day
    registry += [_v(1, "2026-01-01"), _v(2, "2026-01-02"), _v(3, "2026-01-03")]
    assert chain.fm_warm_start(cfg, "2026-01-03") == "2"  # not the newest (v3, a later day)
    assert chain.fm_warm_start(cfg, "2026-01-02") == "1"


def test_missing_previous_day_names_the_day_to_run_first(registry):
    registry += [_v(1, "2026-01-01")]
    with pytest.raises(chain.ChainError, match="run 2026-01-02 first"):
        chain.fm_warm_start(ExfmConfig(), "2026-01-03")


def test_das_uses_the_newest_fm_trained_before_the_day(registry):
    cfg = ExfmConfig()
    registry += [_v(1, "2026-01-01"), _v(4, "2026-01-02"), _v(3, "2026-01-03")]
    assert chain.das_fm_version(cfg, "2026-01-01") is None
    assert chain.das_fm_version(cfg, "2026-01-03") == "4"
    # a replay of day 2 after day 3: day 1's snapshot, never day 3's
    assert chain.das_fm_version(cfg, "2026-01-02") == "1"
    assert chain.das_fm_version(cfg, "2026-02-01") == "3"  # newest day wins over higher version


def test_superseded_versions_are_skipped(registry):
    registry += [_v(1, "2026-01-01"), _v(2, "2026-01-02", superseded_by="5"),
                 _v(5, "2026-01-02")]
    assert chain.fm_version_of_day(ExfmConfig(), "2026-01-02") == "5"
    assert chain.previous_day("2026-03-01") == "2026-02-28"


def test_a_garbage_collected_snapshot_is_an_error_not_no_fm(registry):
    registry += [_v(1, "2026-01-01"), _v(2, "2026-01-02", archived="true"), _v(3, "2026-01-03")]
    with pytest.raises(chain.ChainError, match="v2 .*garbage-collected"):
        chain.das_fm_version(ExfmConfig(), "2026-01-03")
    assert chain.das_fm_version(ExfmConfig(), "2026-01-02") == "1"


def test_fm_trains_on_its_own_period(registry):
    cfg = ExfmConfig(fm={"every_days": 3})
    first = chain.fm_training_day(cfg, "2026-01-01")
    assert first.trains and first.newest is None and "chain starts" in first.reason
    registry += [_v(1, "2026-01-01")]
    for d in ("2026-01-02", "2026-01-03"):
        skip = chain.fm_training_day(cfg, d)
        assert not skip.trains and skip.newest == "1" and skip.newest_day == "2026-01-01"
        assert "fm.every_days 3" in skip.reason and "next FM day 2026-01-04" in skip.reason
    assert chain.fm_training_day(cfg, "2026-01-04").trains
    # day 4 warm-starts from the newest snapshot before it (day 1's), not from day 3's
    assert chain.fm_warm_start(cfg, "2026-01-04") == "1"
    # every day by default: the newest snapshot is one day old on the next day
    assert chain.fm_training_day(ExfmConfig(), "2026-01-02").trains


def test_a_missed_fm_day_names_the_day_to_run_first(registry):
    cfg = ExfmConfig(fm={"every_days": 2})
    registry += [_v(1, "2026-01-01")]
    assert chain.fm_warm_start(cfg, "2026-01-03") == "1"  # 01-02 was a skip day
    with pytest.raises(chain.ChainError, match="FM of 2026-01-03 .*run 2026-01-03 first"):
        chain.fm_warm_start(cfg, "2026-01-05")  # 01-03 was due and has no snapshot
    # a refused (not blessed) snapshot still counts for the chain and its period
    registry += [_v(2, "2026-01-03", blessed="false")]
    assert chain.fm_warm_start(cfg, "2026-01-05") == "2"
    assert not chain.fm_training_day(cfg, "2026-01-04").trains
