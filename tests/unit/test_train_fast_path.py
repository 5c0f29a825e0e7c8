"""Trainer fast paths: dense fused Adam on small tables, serving-only VM steps, the GPU path's
autocast / pinned-copy selection (checked on CPU)."""

import copy
import io

import numpy as np
import pytest
import torch
from torch import nn

from exfm.config import VMConfig
from exfm.data.batches import TableTensors
from exfm.models import build_vm, load_snapshot, predict_table, save_snapshot
from exfm.train import train_vm_day
from exfm.train.optim import load_optimizer_states, make_optimizers, optimizer_states
from exfm.train.trainer import autocast, to_device

from test_train import _Wrapper  # DDP-like: the trainer keeps every head


def _with(cfg, **models):
    return cfg.model_copy(update={"models": cfg.models.model_copy(update=models)})


def _tables(model):
    return [m for m in model.modules() if isinstance(m, nn.Embedding)]


def test_small_tables_train_dense_with_fused_adam(tiny_schema, tiny_cfg):
    vm = build_vm(VMConfig(name="v", model="deepfam"), tiny_schema, tiny_cfg)
    assert all(t.sparse for t in _tables(vm))  # built for sparse_adam
    opts = make_optimizers(vm, tiny_cfg.models)  # default threshold: these tables are tiny
    assert set(opts) == {"dense", "embedding_dense"}
    assert not any(t.sparse for t in _tables(vm))
    assert opts["dense"].defaults["fused"] and opts["embedding_dense"].defaults["fused"]
    assert opts["embedding_dense"].defaults["lr"] == tiny_cfg.models.embedding_lr


def test_threshold_zero_keeps_every_table_sparse(tiny_schema, tiny_cfg):
    cfg = _with(tiny_cfg, sparse_min_elements=0)
    vm = build_vm(VMConfig(name="v", model="deepfam"), tiny_schema, cfg)
    opts = make_optimizers(vm, cfg.models)
    assert set(opts) == {"dense", "embedding", "embedding_dense"}
    assert isinstance(opts["embedding"], torch.optim.SparseAdam)
    assert len(opts["embedding"].param_groups[0]["params"]) == len(_tables(vm))
    # the dense columns' first-order weights learn beside the tables, at embedding_lr
    assert opts["embedding_dense"].param_groups[0]["params"] == [vm.backbone.linear.dense.weight]


def test_threshold_splits_by_table_size(tiny_schema, tiny_cfg):
    vm = build_vm(VMConfig(name="v", model="deepfam"), tiny_schema, tiny_cfg)
    sizes = sorted(t.weight.numel() for t in _tables(vm))
    assert len(sizes) == 2 and sizes[0] < sizes[1]  # first-order (width 1) < field vectors
    opts = make_optimizers(vm, _with(tiny_cfg, sparse_min_elements=sizes[1]).models)
    assert [p.numel() for p in opts["embedding"].param_groups[0]["params"]] == [sizes[1]]
    assert [p.numel() for p in opts["embedding_dense"].param_groups[0]["params"]] == [
        sizes[0], len(tiny_schema.fields_for("vm").dense)]  # + the dense first-order weights


def test_warm_start_from_all_sparse_state_starts_the_changed_group_fresh(
        tiny_schema, tiny_cfg, tiny_table):
    cfg0 = _with(tiny_cfg, sparse_min_elements=0)
    vm_cfg = VMConfig(name="v", model="deepfam", mode="none")
    vm = build_vm(vm_cfg, tiny_schema, cfg0)
    res = train_vm_day(vm, tiny_table, tiny_schema, vm_cfg, cfg0)
    assert "embedding" in res.state["optimizers"]
    # the default config now trains these tables dense: the dense group reloads, the rest is new
    res2 = train_vm_day(vm, tiny_table, tiny_schema, vm_cfg, tiny_cfg, state=res.state)
    assert set(res2.state["optimizers"]) == {"dense", "embedding_dense"}
    assert res2.state["steps"] == 2 * res.steps


def test_load_optimizer_states_round_trip(tiny_schema, tiny_cfg):
    vm = build_vm(VMConfig(name="v", model="fam"), tiny_schema, tiny_cfg)
    opts = make_optimizers(vm, tiny_cfg.models)
    for p in vm.parameters():
        p.grad = torch.ones_like(p)
    for o in opts.values():
        o.step()
    saved = optimizer_states(opts)
    fresh = make_optimizers(vm, tiny_cfg.models)
    load_optimizer_states(fresh, saved)
    assert optimizer_states(fresh)["dense"]["state"][0]["step"] == 1


