"""Trainer: one pass, reporting, warm start, DDP-style wrapping, exact checkpoint round trip."""

import io

import pytest
import torch
from torch import nn

from exfm.config import VMConfig
from exfm.models import build_fm, build_vm, unwrap
from exfm.train import (evaluate, load_checkpoint, save_checkpoint, train_fm_day, train_vm_day)
from exfm.train.optim import effective_batch_size


def test_train_fm_day_reports_and_counts(tiny_schema, tiny_cfg, tiny_table, table_factory):
    make_table = table_factory
    fm = build_fm(tiny_schema, None, tiny_cfg, "dcn")
    seen = []
    res = train_fm_day(fm, tiny_table, tiny_schema, tiny_cfg, report=seen.append)
    assert res.steps == 4 and res.rows_seen == 256
    assert seen and seen[-1]["rows_seen"] == 256 and "train/click/auc" in res.metrics
    res2 = train_fm_day(fm, make_table(128, seed=1), tiny_schema, tiny_cfg, state=res.state)
    assert res2.rows_seen == 384 and res2.state["steps"] == 6
    ev = evaluate(fm, tiny_table, tiny_schema)
    assert {"click/auc", "like/ne", "rows"} <= set(ev)
    assert set(evaluate(fm, tiny_table, tiny_schema, task="like")) >= {"auc", "calibration"}


@pytest.mark.parametrize("mode", ["none", "vanilla", "ah", "ah_sa"])
def test_train_vm_day_every_mode(mode, tiny_schema, tiny_cfg, tiny_table):
    vm_cfg = VMConfig(name="v", model="fam", mode=mode)
    vm = build_vm(vm_cfg, tiny_schema, tiny_cfg)
    res = train_vm_day(vm, tiny_table, tiny_schema, vm_cfg, tiny_cfg)
    assert res.steps == 4 and res.metrics["loss/total"] > 0
    assert ("sa" in res.state) == (mode == "ah_sa")
    assert ("loss/kd" in res.metrics) == (mode != "none")
    assert set(evaluate(vm, tiny_table, tiny_schema)) == {"auc", "logloss", "ne", "calibration",
                                                          "rows"}


def test_sa_trust_weights_the_ah_through_the_trainer(tiny_schema, tiny_cfg, tiny_table):
    """``distillation.sa_trust_ah``: the SA's trust branch is trained and saved with it, and the
    VM it weights ends the day elsewhere than one whose AH pulls every row in full."""
    vm_cfg = VMConfig(name="v", model="fam", mode="ah_sa")
    assert tiny_cfg.distillation.sa_trust_ah  # on by default
    on = tiny_cfg
    off = tiny_cfg.model_copy(update={"distillation": tiny_cfg.distillation.model_copy(
        update={"sa_trust_ah": False})})
    a, b = build_vm(vm_cfg, tiny_schema, off), build_vm(vm_cfg, tiny_schema, on)
    res_a = train_vm_day(a, tiny_table, tiny_schema, vm_cfg, off)
    res_b = train_vm_day(b, tiny_table, tiny_schema, vm_cfg, on)
    assert not any(k.startswith("tr.") for k in res_a.state["sa"])
    tr = {k: v for k, v in res_b.state["sa"].items() if k.startswith("tr.")}
    # the branch's last layer starts at zero (t = 1): it moved, so the trust was trained
    assert tr and tr["tr.net.2.weight"].abs().sum() > 0
    assert any(not torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                     b.state_dict().values()))


def test_vm_needs_fm_predictions(tiny_schema, tiny_cfg, table_factory):
    make_table = table_factory
    vm_cfg = VMConfig(name="v", model="fam", mode="ah")
    vm = build_vm(vm_cfg, tiny_schema, tiny_cfg)
    with pytest.raises(ValueError, match="fm_pred_click"):
        train_vm_day(vm, make_table(64, fm_pred=False), tiny_schema, vm_cfg, tiny_cfg)


def test_a_student_learns_in_one_pass(tiny_schema, tiny_cfg, table_factory):
    make_table = table_factory
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.models.batch_size = 512
    cfg.models.min_steps_per_day = 100
    vm_cfg = VMConfig(name="v", model="fam", mode="none")
    vm = build_vm(vm_cfg, tiny_schema, cfg)
    res = train_vm_day(vm, make_table(6400, seed=3), tiny_schema, vm_cfg, cfg)
    assert res.steps == 100  # batch shrunk from 512 to 64 so the day is 100 steps
    assert evaluate(vm, make_table(2000, seed=4), tiny_schema)["auc"] > 0.68


