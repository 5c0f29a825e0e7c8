"""The one-pass streaming trainer: each row of a day is seen once, in arrival order.

``train_fm_day`` trains the teacher on all its tasks; ``train_vm_day`` runs Algorithm 1 of
METHOD.md per batch (SA step, sg(p_SA) from the updated SA, VM step on the mode's loss).
Reporting goes through ``report`` (a callable taking a dict): tests pass ``list.append``, Ray
passes ``ray.train.report``, a local run an MLflow logger. A DDP-wrapped model works as is; the
Ray loop differs from the local one by the wrapping and its data shard only.

Example:
    >>> res = train_vm_day(vm, table, schema, cfg.vms[0], cfg, report=print)   # doctest: +SKIP
    >>> res.steps, res.metrics["train/auc"]                                      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn
from torch.nn import functional as F

from exfm.config import ExfmConfig, VMConfig
from exfm.config.kinds import DistillMode
from exfm.data.batches import TableTensors
from exfm.data.schema import DatasetSchema
from exfm.distill import (StudentAdapter, distillation_loss, sa_context, sa_shape,
                          student_adapter_step)
from exfm.models.blocks import cpu_bf16_layers, cpu_bf16_native
from exfm.models.build import unwrap
from exfm.train.metrics import all_metrics
from exfm.train.optim import (effective_batch_size, load_optimizer_states, make_optimizers,
                              optimizer_states, set_torch_threads)

Report = Callable[[dict[str, Any]], Any]


@dataclass
class TrainResult:
    """What one day of training returns.

    rows_seen: rows this model has trained on in total (warm start included).
    steps: optimizer steps of this day. metrics: progressive metrics of the day (each batch scored
    before it is trained on) and mean losses. state: the trainer state to warm-start the next day
    (optimizers, SA, counters; tensors and primitives only).
    """

    rows_seen: int
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


def _device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    m = unwrap(model)
    if device is None:
        return next(m.parameters()).device
    device = torch.device(device)
    m.to(device)
    return device


def autocast(device: torch.device, amp: bool, cpu: bool = False):
    """bf16 autocast on a CUDA device when ``amp`` (``models.amp``), on a CPU when ``cpu``
    (``models.cpu_amp``) and the CPU computes bf16 natively; else a no-op context."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if cpu and device.type == "cpu" and cpu_bf16_native():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(tt: TableTensors, device: torch.device) -> TableTensors:
    """The day's tensors on ``device``: on CUDA through pinned host memory with non-blocking
    copies (the copy overlaps the first steps); elsewhere a plain ``.to`` (pinning needs CUDA)."""
    if device.type != "cuda":
        return tt.to(device)
    mv = lambda t: None if t is None else t.pin_memory().to(device, non_blocking=True)  # noqa: E731
    return TableTensors(mv(tt.sparse), mv(tt.dense), {k: mv(v) for k, v in tt.seq.items()},
                        mv(tt.labels), mv(tt.fm_pred), tt.tasks, mv(tt.fm_age))


def _day_tensors(model: nn.Module, table: pa.Table, tasks: list[str], device) -> TableTensors:
    tt = TableTensors.from_table(table, unwrap(model).schema, tasks)
    if tt.labels is None:
        raise ValueError(f"training needs the label columns {tasks}")
    return to_device(tt, device)


