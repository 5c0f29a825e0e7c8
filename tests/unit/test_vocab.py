"""Every declared signal reaches the models: role columns as categorical inputs, a persisted
vocabulary that survives new values, and a schema-coverage check by perturbation."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
import torch

from exfm.config import VMConfig, load_config
from exfm.data.batches import TableTensors
from exfm.data.generator import generator_schema, iter_days
from exfm.data.vocab import UNKNOWN, Categorical, InputSchema, input_schema
from exfm.models import build_fm, build_vm, load_snapshot, predict_table, save_snapshot


def test_ids_are_stable_and_independent_of_arrival_order():
    a, b = Categorical(column="d"), Categorical(column="d")
    a.encode(pa.array(["x", "y"]))
    b.encode(pa.array(["y"]))
    b.encode(pa.array(["x"]))
    assert a.ids == b.ids and UNKNOWN not in a.ids.values()
    first = dict(a.ids)
    a.encode(pa.array(["z", "x"]))  # a new value never moves an old one
    assert {k: a.ids[k] for k in first} == first and len(set(a.ids.values())) == 3


def test_any_dtype_nulls_and_overflow():
    c = Categorical(column="d", capacity=3)  # two slots and the unknown bucket
    ids = c.encode(pa.array([1, 2, None, 3]))
    assert ids[2] == UNKNOWN and sorted(ids[:2]) == [1, 2]
    assert ids[3] == UNKNOWN  # no slot left: overflow bucket
    assert c.encode(pa.array(["1"]), grow=False)[0] == ids[0]  # compared as strings
    dict_col = pa.array(["1", "2"]).dictionary_encode()
    assert list(c.encode(dict_col)) == list(ids[:2])


def test_vm_on_one_domain_skips_domain_but_keeps_stage(gen_days):
    s, _ = gen_days
    vm = input_schema(s, "vm", domain="d0")
    assert "domain" not in vm.sparse_names and "stage" in vm.sparse_names
    assert {"domain", "stage"} <= set(input_schema(s, "vm").sparse_names)
    assert {"domain", "stage"} <= set(input_schema(s, "fm", domain="d0").sparse_names)


@pytest.fixture(scope="module")
def gen_days():
    from exfm.config.method import GeneratorConfig
    g = GeneratorConfig(days=2, rows_per_day=600, n_users=200, n_items=100)
    return generator_schema(g), [t for _, t in iter_days(g)]


def _perturbed(table: pa.Table, col: str, rng) -> pa.Table:
    """``col`` with its values shuffled across rows (a float column: fresh random values, since
    one may be constant on a day, e.g. item age on day 1)."""
    arr = table.column(col).combine_chunks()
    if pa.types.is_floating(arr.type):
        return table.set_column(table.column_names.index(col), col,
                                pa.array(rng.normal(0, 1, len(arr)).astype(np.float32)))
    perm = np.roll(np.arange(len(arr)), 1 + int(rng.integers(0, 7)))
    return table.set_column(table.column_names.index(col), col, arr.take(pa.array(perm)))


def test_generator_no_longer_duplicates_domain_and_stage(gen_days):
    schema, days = gen_days
    assert not {"domain_id", "stage_id"} & set(days[0].column_names)
    assert not {"domain_id", "stage_id"} & set(schema.sparse_names)


@pytest.mark.parametrize("role", ["fm", "vm"])
def test_every_declared_signal_moves_the_output(role, gen_days, tiny_cfg):
    """Schema coverage: shuffling any one input column changes the model's predictions."""
    schema, days = gen_days
    table = days[0]
    torch.manual_seed(0)
    model = (build_fm(schema, None, tiny_cfg) if role == "fm"
             else build_vm(VMConfig(name="v", model="deepfam", task=schema.labels[0]),
                           schema, tiny_cfg))
    with torch.no_grad():  # large random weights so every field visibly moves the output
        for p in model.parameters():
            p.normal_(0, 0.5)
    base = predict_table(model, table)
    cols = schema.sparse_names + schema.dense + [q.name for q in schema.sequences]
    cols += [schema.domain, schema.stage]
    if role == "vm":
        cols = [c for c in cols if c not in schema.fm_only]
    rng = np.random.default_rng(0)
    dead = [c for c in cols
            if np.allclose(predict_table(model, _perturbed(table, c, rng)), base, atol=1e-7)]
    assert not dead, f"{role} ignores {dead}"
    if role == "vm":  # and the fm_only columns do not reach a VM
        for c in schema.fm_only:
            np.testing.assert_allclose(predict_table(model, _perturbed(table, c, rng)), base)


def test_snapshot_round_trips_the_vocabulary_and_warm_start_adds_a_domain(gen_days, tiny_cfg):
    schema, days = gen_days
    fm = build_fm(schema, None, tiny_cfg)
    p0 = predict_table(fm, days[0])
    vocab = dict(fm.schema.categories()["domain"].ids)
    assert set(vocab) == set(days[0].column("domain").to_pylist())
    buf = io.BytesIO()
    save_snapshot(fm, buf)
    buf.seek(0)
    back, _ = load_snapshot(buf)
    assert isinstance(back.schema, InputSchema)
    assert back.schema.categories()["domain"].ids == vocab
    np.testing.assert_allclose(predict_table(back, days[0]), p0, rtol=1e-5, atol=1e-6)
    # day 2 brings a domain never seen: it gets its own slot, the old ones keep theirs
    day2 = days[1]
    dom = day2.column("domain").to_pylist()
    dom[:50] = ["brand-new"] * 50
    day2 = day2.set_column(day2.column_names.index("domain"), "domain", pa.array(dom))
    ids = TableTensors.from_table(day2, back.schema, tasks=[]).sparse[:, back.schema.sparse_names
                                                                      .index("domain")]
    cats = back.schema.categories()["domain"].ids
    assert {k: cats[k] for k in vocab} == vocab and "brand-new" in cats
    assert int(ids[0]) == cats["brand-new"] != UNKNOWN
    buf2 = io.BytesIO()
    save_snapshot(back, buf2)
    buf2.seek(0)
    again, _ = load_snapshot(buf2)
    assert again.schema.categories()["domain"].ids == cats
