"""Optimizers of the one-pass trainer: Adam for dense parameters, a separate higher-lr optimizer
for the embedding tables (most rows are seen a handful of times in one pass, so they need larger
steps than the shared dense weights), and the batch size that keeps a day from being too few steps.
"""

from __future__ import annotations

import copy
import os

import torch
from torch import nn

from exfm.config import ModelsConfig


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def set_torch_threads(mcfg: ModelsConfig, device: torch.device) -> int:
    """Intra-op threads = ``models.torch_threads`` or the cores this process may use (CPU only)."""
    n = mcfg.torch_threads or available_cores()
    if device.type == "cpu" and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def effective_batch_size(rows: int, mcfg: ModelsConfig) -> int:
    """``batch_size``, shrunk (not below ``min_batch_size``) so a day gives >= ``min_steps_per_day``
    optimizer steps. One pass over a small day at a large batch learns nothing (METHOD.md)."""
    bs = mcfg.batch_size
    if mcfg.min_steps_per_day > 0 and rows > 0:
        bs = min(bs, max(mcfg.min_batch_size, rows // mcfg.min_steps_per_day))
    return max(1, bs)


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(embedding tables and first-order weights, everything else), each in module order
    (stable across rebuilds). A dense column's first-order weight learns at the rate of a sparse
    field's (a width-1 table): both are the first-order term of :class:`LinearTerm`."""
    from exfm.models.embeddings import LinearTerm

    emb_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    emb_ids |= {id(m.dense.weight) for m in model.modules()
                if isinstance(m, LinearTerm) and m.dense is not None}
    emb, dense = [], []
    for p in model.parameters():
        (emb if id(p) in emb_ids else dense).append(p)
    return emb, dense


def _adam(params: list[nn.Parameter], **kw) -> torch.optim.Adam:
    """Adam, fused (one kernel for every tensor) where every parameter is a floating tensor on a
    CPU or CUDA device; the foreach implementation otherwise."""
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                                 for p in params)
    return torch.optim.Adam(params, fused=fused, **kw)


def dense_small_tables(model: nn.Module, min_elements: int) -> int:
    """Switch sparse-gradient tables below ``min_elements`` (rows x width) to dense gradients;
    returns how many were switched. Coalescing a sparse gradient costs a fixed few ms a step, more
    than a fused dense Adam step over a small table (a width-1 first-order table, small vocabs)."""
    n = 0
    for m in model.modules():
        if isinstance(m, nn.Embedding) and m.sparse and m.weight.numel() < min_elements:
            m.sparse = False
            n += 1
    return n


def make_optimizers(model: nn.Module, mcfg: ModelsConfig) -> dict[str, torch.optim.Optimizer]:
    """{"dense": fused Adam(lr, weight_decay), "embedding": SparseAdam over the sparse-gradient
    tables, "embedding_dense": fused Adam over the dense-gradient tables and the dense columns'
    first-order weights, both at embedding_lr}.

    With ``sparse_adam``, tables under ``models.sparse_min_elements`` are switched to dense
    gradients first (:func:`dense_small_tables`). Key names are stable, so a warm start reloads
    the state of the same group; a group that changed kind starts fresh.
    """
    dense_small_tables(model, mcfg.sparse_min_elements)
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    sparse_ids = {id(m.weight) for m in tables if m.sparse}
    emb, dense = split_parameters(model)
    opts: dict[str, torch.optim.Optimizer] = {
        "dense": _adam(dense, lr=mcfg.lr, weight_decay=mcfg.weight_decay)}
    sparse_tables = [p for p in emb if id(p) in sparse_ids]
    dense_tables = [p for p in emb if id(p) not in sparse_ids]
    if sparse_tables:
        opts["embedding"] = torch.optim.SparseAdam(sparse_tables, lr=mcfg.embedding_lr)
    if dense_tables:
        opts["embedding_dense"] = _adam(dense_tables, lr=mcfg.embedding_lr)
    return opts


def optimizer_states(opts: dict[str, torch.optim.Optimizer]) -> dict[str, dict]:
    """Deep copies (the live tensors keep changing in place once training goes on)."""
    return {k: copy.deepcopy(o.state_dict()) for k, o in opts.items()}


def load_optimizer_states(opts: dict[str, torch.optim.Optimizer], states: dict[str, dict]) -> None:
    for k, o in opts.items():
        st = states.get(k)
        if st is not None and len(st.get("param_groups", [])) == len(o.param_groups) and all(
                len(a["params"]) == len(b["params"])
                for a, b in zip(st["param_groups"], o.state_dict()["param_groups"])):
            o.load_state_dict(copy.deepcopy(st))
