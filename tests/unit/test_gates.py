"""Data gates (great-expectations in-process, no services): each rule fails alone on its own bad
day with its own reason, and a good day passes."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from exfm.config.validation import ValidationConfig
from exfm.data.schema import DatasetSchema, SparseField
from exfm.validation import GateFailed
from exfm.validation.gates import check_augmented, check_raw
from exfm.validation.stats import band, day_stats

DAY = "2026-01-08"
T0 = 1767830400  # 2026-01-08T00:00:00Z
N = 200
SCHEMA = DatasetSchema(name="t", timestamp="ts", request_id="rid", domain="domain",
                       labels=["click"], sparse=[SparseField(name="user_id", vocab=50)],
                       dense=["price"])
VCFG = ValidationConfig()


def raw(n=N, seed=0, **over) -> pa.Table:
    rng = np.random.default_rng(seed)
    cols = {
        "ts": pa.array(T0 + np.sort(rng.integers(0, 86400, n)), pa.int64()),
        "rid": pa.array(np.arange(n) + seed * 10_000, pa.int64()),
        "domain": pa.array(rng.choice(["d0", "d1"], n)),
        "click": pa.array((rng.random(n) < 0.3).astype(np.int64)),
        "user_id": pa.array(rng.integers(0, 50, n), pa.int64()),
        "price": pa.array(rng.random(n), pa.float32()),
    }
    cols.update(over)
    return pa.table({k: v for k, v in cols.items() if v is not None})


def augmented(n=N, pred=None, version="v1", **over) -> pa.Table:
    t = raw(n, **over)
    p = pred if pred is not None else pa.array(np.random.default_rng(1).uniform(0.1, 0.5, n),
                                               pa.float32())
    return t.append_column("fm_pred_click", p).append_column(
        "fm_version", pa.array([version] * n if isinstance(version, str) or version is None
                               else version, pa.string()))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gx")


@pytest.fixture(scope="module")
def trailing() -> list[dict]:
    return [day_stats(raw(seed=s), SCHEMA) for s in (1, 2, 3)]


@pytest.fixture(scope="module")
def trailing_aug() -> list[dict]:
    return [day_stats(augmented(), SCHEMA) for _ in range(3)]


def rules(res) -> set[tuple[str, str | None]]:
    return {(f.rule, f.column) for f in res.failures}


def test_good_raw_day_passes_and_links_its_docs(root, trailing):
    res = check_raw(raw(), SCHEMA, DAY, trailing, VCFG, root)
    assert res.ok, res.reason
    assert res.evaluated > 15 and res.stats["rows"] == N
    assert res.docs_url.startswith("file://") and res.docs_url.endswith(".html")
    page = Path(res.docs_url[len("file://"):])
    assert page.exists() and DAY in str(page) and "exfm_raw_day" in str(page)
    assert "raw gate passed for day 2026-01-08" in res.reason
    assert res.raise_if_failed() is res
    assert json.loads(json.dumps(res.as_dict()))["ok"] is True
    assert (root / "gx" / "checkpoints").is_dir()  # the checkpoint is stored in the context


def test_second_run_of_the_same_suite_is_an_update_not_an_error(root, trailing):
    assert check_raw(raw(), SCHEMA, DAY, trailing, VCFG, root).ok
    assert check_raw(raw(), SCHEMA, DAY, [], VCFG, root).ok  # no trailing days: bounds only


@pytest.mark.parametrize("name, table, rule, column", [
    ("missing column", lambda: raw(price=None), "schema column present", "price"),
    ("wrong dtype", lambda: raw(price=pa.array(np.arange(N), pa.int64())),
     "schema column type", "price"),
    ("NaN label", lambda: raw(click=pa.array([None] + [0, 1] * (N // 2 - 1) + [0],
                                             pa.float64())), "label not null", "click"),
    ("label 2", lambda: raw(click=pa.array([2] + [0, 1] * (N // 2 - 1) + [0], pa.int64())),
     "labels in {0, 1}", "click"),
    ("empty day", lambda: raw().slice(0, 0), "row count within the trailing band", None),
    ("duplicate request ids", lambda: raw(rid=pa.array([7] * N, pa.int64())),
     "unique request ids", "rid"),
    ("row-count collapse", lambda: raw(n=40), "row count within the trailing band", None),
    ("timestamps outside the day", lambda: raw(ts=pa.array(T0 - 3600 + np.arange(N),
                                                           pa.int64())),
     "timestamps inside the day", "ts"),
    ("id outside vocab", lambda: raw(user_id=pa.array([50] + [1] * (N - 1), pa.int64())),
     "ids within vocab", "user_id"),
    ("label-rate collapse", lambda: raw(click=pa.array([1] + [0] * (N - 1), pa.int64())),
     "label rate within the trailing band", "click"),
    ("null key", lambda: raw(domain=pa.array([None] * 3 + ["d0"] * (N - 3))),
     "key not null", "domain"),
])
def test_each_raw_rule_fails_on_its_own_bad_day(root, trailing, name, table, rule, column):
    res = check_raw(table(), SCHEMA, DAY, trailing, VCFG, root)
    assert not res.ok
    assert (rule, column) in rules(res), res.reason
    assert f"{rule}:" in res.reason and (column is None or f"column '{column}'" in res.reason)
    assert "observed" in res.reason and "expected" in res.reason
    with pytest.raises(GateFailed, match=rule.replace("{", r"\{").replace("}", r"\}")):
        res.raise_if_failed()


def test_missing_column_is_one_failure_not_one_per_rule(root, trailing):
    res = check_raw(raw(click=None), SCHEMA, DAY, trailing, VCFG, root)
    assert [f.rule for f in res.failures if f.column == "click"] == ["schema column present"]


def test_label_rate_bounds_without_trailing_days(root):
    vcfg = ValidationConfig(label_rate_overrides={"click": (0.2, 0.4)})
    res = check_raw(raw(click=pa.array([0] * N, pa.int64())), SCHEMA, DAY, [], vcfg, root)
    assert rules(res) == {("label rate within configured bounds", "click")}
    f = res.failures[0]
    assert f.observed == "0.0" and f.expected == "rate in [0.2, 0.4]"


def test_good_augmented_day_passes(root, trailing_aug):
    res = check_augmented(augmented(), SCHEMA, DAY, N, trailing_aug, VCFG, root)
    assert res.ok, res.reason
    assert "exfm_augmented_day" in res.docs_url


@pytest.mark.parametrize("name, table, raw_rows, rule, column", [
    ("prediction out of range", lambda: augmented(pred=pa.array([1.5] + [0.3] * (N - 1),
                                                                pa.float32())), N,
     "FM prediction in [0, 1]", "fm_pred_click"),
    ("prediction null", lambda: augmented(pred=pa.array([None] + [0.3] * (N - 1),
                                                        pa.float32())), N,
     "FM prediction not null", "fm_pred_click"),
    ("prediction mean collapse", lambda: augmented(pred=pa.array([0.001] * N, pa.float32())),
     N, "FM mean prediction within the trailing band", "fm_pred_click"),
    ("fm_version unset", lambda: augmented(version=[None] * N), N, "fm_version set",
     "fm_version"),
    ("rows not covered", lambda: augmented(), N + 50, "row coverage of the raw day", None),
    ("no prediction column", lambda: raw(), N, "FM prediction present", "fm_pred_click"),
])
def test_each_augmented_rule_fails_on_its_own_bad_day(root, trailing_aug, name, table, raw_rows,
                                                      rule, column):
    res = check_augmented(table(), SCHEMA, DAY, raw_rows, trailing_aug, VCFG, root)
    assert not res.ok
    assert (rule, column) in rules(res), res.reason


def test_an_fm_improving_towards_the_labels_is_no_mean_collapse(root):
    """The FM of the first days under-predicts a rare label, and its mean rises day by day as it
    learns: a mean above the trailing FM means but near the day's own label rate passes; one far
    from both (a blow-up, a collapse) still fails, and the reason names both ranges."""
    low_fm = [{"fm_pred_mean": {"fm_pred_click": 0.1}}] * 3  # band [0.05, 0.2]; labels ~0.3
    rate = day_stats(raw(), SCHEMA)["label_rate"]["click"]
    assert 0.25 < rate < 0.35

    def day(mean):
        return augmented(pred=pa.array(np.full(N, mean), pa.float32()))

    assert check_augmented(day(0.28), SCHEMA, DAY, N, low_fm, VCFG, root).ok
    for bad in (0.9, 0.01):
        res = check_augmented(day(bad), SCHEMA, DAY, N, low_fm, VCFG, root)
        assert rules(res) == {("FM mean prediction within the trailing band", "fm_pred_click")}
        assert "trailing days' FM mean" in res.failures[0].expected
        assert f"label rate {rate:.4g}" in res.failures[0].expected
    # a day without a positive label has no label-rate range: the trailing band alone decides
    assert not check_augmented(day(0.28).drop(["click"]).append_column(
        "click", pa.array([0] * N, pa.int64())), SCHEMA, DAY, N, low_fm, VCFG, root).ok


def test_band_and_config_validation():
    assert band([{"label_rate": {"click": 0.2}}, {"rows": 5}], "label_rate/click",
                (0.5, 2.0)) == (0.1, 0.4)
    with pytest.raises(ValueError, match="validation.row_count_band"):
        ValidationConfig(row_count_band=(2.0, 0.5))


def test_every_declared_column_of_every_role_must_be_present(root):
    """The split layout the schema declares (keys, labels, sparse, dense, FM-only, sequences):
    a day missing each one fails once per column, naming it."""
    from exfm.data.schema import SequenceField

    schema = DatasetSchema.model_validate({
        "name": "t", "timestamp": "ts", "request_id": "rid", "domain": "domain",
        "stage": "stage", "labels": ["click", "like"],
        "sparse": [{"name": "user_id", "vocab": 50}, {"name": "item_id", "vocab": 9}],
        "dense": ["price"], "sequences": [{"name": "hist", "of": "item_id", "max_len": 4}],
        "fm_only": ["xsvc_ctr"]})
    assert isinstance(schema.sequences[0], SequenceField) and "xsvc_ctr" in schema.dense
    full = raw().append_column("stage", pa.array(["s"] * N)).append_column(
        "like", pa.array(np.zeros(N, np.int64) + (np.arange(N) % 3 == 0))).append_column(
        "item_id", pa.array(np.arange(N) % 9, pa.int64())).append_column(
        "hist", pa.array([[1, 2]] * N, pa.list_(pa.int64()))).append_column(
        "xsvc_ctr", pa.array(np.full(N, 0.1), pa.float32()))
    assert check_raw(full, schema, DAY, [], VCFG, root).ok
    declared = ["rid", "domain", "stage", "like", "item_id", "price", "hist", "xsvc_ctr"]
    res = check_raw(full.drop_columns(declared), schema, DAY, [], VCFG, root)
    present = [f.column for f in res.failures if f.rule == "schema column present"]
    assert sorted(present) == sorted(declared), res.reason
    assert {f.column for f in res.failures} == set(declared)  # one failure each, nothing else
