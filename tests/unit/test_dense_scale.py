"""Dense inputs logged in raw units (a length, a price in cents) are read on a scale models can
take: fitted on the first day a model is built for, kept in its input schema (snapshots, warm
starts), applied wherever a table becomes tensors; columns already on a unit scale stay as given."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest

from exfm.config import VMConfig, load_config
from exfm.data.batches import TableTensors
from exfm.data.dense_scale import CLIP, FIT_ROWS, IN_SCALE, apply_scale, fit_scale
from exfm.data.schema import DatasetSchema, SparseField
from exfm.data.vocab import InputSchema, input_schema, schema_from_dump
from exfm.models import build_fm, build_vm, load_snapshot, save_snapshot
from exfm.models.build import model_from_spec, model_spec

SCHEMA = DatasetSchema(name="news", timestamp="ts", labels=["click"],
                       sparse=[SparseField(name="uid", vocab=200),
                               SparseField(name="doc", vocab=200)],
                       dense=["doc_len", "hour"])
USER_BIAS = np.random.default_rng(100).normal(0, 1, 200)
DOC_BIAS = np.random.default_rng(101).normal(0, 1, 200)


def day(n: int, seed: int) -> pa.Table:
    """click: a user and a document effect plus log(doc_len); doc_len is log-normal around ~400
    characters, as a log would hold it; hour is in [0, 1)."""
    rng = np.random.default_rng(seed)
    uid, doc = rng.integers(0, 200, n), rng.integers(0, 200, n)
    doc_len = rng.lognormal(6.0, 1.0, n)
    z = USER_BIAS[uid] + DOC_BIAS[doc] + 0.5 * (np.log(doc_len) - 6.0) - 1.5
    click = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return pa.table({"ts": np.arange(n, dtype=np.int64), "click": click, "uid": uid, "doc": doc,
                     "doc_len": doc_len, "hour": rng.random(n)})


def test_the_rule_keeps_unit_scale_columns_and_rescales_raw_units():
    rng = np.random.default_rng(0)
    assert fit_scale("z", rng.normal(size=1000)) is None  # standardized: as given
    assert fit_scale("edge", np.array([-IN_SCALE, IN_SCALE])) is None
    raw = rng.lognormal(6.0, 1.0, 5000)
    s = fit_scale("doc_len", raw)
    z = apply_scale(raw, s)
    assert z.dtype == np.float32
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01  # standardized on the fit sample
    order = np.argsort(raw)
    assert (np.diff(z[order]) >= 0).all()  # monotone: the order of values is kept
    assert np.abs(apply_scale(np.array([1e12, -1e12]), s)).max() == CLIP  # outliers clipped
    const = fit_scale("c", np.full(10, 500.0))
    assert const.scale == 1.0 and np.isfinite(apply_scale(np.full(3, 500.0), const)).all()


def test_a_model_fits_on_its_first_rows_and_its_snapshot_keeps_the_scale():
    cfg = load_config(None, env={})
    first = day(3 * FIT_ROWS // 2, seed=1)
    vm = build_vm(VMConfig(name="v", model="fam", task="click"), SCHEMA, cfg, sample=first)
    assert set(vm.schema.scales()) == {"doc_len"}  # hour is in [0, 1): read as given
    want = fit_scale("doc_len", first.column("doc_len").to_numpy()[:FIT_ROWS])
    assert vm.schema.scales()["doc_len"] == want  # the first FIT_ROWS rows, not the whole day
    tt = TableTensors.from_table(first.slice(0, 5), vm.schema)
    assert np.allclose(tt.dense[:, 0].numpy(),
                       apply_scale(first.column("doc_len").to_numpy()[:5], want))
    assert np.allclose(tt.dense[:, 1].numpy(), first.column("hour").to_numpy()[:5])
    buf = io.BytesIO()
    save_snapshot(vm, buf)
    again, _ = load_snapshot(buf.getvalue())
    assert again.schema.scales() == vm.schema.scales()
    assert model_from_spec(model_spec(vm)).schema.scales() == vm.schema.scales()
    # a schema that has scales keeps them (a warm start never refits on a later day)
    assert again.schema.with_dense_scales(day(100, seed=9)).scales() == vm.schema.scales()
    fm = build_fm(SCHEMA, None, cfg, sample=first)
    assert set(fm.schema.scales()) == {"doc_len"}


def test_a_spec_saved_before_dense_scales_loads_and_reads_as_logged():
    dump = input_schema(SCHEMA, "vm").model_dump(mode="json")
    dump.pop("dense_scales")
    old = schema_from_dump(dump)
    assert isinstance(old, InputSchema) and old.dense_scales is None and old.scales() == {}
    t = day(4, seed=2)
    assert np.allclose(TableTensors.from_table(t, old).dense[:, 0].numpy(),
                       t.column("doc_len").to_numpy().astype(np.float32))


def test_a_fit_sample_without_a_dense_column_is_named():
    with pytest.raises(KeyError, match="doc_len"):
        input_schema(SCHEMA, "vm").with_dense_scales(day(10, seed=3).drop_columns(["doc_len"]))


def test_a_cross_network_learns_from_raw_units_only_when_they_are_rescaled():
    """DCN's cross layers multiply x0 by W x: with lengths in the thousands among its inputs the
    default FM learns next to nothing in one pass; rescaled, it learns the ids' and the length's
    effects."""
    from exfm.train import evaluate, train_fm_day

    cfg = load_config(None, ["models.torch_threads=1"], env={})  # the default FM's sizes
    train, test = day(20_000, seed=4), day(5_000, seed=5)
    auc = {}
    for name, sample in (("as logged", None), ("rescaled", train)):
        fm = build_fm(SCHEMA, None, cfg, "dcn", sample=sample)
        train_fm_day(fm, train, SCHEMA, cfg)
        auc[name] = evaluate(fm, test, SCHEMA, "click")["auc"]
    assert auc["rescaled"] > 0.78, auc
    assert auc["rescaled"] > auc["as logged"] + 0.1, auc
