"""Training checkpoints: model spec + weights + trainer state (optimizers, SA, rows seen).

Tensors and primitives only (``torch.load(..., weights_only=True)``); loading rebuilds the model
and hands back the state to pass as ``state=`` to the next ``train_*_day`` call, which then
continues exactly as if it had never stopped.
"""

from __future__ import annotations

import os
from typing import Any, BinaryIO

import torch
from torch import nn

from exfm.models.build import model_from_spec, model_spec, unwrap

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | os.PathLike | BinaryIO, model: nn.Module,
                    trainer_state: dict[str, Any] | None = None) -> None:
    m = unwrap(model)
    torch.save({"format": CHECKPOINT_FORMAT, "spec": model_spec(m),
                "state_dict": {k: v.detach().cpu() for k, v in m.state_dict().items()},
                "trainer_state": trainer_state or {}}, path)


def load_checkpoint(path: str | os.PathLike | BinaryIO, map_location: str | torch.device = "cpu"
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """(model on ``map_location``, trainer state)."""
    blob = torch.load(path, map_location=map_location, weights_only=True)
    if blob.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"unsupported checkpoint format {blob.get('format')!r}")
    model = model_from_spec(blob["spec"])
    model.load_state_dict(blob["state_dict"])
    model.to(map_location)
    return model, blob["trainer_state"]
