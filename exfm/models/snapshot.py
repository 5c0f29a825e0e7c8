"""Model snapshots (``model.pt``) and batch inference over a table.

A snapshot holds only tensors and primitives, so ``torch.load(f, weights_only=True)`` reads it:
``{"format": 1, "spec": {role, kind, name, schema, tasks, hparams}, "state_dict": ..., "extra"}``.
"""

from __future__ import annotations

import io
import os
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from exfm.data.batches import TableTensors
from exfm.data.schema import DatasetSchema
from exfm.models.build import model_from_spec, model_spec, unwrap

SNAPSHOT_FORMAT = 1


def save_snapshot(model: nn.Module, path_or_buffer: str | os.PathLike | BinaryIO,
                  extra: dict[str, Any] | None = None) -> None:
    """Write ``model`` (weights on CPU) and ``extra`` (primitives only) to a file or buffer."""
    m = unwrap(model)
    state = {k: v.detach().cpu() for k, v in m.state_dict().items()}
    torch.save({"format": SNAPSHOT_FORMAT, "spec": model_spec(m), "state_dict": state,
                "extra": dict(extra or {})}, path_or_buffer)


def load_snapshot(path_or_buffer: str | os.PathLike | BinaryIO | bytes,
                  map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a snapshot: (model in eval mode, extra)."""
    if isinstance(path_or_buffer, (bytes, bytearray)):
        path_or_buffer = io.BytesIO(path_or_buffer)
    blob = torch.load(path_or_buffer, map_location=map_location, weights_only=True)
    if blob.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(f"unsupported snapshot format {blob.get('format')!r}")
    model = model_from_spec(blob["spec"])
    model.load_state_dict(blob["state_dict"])
    model.to(map_location)
    model.eval()
    return model, blob["extra"]


@torch.no_grad()
@torch.inference_mode()  # no autograd graph: the outputs would keep every batch's activations
def predict_table(model: nn.Module, table: pa.Table, schema: DatasetSchema | None = None,
                  batch_size: int = 8192, device: str | torch.device | None = None) -> np.ndarray:
    """Probabilities (N, T) in [0, 1] for every row of ``table`` (VMs: serving head, T = 1).

    The model reads its own fields (``model.schema``); ``schema`` is accepted for symmetry with
    the other table functions and only checked for the model's columns.
    """
    m = unwrap(model)
    device = torch.device(device) if device is not None else next(m.parameters()).device
    was_training = m.training
    m.eval()
    tt = TableTensors.from_table(table, m.schema, tasks=[]).to(device)
    out = [torch.sigmoid(m(batch)).float().cpu() for batch in tt.batches(batch_size)]
    m.train(was_training)
    if not out:
        return np.zeros((0, len(m.tasks)), dtype=np.float32)
    return torch.cat(out).numpy()