class _Meter:
    """Running sums kept on the device: one host sync per report, not per step."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.n = 0

    def add(self, parts: dict[str, torch.Tensor]) -> None:
        for k, v in parts.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1

    def means(self) -> dict[str, float]:
        return {k: float(v) / max(self.n, 1) for k, v in self.sums.items()}


def _progressive(labels: list[torch.Tensor], preds: list[torch.Tensor], tasks: list[str],
                 prefix: str = "train/") -> dict[str, float]:
    if not preds:
        return {}
    y, p = torch.cat(labels).cpu().numpy(), torch.cat(preds).float().cpu().numpy()
    if len(tasks) == 1:
        return {f"{prefix}{k}": v for k, v in all_metrics(y[:, 0], p[:, 0]).items()}
    out = {}
    for t, name in enumerate(tasks):
        out.update({f"{prefix}{name}/{k}": v for k, v in all_metrics(y[:, t], p[:, t]).items()})
    return out


def _cold_start_bias(m: nn.Module, tt: TableTensors, bs: int, state: dict) -> None:
    """A fresh model (no trainer state) starts its output biases at the positive rate of the
    first batch (what a stream has seen when it starts), instead of at p = 0.5: with rare
    positives the first few hundred steps would otherwise go to walking the bias down.
    The prior is smoothed (+0.5 positive, +1 row) and clamped to [1e-4, 0.5]."""
    if state.get("optimizers") or not hasattr(m, "init_output_bias"):
        return
    y = tt.labels[:bs]
    m.init_output_bias((y.sum(0) + 0.5) / (y.shape[0] + 1.0))


def _emit(report: Report | None, payload: dict[str, Any]) -> None:
    if report is not None:
        report(payload)


def train_fm_day(model: nn.Module, table: pa.Table, schema: DatasetSchema, cfg: ExfmConfig,
                 report: Report | None = None, state: dict | None = None,
                 device: str | torch.device | None = None,
                 optimizer_state: dict | None = None) -> TrainResult:
    """One pass of the FM over ``table``: loss = sum over tasks of BCE(y_t, z_t).

    Args:
        model: an FM (or its DDP wrapper), warm from the previous day if any.
        state: the previous day's ``TrainResult.state`` (``optimizer_state`` is an alias).
        device: where to train (default: where the model is).
    """
    state = state if state is not None else (optimizer_state or {})
    m, mcfg = unwrap(model), cfg.models
    device = _device(model, device)
    set_torch_threads(mcfg, device)
    tt = _day_tensors(model, table, m.tasks, device)
    bs = effective_batch_size(len(tt), mcfg)
    opts = make_optimizers(m, mcfg)
    load_optimizer_states(opts, state.get("optimizers", {}))
    _cold_start_bias(m, tt, bs, state)
    m.hp["cpu_amp"] = mcfg.cpu_amp  # inference computes as training does (FoundationModel)
    model.train()
    meter, labels, preds = _Meter(), [], []
    steps, t0 = 0, time.perf_counter()
    for batch in tt.batches(bs):
        with autocast(device, mcfg.amp, cpu=mcfg.cpu_amp):
            logits = model(batch).float()  # (B, T)
        per_task = F.binary_cross_entropy_with_logits(logits, batch["labels"],
                                                      reduction="none").mean(0)
        loss = per_task.sum()
        for o in opts.values():
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in opts.values():
            o.step()
        steps += 1
        labels.append(batch["labels"])
        preds.append(torch.sigmoid(logits.detach()))
        meter.add({"loss/total": loss.detach()})
        if steps % mcfg.log_every == 0:  # .item() below is a host sync: only every log_every
            _emit(report, {"step": steps, "rows": steps * bs, **meter.means()})
    rows_seen = int(state.get("rows_seen", 0)) + len(tt)
    metrics = {**meter.means(), **_progressive(labels, preds, m.tasks), "steps": steps,
               "batch_size": bs, "rows": len(tt),
               "train/examples_per_s": len(tt) / max(time.perf_counter() - t0, 1e-9)}
    _emit(report, {"step": steps, "rows_seen": rows_seen, **metrics})
    new_state = {"rows_seen": rows_seen, "steps": int(state.get("steps", 0)) + steps,
                 "optimizers": optimizer_states(opts)}
    return TrainResult(rows_seen, steps, metrics, new_state)


def resolve_mode(vm: VMConfig, cfg: ExfmConfig) -> DistillMode:
    return vm.mode or cfg.distillation.mode


def train_vm_day(model: nn.Module, table: pa.Table, schema: DatasetSchema, vm: VMConfig,
                 cfg: ExfmConfig, report: Report | None = None, state: dict | None = None,
                 device: str | torch.device | None = None) -> TrainResult:
    """One pass of a VM over its rows of ``table`` with FM supervision (Algorithm 1).

    ``table`` must hold ``fm_pred_<vm.task>`` unless the mode is ``none``. The Student Adapter
    lives in the trainer state (it is never served).
    """
    state = state or {}
    m, mcfg, dcfg = unwrap(model), cfg.models, cfg.distillation
    mode = resolve_mode(vm, cfg)
    device = _device(model, device)
    set_torch_threads(mcfg, device)
    tt = _day_tensors(model, table, [m.task], device)
    if mode != "none" and tt.fm_pred is None:
        raise ValueError(f"VM '{vm.name}' (mode {mode}) needs column fm_pred_{m.task}")
    bs = effective_batch_size(len(tt), mcfg)
    opts = make_optimizers(m, mcfg)
    load_optimizer_states(opts, state.get("optimizers", {}))
    sa = sa_opt = None
    if mode == "ah_sa":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mcfg.seed)
            sa = StudentAdapter(dcfg.sa_hidden, trust=dcfg.sa_trust_ah,
                                **sa_shape(m, dcfg.sa_columns, dcfg.sa_freshness_gap))
        sa.to(device)
        sa_opt = torch.optim.Adam(sa.parameters(), lr=dcfg.sa_lr)
        if state.get("sa") is not None:
            sa.load_state_dict(state["sa"])
            load_optimizer_states({"sa": sa_opt}, {"sa": state["sa_optimizer"]})
    _cold_start_bias(m, tt, bs, state)
    # Modes that read only the serving head skip the AH and SA heads (forward and backward); a
    # DDP wrapper keeps them, so every parameter gets a gradient (distillation_loss's weight 0).
    serving_only = model is m and mode in ("none", "vanilla")
    # bf16 for the VM's layers big enough to pay for their casts (all of it under
    # models.vm_cpu_amp's autocast), in this day's training and the inference after it; the
    # snapshot's hparams carry the rule, so a reloaded VM infers as this one does
    m.hp["vm_bf16_min_work"] = mcfg.vm_bf16_min_work
    cpu_bf16_layers(m, mcfg.vm_bf16_min_work)
    model.train()
    meter, labels, preds = _Meter(), [], []
    steps, t0 = 0, time.perf_counter()
    for batch in tt.batches(bs):
        y = batch["labels"][:, 0]
        p_fm = batch["fm_pred"][:, 0] if "fm_pred" in batch else None
        p_sa = kd_weight = None
        parts: dict[str, torch.Tensor] = {}
        if sa is not None:  # Algorithm 1 (i)+(ii): SA step, then sg(p_SA) from the updated SA
            ctx = sa_context(m, batch, dcfg.sa_columns, dcfg.sa_freshness_gap)
            parts["loss/sa"], p_sa = student_adapter_step(sa, sa_opt, p_fm, y, ctx)
            kd_weight = sa.trust(ctx)
        with autocast(device, False, cpu=mcfg.vm_cpu_amp):
            if serving_only:
                z_s = model(batch).squeeze(-1).float()
                z = (z_s, z_s.new_zeros(()), z_s.new_zeros(()))
            else:  # (iii) through __call__, so DDP syncs the gradients
                z = tuple(t.float() for t in model(batch, gs=dcfg.gs))
        loss, vm_parts = distillation_loss(mode, z, y, p_fm, p_sa, lw=dcfg.lw, ls=dcfg.ls,
                                           sa_weight=dcfg.sa_weight, kd_weight=kd_weight)
        for o in opts.values():
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in opts.values():
            o.step()
        steps += 1
        labels.append(batch["labels"])
        preds.append(torch.sigmoid(z[0].detach()).unsqueeze(1))
        meter.add({**vm_parts, **parts})
        if steps % mcfg.log_every == 0:
            _emit(report, {"step": steps, "rows": steps * bs, **meter.means()})
    rows_seen = int(state.get("rows_seen", 0)) + len(tt)
    metrics = {**meter.means(), **_progressive(labels, preds, [m.task]), "steps": steps,
               "batch_size": bs, "rows": len(tt),
               "train/examples_per_s": len(tt) / max(time.perf_counter() - t0, 1e-9)}
    _emit(report, {"step": steps, "rows_seen": rows_seen, "mode": mode, **metrics})
    new_state: dict[str, Any] = {"rows_seen": rows_seen,
                                 "steps": int(state.get("steps", 0)) + steps,
                                 "optimizers": optimizer_states(opts), "mode": mode}
    if sa is not None:
        new_state["sa"] = {k: v.detach().clone() for k, v in sa.state_dict().items()}
        new_state["sa_optimizer"] = optimizer_states({"sa": sa_opt})["sa"]
    return TrainResult(rows_seen, steps, metrics, new_state)


def train_stream(train_day: Callable[..., TrainResult], model: nn.Module,
                 chunks: Iterable[pa.Table], *args, state: dict | None = None,
                 report: Report | None = None, **kwargs) -> TrainResult:
    """One pass over a day that arrives in chunks (e.g. :func:`exfm.compute.ingest.iter_tables`):
    ``train_day`` (:func:`train_fm_day` or :func:`train_vm_day`) on each chunk in order, the
    trainer state carried from one to the next, so memory holds one chunk, not the day.

    The same rows in the same order as one call on the whole day, batched per chunk (a chunk a
    multiple of the batch size gives the very same batches). Metrics: the row-weighted mean of
    the chunks' (progressive metrics are per chunk); ``steps``/``rows`` summed.

    Example:
        >>> res = train_stream(train_fm_day, fm, iter_tables(path, 262_144), schema, cfg)  # doctest: +SKIP
    """
    state = dict(state or {})
    steps, rows, sums = 0, 0, {}
    res = None
    for chunk in chunks:
        if chunk.num_rows == 0:
            continue
        res = train_day(model, chunk, *args, state=state, report=report, **kwargs)
        state, steps, n = res.state, steps + res.steps, int(res.metrics.get("rows", chunk.num_rows))
        rows += n
        for k, v in res.metrics.items():
            if isinstance(v, (int, float)) and k not in ("steps", "rows", "batch_size"):
                sums[k] = sums.get(k, 0.0) + float(v) * n
    if res is None:
        raise ValueError("train_stream: the day has no rows")
    metrics = {k: v / max(rows, 1) for k, v in sums.items()}
    metrics.update(steps=steps, rows=rows, batch_size=res.metrics.get("batch_size"))
    return TrainResult(res.rows_seen, steps, metrics, state)


def train_vm_stream(model: nn.Module, day, schema: DatasetSchema, vm: VMConfig, cfg: ExfmConfig,
                    state: dict | None = None, device: str | torch.device | None = None,
                    report: Report | None = None, chunk_rows: int | None = None) -> TrainResult:
    """:func:`train_vm_day` over a day read in chunks (``day``: a
    :class:`~exfm.data.stream.DayStream`, e.g. ``PartitionStore.stream_day``): the batch size is
    the one the whole day would get (from ``day.count()``), chunks are a multiple of it
    (``models.stream_chunk_rows`` rounded down), so the batches and updates are those of one call
    on the whole day while memory holds one chunk.

    Raises:
        ValueError: the day has no rows.
    """
    rows = day.count()
    if rows == 0:
        raise ValueError(f"VM '{vm.name}': no rows in {day.name}")
    bs = effective_batch_size(rows, cfg.models)
    fixed = cfg.model_copy(update={"models": cfg.models.model_copy(
        update={"batch_size": bs, "min_steps_per_day": 0})})
    chunk = max(bs, (chunk_rows or cfg.models.stream_chunk_rows) // bs * bs)
    return train_stream(train_vm_day, model, day.chunks(chunk), schema, vm, fixed, state=state,
                        report=report, device=device)


@torch.inference_mode()
def predict_tensors(model: nn.Module, tt: TableTensors, batch_size: int = 8192) -> np.ndarray:
    """Probabilities (N, T) of the serving output over already-converted tensors."""
    m = unwrap(model)
    was = m.training
    m.eval()
    out = [torch.sigmoid(m(b)).float().cpu() for b in tt.batches(batch_size)]
    m.train(was)
    return torch.cat(out).numpy() if out else np.zeros((0, len(m.tasks)), np.float32)


def evaluate(model: nn.Module, table: pa.Table, schema: DatasetSchema | None = None,
             task: str | None = None, batch_size: int = 8192,
             device: str | torch.device | None = None) -> dict[str, float]:
    """Metrics of the served prediction on ``table`` (VMs: serving head only).

    One task (a VM, or ``task`` given, or a one-task FM): ``{"auc","logloss","ne","calibration",
    "rows"}``. A multi-task FM with ``task=None``: the same keys per task, ``"<task>/auc"``, ...
    """
    return evaluate_chunks(model, [table], task=task, batch_size=batch_size, device=device)


def evaluate_chunks(model: nn.Module, chunks: Iterable[pa.Table], task: str | None = None,
                    batch_size: int = 8192,
                    device: str | torch.device | None = None) -> dict[str, float]:
    """:func:`evaluate` over a day that arrives in chunks (e.g. ``DayStream.chunks``): the same
    figures as one call on the whole day. The rows are dropped chunk by chunk; predictions and
    labels are kept (a few bytes a row) for the AUC."""
    return evaluate_many([model], chunks, task, batch_size, device)[0]


def evaluate_many(models: list[nn.Module], chunks: Iterable[pa.Table], task: str | None = None,
                  batch_size: int = 8192,
                  device: str | torch.device | None = None) -> list[dict[str, float]]:
    """:func:`evaluate_chunks` of several models in one read of the chunks (e.g. the promotion
    gate's challenger, champion and control on the day's slice), one dict per model."""
    if not models:
        return []
    ms = [unwrap(m) for m in models]
    devices = [_device(m, device) for m in models]
    ys: list[list[np.ndarray]] = [[] for _ in ms]
    ps: list[list[np.ndarray]] = [[] for _ in ms]
    for table in chunks:
        for i, (m, dev) in enumerate(zip(ms, devices)):
            tt = TableTensors.from_table(table, m.schema, m.tasks)
            if tt.labels is None:
                raise ValueError(f"evaluation needs the label columns {m.tasks}")
            ps[i].append(predict_tensors(m, tt.to(dev), batch_size))
            other = task is not None and task not in m.tasks  # another task's label
            ys[i].append(TableTensors.from_table(table, m.schema, [task]).labels.numpy() if other
                         else tt.labels.numpy())
    if not ys[0]:
        raise ValueError("evaluation: no rows")
    return [_metrics(m, np.concatenate(y), np.concatenate(p), task)
            for m, y, p in zip(ms, ys, ps)]


def _metrics(m: nn.Module, y: np.ndarray, p: np.ndarray, task: str | None) -> dict[str, float]:
    if task is not None or len(m.tasks) == 1:
        t = m.tasks.index(task) if task is not None and task in m.tasks else 0
        return {**all_metrics(y[:, 0 if y.shape[1] == 1 else t], p[:, t]), "rows": len(y)}
    out: dict[str, float] = {"rows": len(y)}
    for t, name in enumerate(m.tasks):
        out.update({f"{name}/{k}": v for k, v in all_metrics(y[:, t], p[:, t]).items()})
    return out
