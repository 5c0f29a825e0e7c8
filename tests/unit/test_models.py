"""Model zoo: layer formulas against brute force, every model's forward/backward, sizes."""

import io

import numpy as np
import pytest
import torch

from exfm.config import VMConfig, load_config
from exfm.data.batches import TableTensors
from exfm.models import (FM_KINDS, VM_KINDS, build_fm, build_vm, count_parameters, load_snapshot,
                         predict_table, save_snapshot)
from exfm.models.attention import MultiInterestExtractor, TargetAttention
from exfm.models.blocks import MLP
from exfm.models.embeddings import FieldEncoder, FusedEmbedding
from exfm.models.interactions import (CrossNet, CrossNetV2, DotInteraction, FmFMInteraction,
                                      FMInteraction)
from exfm.models.vertical import two_tower_split


def test_fused_embedding_offsets_and_padding():
    emb = FusedEmbedding([3, 2], 4, sparse_grad=False)
    out = emb(torch.tensor([[2, 1], [-1, 5]]))
    w = emb.table.weight
    assert torch.equal(out[0, 0], w[2]) and torch.equal(out[0, 1], w[3 + 1])
    assert torch.equal(out[1, 0], torch.zeros(4)) and torch.equal(out[1, 1], torch.zeros(4))
    out.sum().backward()
    assert torch.equal(emb.table.weight.grad[5], torch.zeros(4))  # padding row never trained


def test_fm_interaction_is_rendle_pairwise_sum():
    v = torch.randn(3, 5, 4)
    brute = sum((v[:, i] * v[:, j]).sum(-1) for i in range(5) for j in range(i + 1, 5))
    torch.testing.assert_close(FMInteraction()(v).sum(-1), brute)


@pytest.mark.parametrize("dense,pooled", [(True, True), (True, False), (False, True)])
def test_fm_from_parts_equals_the_joined_fields(dense, pooled):
    torch.manual_seed(0)
    sp, x, V, q = torch.randn(5, 3, 4), torch.randn(5, 2), torch.randn(2, 4), torch.randn(5, 1, 4)
    joined = [sp] + ([x.unsqueeze(-1) * V] if dense else []) + ([q] if pooled else [])
    torch.testing.assert_close(
        FMInteraction.from_parts(sp, x if dense else None, V, q if pooled else None),
        FMInteraction()(torch.cat(joined, dim=1)))


def test_fmfm_projects_the_lower_field():
    layer = FmFMInteraction(3, 4)
    with torch.no_grad():
        layer.W.normal_()
    v = torch.randn(2, 3, 4)
    pairs = [(0, 1), (0, 2), (1, 2)]
    brute = sum(((v[:, i] @ layer.W[p]) * v[:, j]).sum(-1) for p, (i, j) in enumerate(pairs))
    torch.testing.assert_close(layer(v).sum(-1), brute)


def test_cross_layers_follow_their_formulas():
    x0 = torch.randn(2, 6)
    c1 = CrossNet(6, 1)
    w, b = c1.w[0], c1.b[0]
    torch.testing.assert_close(c1(x0), x0 * (x0 @ w).unsqueeze(-1) + b + x0)
    c2 = CrossNetV2(6, 1)
    lin = c2.layers[0]
    torch.testing.assert_close(c2(x0), x0 * lin(x0) + x0)
    assert CrossNetV2(6, 2, rank=2, experts=3)(x0).shape == (2, 6)
    v = torch.randn(2, 3, 4)
    torch.testing.assert_close(DotInteraction(3)(v)[:, 1], (v[:, 0] * v[:, 2]).sum(-1))


def test_attention_ignores_padding():
    torch.manual_seed(0)
    din, dmin = TargetAttention(4), MultiInterestExtractor(4, 2, 3)
    t, k = torch.randn(2, 4), torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    k2 = k.clone()
    k2[~mask] = 100.0
    torch.testing.assert_close(din(t, k, mask), din(t, k2, mask))
    torch.testing.assert_close(dmin(t, k, mask), dmin(t, k2, mask))
    empty = torch.zeros(2, 3, dtype=torch.bool)
    assert torch.isfinite(dmin(t, k, empty)).all()