@pytest.mark.parametrize("mode", ["none", "vanilla"])
def test_serving_only_modes_skip_the_distillation_heads(mode, tiny_schema, tiny_cfg, tiny_table):
    vm_cfg = VMConfig(name="v", model="deepfam", mode=mode)
    vm = build_vm(vm_cfg, tiny_schema, tiny_cfg)
    table = tiny_table  # holds fm_pred_click
    wrapped = copy.deepcopy(vm)
    aux0 = vm.aux_head.net[-1].weight.detach().clone()
    res = train_vm_day(vm, table, tiny_schema, vm_cfg, tiny_cfg)
    assert vm.aux_head.net[-1].weight.grad is None and vm.sa_head.net[-1].weight.grad is None
    assert torch.equal(vm.aux_head.net[-1].weight, aux0)
    # the wrapped (DDP-like) path computes every head; the served model comes out the same
    res_w = train_vm_day(_Wrapper(wrapped), table, tiny_schema, vm_cfg, tiny_cfg)
    assert wrapped.aux_head.net[-1].weight.grad is not None
    assert res.steps == res_w.steps
    for (name, a), b in zip(vm.backbone.state_dict().items(), wrapped.backbone.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    for a, b in zip(vm.serving_head.parameters(), wrapped.serving_head.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_ah_modes_still_train_the_heads(tiny_schema, tiny_cfg, tiny_table):
    vm_cfg = VMConfig(name="v", model="deepfam", mode="ah")
    vm = build_vm(vm_cfg, tiny_schema, tiny_cfg)
    table = tiny_table
    aux0 = vm.aux_head.net[-1].weight.detach().clone()
    train_vm_day(vm, table, tiny_schema, vm_cfg, tiny_cfg)
    assert not torch.equal(vm.aux_head.net[-1].weight, aux0)


def test_autocast_is_bf16_on_cuda_only():
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else _nothing():
        ctx = autocast(torch.device("cuda"), True)
    assert isinstance(ctx, torch.autocast)
    assert ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16
    assert not isinstance(autocast(torch.device("cuda"), False), torch.autocast)
    assert not isinstance(autocast(torch.device("cpu"), True), torch.autocast)


def test_cpu_autocast_only_where_the_cpu_has_bf16(monkeypatch):
    import exfm.train.trainer as trainer

    monkeypatch.setattr(trainer, "cpu_bf16_native", lambda: True)
    ctx = autocast(torch.device("cpu"), False, cpu=True)
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
    assert not isinstance(autocast(torch.device("cpu"), True, cpu=False), torch.autocast)
    monkeypatch.setattr(trainer, "cpu_bf16_native", lambda: False)
    assert not isinstance(autocast(torch.device("cpu"), True, cpu=True), torch.autocast)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_to_device_pins_only_for_cuda(monkeypatch, tiny_schema, tiny_table):
    tt = TableTensors.from_table(tiny_table, tiny_schema, ["click"])

    def no_pin(self, *a, **k):
        raise AssertionError("pin_memory called for a CPU device")

    monkeypatch.setattr(torch.Tensor, "pin_memory", no_pin)
    out = to_device(tt, torch.device("cpu"))
    assert torch.equal(out.sparse, tt.sparse) and torch.equal(out.labels, tt.labels)
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pinned.append(1) or self)
    calls = []
    monkeypatch.setattr(torch.Tensor, "to",
                        lambda self, *a, **k: calls.append(k.get("non_blocking")) or self)
    to_device(tt, torch.device("cuda"))
    n = 3 + len(tt.seq) + (tt.fm_pred is not None)  # sparse, dense, labels, sequences, fm_pred
    assert len(pinned) == n and calls == [True] * n


def test_train_stream_matches_one_call_on_the_whole_day(tiny_schema, tiny_cfg, tiny_table,
                                                        tmp_path):
    import pyarrow.parquet as pq

    from exfm.compute.ingest import iter_tables
    from exfm.models import build_fm
    from exfm.train.trainer import train_fm_day, train_stream

    torch.manual_seed(0)
    whole = build_fm(tiny_schema, None, tiny_cfg, "dcn")
    streamed = copy.deepcopy(whole)
    res = train_fm_day(whole, tiny_table, tiny_schema, tiny_cfg)
    path = tmp_path / "day.parquet"
    pq.write_table(tiny_table, path, row_group_size=100)
    chunks = list(iter_tables(path, 128))  # a multiple of the batch (64): the same batches
    assert [c.num_rows for c in chunks] == [128, 128]
    res_s = train_stream(train_fm_day, streamed, iter(chunks), tiny_schema, tiny_cfg)
    assert (res_s.steps, res_s.rows_seen, res_s.metrics["rows"]) == (res.steps, 256, 256)
    for (name, a), b in zip(whole.state_dict().items(), streamed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


@pytest.mark.parametrize("row_group,chunk", [(100, 128), (7, 50), (256, 64), (30, 1000)])
def test_iter_tables_cuts_exact_chunks_across_row_groups(tmp_path, tiny_table, row_group, chunk):
    import pyarrow.parquet as pq

    from exfm.compute.ingest import iter_tables

    pq.write_table(tiny_table, tmp_path / "d.parquet", row_group_size=row_group)
    chunks = list(iter_tables(tmp_path / "d.parquet", chunk, columns=["ts", "click"]))
    sizes = [c.num_rows for c in chunks]
    assert sizes == [chunk] * (256 // chunk) + ([256 % chunk] if 256 % chunk else [])
    assert chunks[0].column_names == ["ts", "click"]
    got = [v for c in chunks for v in c.column("ts").to_pylist()]
    assert got == tiny_table.column("ts").to_pylist()


def test_iter_tables_rejects_a_bad_chunk_size(tmp_path, tiny_table):
    import pyarrow.parquet as pq

    from exfm.compute.ingest import iter_tables

    pq.write_table(tiny_table, tmp_path / "d.parquet")
    with pytest.raises(ValueError, match="chunk_rows"):
        next(iter_tables(tmp_path / "d.parquet", 0))


def _predictor(cfg, fm, version: str = "1"):
    """A DAS ``FMPredictor`` serving ``fm`` as ``version``: its ``__call__`` path, without a
    registry or lease store, counting rows through the FM's forward."""
    import threading

    from exfm.das.augment import FMPredictor

    pred = object.__new__(FMPredictor)
    pred.cfg, pred.device, pred.batch_delay_s = cfg, "cpu", 0.0
    pred._stop = threading.Event()

    class _Loader:
        def current(self):
            return version, fm

    pred.loader = _Loader()
    fm.register_forward_hook(pred._count)
    return pred


def _without_fm_pred(table):
    return table.drop_columns([c for c in table.column_names if c.startswith("fm_pred_")])


def test_das_predictor_counts_rows_through_the_fm_forward(tiny_schema, tiny_cfg, tiny_table):
    import pyarrow as pa

    from exfm.das.augment import FORWARD_ROWS_COL, FORWARD_ROWS_META, fm_forward_rows
    from exfm.models import build_fm

    fm = build_fm(tiny_schema, None, tiny_cfg, "dcn")
    pred = _predictor(tiny_cfg, fm, "3")
    batch = _without_fm_pred(tiny_table)
    out1 = pred(batch.slice(0, 100))
    out2 = pred(batch.slice(100, 156))
    assert pred.forward_rows == 256
    for out, n in ((out1, 100), (out2, 156)):
        assert out.num_rows == n and int(pa.compute.sum(out.column(FORWARD_ROWS_COL)).as_py()) == n
        assert out.column("fm_pred_click").null_count == 0
    empty = pred(batch.slice(0, 0))
    assert empty.num_rows == 0 and pred.forward_rows == 256
    meta = pa.table({"a": [1]}).replace_schema_metadata({FORWARD_ROWS_META: "7"})
    assert fm_forward_rows(meta) == 7 and fm_forward_rows(pa.table({"a": [1]})) is None


@pytest.mark.parametrize("mode", ["none", "ah_sa"])
@pytest.mark.parametrize("on", [False, True])
def test_vm_cpu_amp_runs_the_vm_forward_in_bf16_only_when_set(monkeypatch, tiny_schema, tiny_cfg,
                                                               tiny_table, mode, on):
    import exfm.train.trainer as trainer

    # CPU autocast also runs (slowly) where bf16 is not native: the test holds on any CPU
    monkeypatch.setattr(trainer, "cpu_bf16_native", lambda: True)
    cfg = _with(tiny_cfg, vm_cpu_amp=on)
    vm_cfg = VMConfig(name="v", model="deepfam", mode=mode)
    vm = build_vm(vm_cfg, tiny_schema, cfg)
    seen: list[torch.dtype] = []
    vm.serving_head.net[0].register_forward_hook(lambda mod, i, out: seen.append(out.dtype))
    w0 = vm.serving_head.net[0].weight.detach().clone()
    res = train_vm_day(vm, tiny_table, tiny_schema, vm_cfg, cfg)  # it has fm_pred_click
    assert seen and set(seen) == {torch.bfloat16 if on else torch.float32}
    assert vm.serving_head.net[0].weight.dtype == torch.float32  # weights stay fp32
    assert not torch.equal(vm.serving_head.net[0].weight, w0)  # and they learn
    assert torch.isfinite(torch.tensor(res.metrics["loss/total"]))


def test_mlp_computes_only_its_big_layers_in_bf16_in_training_and_inference(monkeypatch):
    import exfm.models.blocks as blocks
    from exfm.models.blocks import MLP, cpu_bf16_layers

    # CPU autocast also runs (slowly) where bf16 is not native: the test holds on any CPU
    monkeypatch.setattr(blocks, "cpu_bf16_native", lambda: True)
    torch.manual_seed(0)
    m = MLP(32, [64, 4], 1)  # per step at batch 16: 32*64*16 = 32768, 64*4*16 = 4096, 4*1*16 = 64
    assert cpu_bf16_layers(nn.Sequential(m), 10_000) == 1
    seen: dict[int, torch.dtype] = {}
    for k in (0, 2, 4):
        m.net[k].register_forward_hook(lambda mod, i, out, k=k: seen.__setitem__(k, out.dtype))
    x = torch.randn(16, 32)
    y = m(x)
    assert seen == {0: torch.bfloat16, 2: torch.float32, 4: torch.float32}
    assert y.dtype == torch.float32
    y.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in m.parameters())
    assert m.net[0].weight.dtype == torch.float32  # weights stay fp32
    m.eval()
    seen.clear()
    with torch.inference_mode():  # inference: the same layers by the same rule (rows x in x out)
        z = m(x)
        assert seen == {0: torch.bfloat16, 2: torch.float32, 4: torch.float32}
        assert z.dtype == torch.float32 and torch.allclose(z, m.net(x), atol=0.05)
        seen.clear()
        m(x[:4])  # 4 rows: 4 * 32 * 64 = 8192 multiply-adds, below the rule: all fp32
        assert set(seen.values()) == {torch.float32}
        monkeypatch.setattr(blocks, "cpu_bf16_native", lambda: False)
        seen.clear()
        assert torch.equal(m(x), m.net(x)) and set(seen.values()) == {torch.float32}
        monkeypatch.setattr(blocks, "cpu_bf16_native", lambda: True)
    m.train()
    # a caller that computed layer 0 in bf16 itself (FieldEncoder.mlp) hands the rest a bf16
    # input; with no later layer big enough it still gets fp32 layers and an fp32 output
    h = torch.relu(m.net[0](x)).to(torch.bfloat16)
    seen.clear()
    assert m.run(h, start=1).dtype == torch.float32 and set(seen.values()) == {torch.float32}
    cpu_bf16_layers(m, 0)  # off: every layer fp32, the same numbers as a plain MLP
    seen.clear()
    y0 = m(x)
    assert set(seen.values()) == {torch.float32} and torch.equal(y0, m.net(x))


@pytest.mark.parametrize("min_work", [0, 1])
def test_vm_training_puts_layers_above_vm_bf16_min_work_in_bf16(monkeypatch, tiny_schema, tiny_cfg,
                                                                 tiny_table, min_work):
    import exfm.models.blocks as blocks

    monkeypatch.setattr(blocks, "cpu_bf16_native", lambda: True)
    cfg = _with(tiny_cfg, vm_bf16_min_work=min_work)
    vm_cfg = VMConfig(name="v", model="deepfam", mode="ah_sa")
    vm = build_vm(vm_cfg, tiny_schema, cfg)
    seen: list[torch.dtype] = []
    vm.serving_head.net[0].register_forward_hook(lambda mod, i, out: seen.append(out.dtype))
    # the DNN's first layer is folded with the dense fields (FieldEncoder.mlp): its input
    # reaches the second layer, which then sees bf16 too
    deep: list[torch.dtype] = []
    vm.backbone.deep.net[2].register_forward_pre_hook(lambda mod, i: deep.append(i[0].dtype))
    w0 = vm.serving_head.net[0].weight.detach().clone()
    res = train_vm_day(vm, tiny_table, tiny_schema, vm_cfg, cfg)
    assert seen and set(seen) == {torch.bfloat16 if min_work else torch.float32}
    assert deep and set(deep) == {torch.bfloat16 if min_work else torch.float32}
    assert not torch.equal(vm.serving_head.net[0].weight, w0)
    assert vm.serving_head.net[0].weight.dtype == torch.float32
    assert torch.isfinite(torch.tensor(res.metrics["loss/total"]))
    # inference computes the same layers by the same rule, and the snapshot carries the rule:
    # a reloaded VM predicts exactly what the trained one does
    buf = io.BytesIO()
    save_snapshot(vm, buf)
    again, _ = load_snapshot(buf.getvalue())
    assert again.hp["vm_bf16_min_work"] == min_work
    seen.clear()
    p = predict_table(vm, tiny_table)
    assert set(seen) == {torch.bfloat16 if min_work else torch.float32}
    again.serving_head.net[0].register_forward_hook(lambda mod, i, out: seen.append(out.dtype))
    seen.clear()
    assert np.array_equal(predict_table(again, tiny_table), p)
    assert set(seen) == {torch.bfloat16 if min_work else torch.float32}
    # without native bf16 the same config trains every layer in fp32
    monkeypatch.setattr(blocks, "cpu_bf16_native", lambda: False)
    seen.clear(), deep.clear()
    train_vm_day(vm, tiny_table, tiny_schema, vm_cfg, cfg)
    assert set(seen) == set(deep) == {torch.float32}


@pytest.mark.parametrize("on", [False, True])
def test_das_infers_in_bf16_on_a_bf16_cpu_only_when_cpu_amp_is_set(monkeypatch, tiny_schema,
                                                                    tiny_cfg, tiny_table, on):
    import exfm.train.trainer as trainer
    from exfm.models import build_fm

    # CPU autocast also runs (slowly) where bf16 is not native: the test holds on any CPU
    monkeypatch.setattr(trainer, "cpu_bf16_native", lambda: True)
    fm = build_fm(tiny_schema, None, tiny_cfg, "dcn")
    seen: list[torch.dtype] = []
    lin = next(m for m in fm.modules() if isinstance(m, nn.Linear))
    lin.register_forward_hook(lambda mod, i, out: seen.append(out.dtype))
    out = _predictor(_with(tiny_cfg, cpu_amp=on), fm)(_without_fm_pred(tiny_table))
    assert seen and set(seen) == {torch.bfloat16 if on else torch.float32}
    p = out.column("fm_pred_click").to_numpy()
    assert out.schema.field("fm_pred_click").type == "float" and ((p > 0) & (p < 1)).all()


@pytest.mark.parametrize("on", [False, True])
def test_fm_infers_in_the_precision_it_trained_in(monkeypatch, tiny_schema, tiny_cfg, tiny_table,
                                                  on):
    import exfm.models.blocks as blocks
    import exfm.train.trainer as trainer
    from exfm.models import build_fm
    from exfm.models.build import model_from_spec, model_spec
    from exfm.train.trainer import train_fm_day

    # CPU autocast also runs (slowly) where bf16 is not native: the test holds on any CPU
    monkeypatch.setattr(blocks, "cpu_bf16_native", lambda: True)
    monkeypatch.setattr(trainer, "cpu_bf16_native", lambda: True)
    # built under the other setting: the day's config (models.cpu_amp) decides
    fm = build_fm(tiny_schema, None, _with(tiny_cfg, cpu_amp=not on), "dcnv2")
    seen: list[torch.dtype] = []

    def watch(model):
        lin = next(m for m in model.modules() if isinstance(m, nn.Linear))
        lin.register_forward_hook(lambda mod, i, out: seen.append(out.dtype))

    watch(fm)
    train_fm_day(fm, tiny_table, tiny_schema, _with(tiny_cfg, cpu_amp=on))
    want = {torch.bfloat16 if on else torch.float32}
    assert seen and set(seen) == want  # training
    seen.clear()
    p = predict_table(fm, tiny_table)
    assert seen and set(seen) == want  # inference, the same precision
    buf = io.BytesIO()
    save_snapshot(fm, buf)
    again, _ = load_snapshot(buf.getvalue())
    watch(again)
    seen.clear()
    assert np.array_equal(predict_table(again, tiny_table), p) and set(seen) == want
    # a snapshot older than the key infers in fp32, as it did
    spec = model_spec(fm)
    del spec["hparams"]["cpu_amp"]
    old = model_from_spec(spec)
    old.load_state_dict(fm.state_dict())
    watch(old)
    seen.clear()
    q = predict_table(old, tiny_table)
    assert set(seen) == {torch.float32} and np.abs(q - p).max() < 0.02