def test_effective_batch_size(tiny_cfg):
    m = tiny_cfg.models.model_copy(update={"batch_size": 512, "min_steps_per_day": 200,
                                           "min_batch_size": 64})
    assert effective_batch_size(200_000, m) == 512
    assert effective_batch_size(60_000, m) == 300
    assert effective_batch_size(1_000, m) == 64


class _Wrapper(nn.Module):
    """What DDP looks like to the loop: the real model under ``.module``."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def test_wrapped_model_trains_like_the_bare_one(tiny_schema, tiny_cfg, tiny_table):
    vm_cfg = VMConfig(name="v", model="deepfam", mode="ah_sa")
    a, b = build_vm(vm_cfg, tiny_schema, tiny_cfg), build_vm(vm_cfg, tiny_schema, tiny_cfg)
    train_vm_day(a, tiny_table, tiny_schema, vm_cfg, tiny_cfg)
    train_vm_day(_Wrapper(b), tiny_table, tiny_schema, vm_cfg, tiny_cfg)
    assert unwrap(_Wrapper(b)) is b
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("role", ["fm", "vm"])
def test_checkpoint_round_trip_continues_identically(role, tiny_schema, tiny_cfg, table_factory):
    make_table = table_factory
    day1, day2 = make_table(192, seed=1), make_table(192, seed=2)
    vm_cfg = VMConfig(name="v", model="deepfam", mode="ah_sa")

    def build():
        return (build_fm(tiny_schema, None, tiny_cfg, "dcnv2") if role == "fm"
                else build_vm(vm_cfg, tiny_schema, tiny_cfg))

    def train(model, table, state):
        if role == "fm":
            return train_fm_day(model, table, tiny_schema, tiny_cfg, state=state)
        return train_vm_day(model, table, tiny_schema, vm_cfg, tiny_cfg, state=state)

    model = build()
    res1 = train(model, day1, None)
    buf = io.BytesIO()
    save_checkpoint(buf, model, res1.state)
    torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    buf.seek(0)
    restored, state = load_checkpoint(buf)
    assert state["rows_seen"] == 192
    res_a = train(model, day2, res1.state)
    res_b = train(restored, day2, state)
    assert res_a.rows_seen == res_b.rows_seen == 384
    for (n, p), q in zip(model.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(p, q), n
    if role == "vm":
        for k, v in res_a.state["sa"].items():
            assert torch.equal(v, res_b.state["sa"][k])
    # state handed out is a copy: training further does not change it
    snap = {k: v.clone() for k, v in res1.state["optimizers"]["dense"]["state"][0].items()
            if torch.is_tensor(v)}
    train(model, day1, res1.state)
    for k, v in snap.items():
        assert torch.equal(v, res1.state["optimizers"]["dense"]["state"][0][k])


def test_a_dense_signal_is_learnt_in_its_direction_whatever_the_seed(tiny_cfg):
    """The first-order weight of a dense column starts at zero, as the sparse ones do: a random
    start (nn.Linear's U(+-1) for one column) outweighed what a short day could teach it, so a
    model of some seeds ranked rows against the signal (AUC well below 0.5)."""
    import numpy as np
    import pyarrow as pa

    from exfm.data.schema import DatasetSchema, SparseField

    schema = DatasetSchema(name="price-only", timestamp="ts", labels=["bought"],
                           sparse=[SparseField(name="shopper", vocab=500)], dense=["price"])

    def table(n, seed):
        rng = np.random.default_rng(seed)
        price = rng.normal(size=n)
        y = rng.random(n) < 1 / (1 + np.exp(1.0 * price + 1.0))  # dearer: bought less
        return pa.table({"ts": np.arange(n, dtype=np.int64), "shopper": rng.integers(0, 500, n),
                         "price": price, "bought": y.astype(np.int64)})

    aucs = []
    for seed in range(6):
        cfg = tiny_cfg.model_copy(deep=True)
        cfg.models.seed = seed
        vm_cfg = VMConfig(name="v", model="fam", task="bought", mode="none")
        vm = build_vm(vm_cfg, schema, cfg)
        train_vm_day(vm, table(1024, seed), schema, vm_cfg, cfg)  # 16 steps of 64 rows
        aucs.append(evaluate(vm, table(4000, 100 + seed), schema)["auc"])
    assert min(aucs) > 0.55, aucs