@pytest.mark.parametrize("pool,extra", [("mean", 0), ("target", 3), ("none", 0)])
def test_folded_dense_fields_equal_the_wide_first_layer(pool, extra, tiny_schema, tiny_batch):
    """FieldEncoder.mlp folds each dense field's D inputs into one: same output and same
    gradient for every parameter as the MLP over the joined, flattened fields."""
    from exfm.data.vocab import input_schema

    torch.manual_seed(0)
    enc = FieldEncoder(input_schema(tiny_schema, "fm"), 4, seq_pool=pool, sparse_grad=False)
    with torch.no_grad():
        enc.dense_vectors.normal_()
    mlp = MLP(enc.num_fields * 4 + extra, [8], 2)
    ext = torch.randn(16, extra) if extra else None

    def grads(folded: bool):
        enc.zero_grad(), mlp.zero_grad()
        parts = enc.parts(tiny_batch)
        if folded:
            out = enc.mlp(mlp, parts, extra=ext)
        else:
            x = enc.join(parts).flatten(1)
            out = mlp(x if ext is None else torch.cat([x, ext], 1))
        (out * torch.arange(1.0, 3.0)).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in [*enc.named_parameters(),
                                                            *mlp.named_parameters()]
                              if p.grad is not None}

    (wide, g_wide), (fold, g_fold) = grads(False), grads(True)
    torch.testing.assert_close(fold, wide)
    assert g_fold.keys() == g_wide.keys() and "dense_vectors" in g_fold
    for k in g_wide:
        torch.testing.assert_close(g_fold[k], g_wide[k], msg=k)


@pytest.mark.parametrize("layers", [1, 3])
def test_dcn_folded_dense_fields_equal_the_joined_cross_net(layers, tiny_schema, tiny_cfg,
                                                            tiny_batch):
    """DCN v1's cross net and output layer with the dense fields folded (FoundationModel's
    default) give the same logits and the same gradient for every parameter as the cross net
    over the joined fields, with non-zero biases and dense vectors (two tasks, sequences)."""
    cfg = tiny_cfg.model_copy(update={"models": tiny_cfg.models.model_copy(
        update={"fm_cross_layers": layers, "embedding_optimizer": "adam"})})
    torch.manual_seed(0)
    fm = build_fm(tiny_schema, None, cfg, "dcn")
    with torch.no_grad():
        for p in [*fm.cross.b, fm.encoder.dense_vectors, fm.out.bias]:
            p.normal_()

    def run(folded: bool):
        fm.fold_dense = folded
        fm.zero_grad()
        out = fm(tiny_batch)
        (out * torch.arange(1.0, 1.0 + out.shape[1])).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in fm.named_parameters()
                              if p.grad is not None}

    (wide, g_wide), (fold, g_fold) = run(False), run(True)
    assert fold.shape == (16, 2) and fold.std() > 0
    torch.testing.assert_close(fold, wide, rtol=1e-4, atol=1e-5)
    assert g_fold.keys() == g_wide.keys() and "encoder.dense_vectors" in g_fold
    for k in g_wide:
        torch.testing.assert_close(g_fold[k], g_wide[k], rtol=1e-4, atol=1e-5, msg=k)


