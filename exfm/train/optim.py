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
    """(embedding tables, everything else), each in module order (stable across rebuilds)."""
    emb_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    emb, dense = [], []
    for p in model.parameters():
        (emb if id(p) in emb_ids else dense).append(p)
    return emb, dense


def make_optimizers(model: nn.Module, mcfg: ModelsConfig) -> dict[str, torch.optim.Optimizer]:
    """{"dense": Adam(lr, weight_decay), "embedding": SparseAdam (sparse-gradient tables) or Adam,
    at embedding_lr}."""
    emb, dense = split_parameters(model)
    opts: dict[str, torch.optim.Optimizer] = {
        "dense": torch.optim.Adam(dense, lr=mcfg.lr, weight_decay=mcfg.weight_decay)}
    if emb:
        # The model decides (it was built, maybe from a snapshot, with sparse or dense gradients).
        sparse = any(m.sparse for m in model.modules() if isinstance(m, nn.Embedding))
        if sparse:
            opts["embedding"] = torch.optim.SparseAdam(emb, lr=mcfg.embedding_lr)
        else:
            opts["embedding"] = torch.optim.Adam(emb, lr=mcfg.embedding_lr)
    return opts


def optimizer_states(opts: dict[str, torch.optim.Optimizer]) -> dict[str, dict]:
    """Deep copies (the live tensors keep changing in place once training goes on)."""
    return {k: copy.deepcopy(o.state_dict()) for k, o in opts.items()}


def load_optimizer_states(opts: dict[str, torch.optim.Optimizer], states: dict[str, dict]) -> None:
    for k, o in opts.items():
        if k in states:
            o.load_state_dict(copy.deepcopy(states[k]))
