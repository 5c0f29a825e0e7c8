"""The Student Adapter's staleness signals: freshness gap, domain / stage, declared item age."""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch

from exfm.config import VMConfig
from exfm.data.batches import FM_AGE_COLUMN, TableTensors
from exfm.distill import StudentAdapter, sa_context, sa_shape, student_adapter_step
from exfm.models import build_vm
from exfm.reproduce.protocol import fm_age_days, with_fm_pred


def _multi_domain(table: pa.Table) -> pa.Table:
    dom = pa.array(["d0" if i % 3 else "d1" for i in range(table.num_rows)])
    return table.set_column(table.column_names.index("domain"), "domain", dom)


def test_fm_age_of_the_fresh_and_the_frozen_fm():
    assert fm_age_days("dcnv2", 6) == 1
    assert fm_age_days("dcnv2@d2", 4) == 3  # trained days 1-2 (index 0, 1); VM day index 4
    assert fm_age_days("dcnv2@d3", 6) == 4


def test_context_holds_gap_declared_columns_and_domain(tiny_schema, tiny_cfg, table_factory):
    t = _multi_domain(table_factory(64))
    t = with_fm_pred(t, ["click", "like"], torch.rand(64, 2).numpy(), age=3)
    vm = build_vm(VMConfig(name="v", model="fam", task="click"), tiny_schema, tiny_cfg)
    batch = next(TableTensors.from_table(t, vm.schema, ["click"]).batches(64))
    assert torch.all(batch["fm_age"] == 3)
    dense, ids = sa_context(vm, batch, ["price", "not_a_column"], gap=True)
    assert dense.shape == (64, 2) and ids.shape == (64, 1)
    assert torch.allclose(dense[:, 0], torch.log1p(torch.tensor(3.0)).expand(64))
    assert len(set(ids[:, 0].tolist())) == 2  # d0 and d1 are different ids
    assert sa_shape(vm, ["price", "not_a_column"], gap=True) == {"n_dense": 2,
                                                                 "categories": [64]}
    # distillation.sa_freshness_gap off: no gap column, the declared one only
    dense0, _ = sa_context(vm, batch, ["price"], gap=False)
    assert dense0.shape == (64, 1) and torch.equal(dense0, dense[:, 1:])
    assert sa_shape(vm, ["price"], gap=False) == {"n_dense": 1, "categories": [64]}
    assert sa_context(vm, batch, [], gap=False)[0].shape == (64, 0)
    # without the age column the gap is 1 (a daily FM)
    plain = TableTensors.from_table(t.drop([FM_AGE_COLUMN]), vm.schema, ["click"])
    assert plain.fm_age is None
    d2, _ = sa_context(vm, next(plain.batches(8)), [], gap=True)
    assert torch.allclose(d2[:, 0], torch.log1p(torch.tensor(1.0)).expand(8))


def test_sa_starts_as_the_fm_and_learns_a_per_domain_correction():
    torch.manual_seed(0)
    sa = StudentAdapter(8, n_dense=1, categories=[4])
    p = torch.full((256,), 0.3)
    dom = torch.randint(1, 3, (256, 1))
    ctx = (torch.zeros(256, 1), dom)
    torch.testing.assert_close(torch.sigmoid(sa(p, ctx)), p)  # step 0: p_SA = p_FM
    y = (dom[:, 0] == 1).float()  # a stale FM: domain 1 converts, domain 2 does not
    opt = torch.optim.Adam(sa.parameters(), lr=3e-2)
    for _ in range(200):
        _, p_sa = student_adapter_step(sa, opt, p, y, ctx)
    assert p_sa[dom[:, 0] == 1].mean() > 0.8 and p_sa[dom[:, 0] == 2].mean() < 0.2
    without = StudentAdapter(8)  # the paper's SA: one input, cannot tell the domains apart
    opt2 = torch.optim.Adam(without.parameters(), lr=3e-2)
    for _ in range(200):
        _, q = student_adapter_step(without, opt2, p, y)
    assert q.std() < 1e-4


def test_an_sa_saved_without_context_still_loads():
    old = StudentAdapter(8)
    new = StudentAdapter(8, n_dense=2, categories=[64])
    new.load_state_dict(old.state_dict())
    p = torch.tensor([0.2, 0.6])
    ctx = (torch.randn(2, 2), torch.tensor([[1], [2]]))
    torch.testing.assert_close(new(p, ctx), old(p))
    with pytest.raises(RuntimeError):
        StudentAdapter(4).load_state_dict(old.state_dict())  # a real mismatch still fails


def test_an_sa_saved_with_other_context_inputs_loads_with_that_branch_fresh():
    # a VM's SA saved with the freshness gap (2 dense context inputs), loaded with it off (1):
    # the FM-logit part carries over, the context branch starts at a zero correction
    torch.manual_seed(0)
    old = StudentAdapter(8, n_dense=2, categories=[64])
    with torch.no_grad():
        for q in old.parameters():
            q.add_(0.5)
    new = StudentAdapter(8, n_dense=1, categories=[64])
    new.load_state_dict(old.state_dict())
    torch.testing.assert_close(new.g.net[0].weight, old.g.net[0].weight)
    p, ids = torch.tensor([0.2, 0.6]), torch.tensor([[1], [2]])
    torch.testing.assert_close(new(p, (torch.randn(2, 1), ids)), new(p))  # zero correction
    bare = StudentAdapter(8)  # no context inputs at all: the saved branch is dropped
    bare.load_state_dict(old.state_dict())
    torch.testing.assert_close(bare(p), old(p, None))