def test_dcn_cross_net_computes_in_fp32_under_cpu_autocast(tiny_schema, tiny_cfg, tiny_batch):
    """Under CPU bf16 autocast (models.cpu_amp) DCN v1's cross layers and output layer, folded or
    joined, compute in fp32: only the DNN is in bf16. The reference is the joined cross net in
    fp32 over the same DNN output; bf16 matrix-vector products were off by up to 6e-3."""
    cfg = tiny_cfg.model_copy(update={"models": tiny_cfg.models.model_copy(
        update={"fm_cross_layers": 3})})
    torch.manual_seed(0)
    fm = build_fm(tiny_schema, None, cfg, "dcn")
    with torch.no_grad():
        for p in [*fm.cross.b, fm.encoder.dense_vectors, fm.out.bias]:
            p.normal_()
        parts = fm.encoder.parts(tiny_batch)
        x0 = fm.encoder.join(parts).flatten(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            deep = fm.encoder.mlp(fm.deep, parts)
            cross = fm.cross(x0)
        assert deep.dtype == torch.bfloat16 and cross.dtype == torch.float32
        torch.testing.assert_close(cross, fm.cross(x0), rtol=0, atol=0)
        want = fm.out(torch.cat([fm.cross(x0), deep.float()], dim=1))
        for folded in (True, False):
            fm.fold_dense = folded
            with torch.autocast("cpu", dtype=torch.bfloat16):
                got = fm(tiny_batch)
            if folded:
                assert got.dtype == torch.float32
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
            else:  # the joined form's output layer is an nn.Linear: bf16 under autocast
                torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("kind", FM_KINDS)
def test_every_fm_forward_backward(kind, tiny_schema, tiny_cfg, tiny_batch):
    fm = build_fm(tiny_schema, None, tiny_cfg, kind)
    logits = fm(tiny_batch)
    assert logits.shape == (16, 2)
    logits.sum().backward()
    assert all(p.grad is not None for p in fm.parameters())
    assert "xsvc_id" in fm.schema.sparse_names  # the FM reads fm_only fields


def test_low_rank_dcnv2(tiny_schema, tiny_cfg, tiny_batch):
    cfg = tiny_cfg.model_copy(deep=True)
    cfg.models.fm_cross_rank = 2
    assert build_fm(tiny_schema, ["click"], cfg, "dcnv2")(tiny_batch).shape == (16, 1)


@pytest.mark.parametrize("kind", VM_KINDS)
def test_every_vm_forward_backward(kind, tiny_schema, tiny_cfg, tiny_table):
    vm = build_vm(VMConfig(name="v", model=kind, task="like"), tiny_schema, tiny_cfg)
    assert "xsvc_id" not in vm.schema.sparse_names and "xsvc_ctr" not in vm.schema.dense
    batch = next(TableTensors.from_table(tiny_table, vm.schema, ["like"]).batches(16))
    assert vm(batch).shape == (16, 1)
    z_s, z_d, z_d2 = vm(batch, gs=2.0)
    torch.testing.assert_close(z_s, vm(batch).squeeze(-1))
    (z_s.sum() + z_d.sum() + z_d2.sum()).backward()
    assert all(p.grad is not None for p in vm.parameters())


def test_vm_without_dense_or_sequences(tiny_schema, tiny_cfg, tiny_table):
    schema = tiny_schema.model_copy(update={"dense": [], "sequences": [], "fm_only": []})
    for kind in VM_KINDS:
        vm = build_vm(VMConfig(name="v", model=kind), schema, tiny_cfg)
        assert vm(next(TableTensors.from_table(tiny_table, vm.schema).batches(4))).shape == (4, 1)


def test_fam_starts_as_textbook_fm(tiny_schema, tiny_cfg, tiny_table):
    # with linear heads (models.head_hidden=[]); the default heads are MLPs
    cfg = tiny_cfg.model_copy(update={"models": tiny_cfg.models.model_copy(
        update={"head_hidden": []})})
    vm = build_vm(VMConfig(name="v", model="fam"), tiny_schema, cfg)
    batch = next(TableTensors.from_table(tiny_table, vm.schema).batches(8))
    h = vm.backbone(batch)
    torch.testing.assert_close(vm(batch).squeeze(-1), h.sum(-1))


def test_two_tower_split(tiny_schema):
    user, item = two_tower_split(tiny_schema.fields_for("vm"))
    # fields: user_id, item_id, item_cat, price, hist_item
    assert item == [1, 2] and user == [0, 3, 4]


def test_fm_is_15x_a_vm_by_default():
    from exfm.config import GeneratorConfig
    from exfm.data.generator import generator_schema

    cfg = load_config(None, env={})
    schema = generator_schema(GeneratorConfig())
    biggest_vm = max(count_parameters(build_vm(VMConfig(name="v", model=k), schema, cfg))
                     for k in VM_KINDS)
    smallest_fm = min(count_parameters(build_fm(schema, None, cfg, k)) for k in FM_KINDS)
    assert smallest_fm >= 15 * biggest_vm


@pytest.mark.parametrize("role", ["fm", "vm"])
def test_snapshot_round_trip(role, tiny_schema, tiny_cfg, tiny_table):
    model = (build_fm(tiny_schema, None, tiny_cfg) if role == "fm"
             else build_vm(VMConfig(name="v", model="deepfam"), tiny_schema, tiny_cfg))
    buf = io.BytesIO()
    save_snapshot(model, buf, {"day": "2026-01-05", "rows_seen": 10})
    torch.load(io.BytesIO(buf.getvalue()), weights_only=True)  # tensors and primitives only
    buf.seek(0)
    loaded, extra = load_snapshot(buf)
    assert extra == {"day": "2026-01-05", "rows_seen": 10}
    p = predict_table(model, tiny_table, tiny_schema, batch_size=100)
    assert p.shape == (256, 2 if role == "fm" else 1) and ((p >= 0) & (p <= 1)).all()
    np.testing.assert_array_equal(p, predict_table(loaded, tiny_table, tiny_schema, batch_size=100))


def test_predict_table_without_labels(tiny_schema, tiny_cfg, tiny_table):
    fm = build_fm(tiny_schema, None, tiny_cfg)
    p = predict_table(fm, tiny_table.drop(["click", "like"]), tiny_schema)
    assert p.shape == (256, 2)


def test_predict_table_records_no_autograd_graph(tiny_schema, tiny_cfg, tiny_table):
    # a graph per batch would be kept alive by the outputs until the end (DAS, reproduce: GBs)
    fm = build_fm(tiny_schema, None, tiny_cfg)
    seen = []
    fm.register_forward_hook(lambda m, i, out: seen.append(out.requires_grad))
    predict_table(fm, tiny_table, tiny_schema, batch_size=64)
    assert seen == [False] * 4 and fm.training


def test_init_output_bias(tiny_schema, tiny_cfg):
    for kind in FM_KINDS:
        fm = build_fm(tiny_schema, None, tiny_cfg, kind)
        fm.init_output_bias(torch.tensor([0.1, 0.02]))
        heads = [t.net[-1].bias for t in fm.towers] if kind == "mtl" else [fm.out.bias]
        got = torch.cat([b.reshape(-1) for b in heads])
        torch.testing.assert_close(got, torch.logit(torch.tensor([0.1, 0.02])))
    vm = build_vm(VMConfig(name="v", model="fam"), tiny_schema, tiny_cfg)
    vm.init_output_bias(torch.tensor([0.05]))
    for head in (vm.serving_head, vm.aux_head, vm.sa_head):
        assert float(head.net[-1].bias) == pytest.approx(float(torch.logit(torch.tensor(0.05))))


def test_fused_embedding_dense_gradient_equals_nn_embeddings():
    """A dense-gradient table builds its gradient with one index_add_ on CPU: the same values as
    nn.Embedding's backward, the padding row (ids -1 and out of vocab) untouched."""
    torch.manual_seed(0)
    emb = FusedEmbedding([50, 30], 4, sparse_grad=False)
    ids = torch.randint(-1, 60, (256, 2))  # -1 and ids past a field's vocab: the padding row
    out = emb(ids)
    g = torch.randn_like(out)
    out.backward(g)
    ours = emb.table.weight.grad.clone()
    emb.table.weight.grad = None
    ref = torch.nn.functional.embedding(emb.rows(ids), emb.table.weight,
                                        padding_idx=emb.table.padding_idx)
    ref.backward(g)
    assert torch.equal(out, ref)
    assert torch.allclose(ours, emb.table.weight.grad, atol=1e-6)
    assert ours[emb.total].abs().sum() == 0 and (emb.rows(ids) == emb.total).any()
    assert ours.abs().sum() > 0
    with torch.no_grad():  # inference: the plain lookup, no graph
        assert torch.equal(emb(ids), out.detach()) and not emb(ids).requires_grad
