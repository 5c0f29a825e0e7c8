"""Trainer state on the bucket: a VM's optimizers and Student Adapter between days.

The state is the ``TrainResult.state`` dict (tensors and primitives only), stored with
``torch.save`` under :func:`exfm.storage.layout.vm_state_key` and loaded with
``weights_only=True``.
"""

from __future__ import annotations

import io

from exfm.config import ExfmConfig
from exfm.storage.s3 import get_bytes, put_bytes


def save_state(cfg: ExfmConfig, key: str, state: dict) -> str:
    """Write ``state`` to ``key``; returns its URI."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return put_bytes(cfg, key, buf.getvalue())


def load_state(cfg: ExfmConfig, key: str | None) -> dict:
    """The state stored at ``key`` (``{}`` for no key: a cold start)."""
    import torch

    if not key:
        return {}
    return torch.load(io.BytesIO(get_bytes(cfg, key)), weights_only=True)