def test_das_writes_the_freshness_gap_per_row():
    # the DAG path (DAS) gives the SA the same signal as the offline path (with_fm_pred's age):
    # per row, the day minus the training day of the FM version that inferred it
    from exfm.das.augment import AugmentError, with_fm_age

    t = pa.table({"x": [1, 2, 3, 4], "fm_version": ["3", "3", "4", "5"]})
    out = with_fm_age(t, "2026-01-06", {"3": "2026-01-02", "4": "2026-01-05", "5": None})
    assert out.column(FM_AGE_COLUMN).to_pylist() == [4.0, 4.0, 1.0, None]
    assert out.schema.field(FM_AGE_COLUMN).type == pa.float32()
    again = with_fm_age(out, "2026-01-07", {"3": "2026-01-02", "4": "2026-01-05", "5": None})
    assert again.column_names.count(FM_AGE_COLUMN) == 1  # a re-run replaces, never duplicates
    assert again.column(FM_AGE_COLUMN).to_pylist()[0] == 5.0
    with pytest.raises(AugmentError, match="version"):
        with_fm_age(t, "2026-01-06", {"3": "2026-01-02"})  # an unknown version is not a guess


def test_das_age_reaches_the_sa_context(tiny_schema, tiny_cfg, table_factory):
    # what the DAS commits is what the VM's trainer reads: a null age reads as a daily FM (1)
    from exfm.das.augment import with_fm_age

    t = with_fm_pred(table_factory(8), ["click", "like"], torch.rand(8, 2).numpy())
    t = t.append_column("fm_version", pa.array(["7"] * 4 + ["8"] * 4))
    t = with_fm_age(t, "2026-01-05", {"7": "2026-01-02", "8": None})
    vm = build_vm(VMConfig(name="v", model="fam", task="click"), tiny_schema, tiny_cfg)
    batch = next(TableTensors.from_table(t, vm.schema, ["click"]).batches(8))
    assert batch["fm_age"].tolist() == [3.0] * 4 + [1.0] * 4
    dense, _ = sa_context(vm, batch, [], gap=True)
    assert torch.allclose(dense[:4, 0], torch.log1p(torch.tensor(3.0)).expand(4))


def test_trust_shrinks_where_the_fm_knows_nothing_and_weights_the_ah_rows():
    """``distillation.sa_trust_ah``: in domain 1 the FM's logit predicts the label, in domain 2
    it is noise (a stale FM on new items, say). Trained on the labels, the SA trusts domain 2's
    FM less than domain 1's, starts at full trust, and the AH's distillation term of a row
    weighted 0 gives its distillation head no gradient."""
    from exfm.distill import distillation_loss

    torch.manual_seed(0)
    sa = StudentAdapter(8, n_dense=1, categories=[4], trust=True)
    n = 512
    dom = torch.randint(1, 3, (n, 1))
    ctx = (torch.zeros(n, 1), dom)
    assert torch.equal(sa.trust(ctx), torch.ones(n))  # starts as the FM, fully trusted
    # an SA saved before the trust branch loads with it at the start: the same predictions
    old = StudentAdapter(8, n_dense=1, categories=[4])
    with torch.no_grad():
        old.ctx.net[-1].bias.fill_(0.5)
    sa.load_state_dict(old.state_dict())
    p0 = torch.full((n,), 0.3)
    torch.testing.assert_close(sa(p0, ctx), old(p0, ctx))
    assert torch.equal(sa.trust(ctx), torch.ones(n))
    assert StudentAdapter(8, n_dense=1, categories=[4]).trust(ctx) is None  # off: no weights
    opt = torch.optim.Adam(sa.parameters(), lr=3e-2)
    for _ in range(300):
        z = torch.randn(n) * 2
        y = (torch.rand(n) < torch.sigmoid(z)).float()
        p = torch.where(dom[:, 0] == 1, torch.sigmoid(z), torch.sigmoid(torch.randn(n) * 2))
        student_adapter_step(sa, opt, p, y, ctx)
    t = sa.trust(ctx)
    t1, t2 = t[dom[:, 0] == 1].mean().item(), t[dom[:, 0] == 2].mean().item()
    assert t1 > 0.9 and t2 < 0.5, (t1, t2)

    z_d = torch.zeros(4, requires_grad=True)
    y4, p4 = torch.tensor([0.0, 1.0, 0.0, 1.0]), torch.tensor([0.9, 0.1, 0.9, 0.1])
    loss, _ = distillation_loss("ah", (torch.zeros(4), z_d, torch.zeros(4)), y4, p4,
                                kd_weight=torch.tensor([1.0, 1.0, 0.0, 0.0]))
    loss.backward()
    assert torch.all(z_d.grad[:2] != 0) and torch.all(z_d.grad[2:] == 0)
