"""Plain building blocks: the MLP every model and head is made of."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence

import torch
from torch import nn


@functools.lru_cache(maxsize=1)
def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's check: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_bf16_autocast(x: torch.Tensor, on: bool = True):
    """bf16 autocast for ops on ``x`` when ``on``, ``x`` is on a CPU that computes bf16 natively
    and no CPU autocast is already on; else a no-op context."""
    if on and x.device.type == "cpu" and not torch.is_autocast_enabled("cpu") and cpu_bf16_native():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class MLP(nn.Module):
    """Linear -> ReLU stacks, then an optional output layer without activation.

    Args:
        in_dim: input width. hidden: widths of the ReLU layers (may be empty).
        out_dim: width of a final linear layer, or None to end on the last hidden layer.
        dropout: applied after every hidden activation.

    Shapes: (B, in_dim) -> (B, out_dim or hidden[-1] or in_dim).

    Example:
        >>> MLP(8, [16], 1)(torch.zeros(4, 8)).shape
        torch.Size([4, 1])
    """

    def __init__(self, in_dim: int, hidden: Sequence[int] = (), out_dim: int | None = None,
                 dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            # in place: the Linear before it keeps its input, not its output, for backward, so
            # the ReLU can overwrite that output (one (B, h) allocation less a layer, forward
            # and inference; see docs/performance.md)
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        if out_dim is not None:
            layers.append(nn.Linear(d, out_dim))
            d = out_dim
        self.net = nn.Sequential(*layers)
        self.out_dim = d
        # set by :func:`cpu_bf16_layers`: on a CPU that computes bf16 natively, a Linear with at
        # least this much work per forward runs under bf16 autocast, in training and inference;
        # 0 = every layer fp32 (the default)
        self.bf16_min_work = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)

    def _mixed(self, x: torch.Tensor) -> bool:
        """Whether some layers may compute in bf16 on this input (see :func:`cpu_bf16_layers`)."""
        return (bool(self.bf16_min_work) and x.device.type == "cpu"
                and not torch.is_autocast_enabled("cpu") and cpu_bf16_native())

    def bf16(self, x: torch.Tensor, d_out: int) -> bool:
        """Whether a linear map of ``x`` (..., d_in) to ``d_out`` computes in bf16 here: its
        multiply-adds, rows x d_in x d_out = x.numel() x d_out, at least ``bf16_min_work``
        (a training step or an inference batch: forward alone, bf16 pays from about the same
        work, ``bench/bf16.py --forward``)."""
        return self._mixed(x) and x.numel() * d_out >= self.bf16_min_work

    def run(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """``net[start:](x)``, each Linear in bf16 or fp32 as :meth:`bf16` says; the output is
        fp32 (a caller that computed layer 0 itself passes ``start=1``)."""
        net = self.net if start == 0 else self.net[start:]
        if not self._mixed(x):
            return net(x)
        rows = x.numel() // max(x.shape[-1], 1)
        widest = max((m.in_features * m.out_features for m in net if isinstance(m, nn.Linear)),
                     default=0)
        if rows * widest < self.bf16_min_work:  # no layer big enough: the plain fp32 path (x
            return net(x.float())  # is bf16 when the caller computed layer 0 in bf16)
        for layer in net:
            if isinstance(layer, nn.Linear):
                if x.numel() * layer.out_features >= self.bf16_min_work:
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        x = layer(x)
                    continue
                x = x.float()
            x = layer(x)
        return x.float()


def cpu_bf16_layers(model: nn.Module, min_work: int) -> int:
    """On a CPU that computes bf16 natively (:func:`cpu_bf16_native`; elsewhere, and on GPUs,
    nothing changes): every :class:`MLP` layer of ``model`` with at least ``min_work``
    multiply-adds per forward (rows x in x out: a training step's batch or an inference batch)
    computes in bf16 (autocast: weights, optimizer state and the layer's output to the next fp32
    layer stay fp32), the others in fp32; ``min_work`` 0 turns it off. Under an enclosing CPU
    autocast (``models.vm_cpu_amp``) that autocast decides. Returns how many MLPs were set."""
    n = 0
    for m in model.modules():
        if isinstance(m, MLP):
            m.bf16_min_work = int(min_work)
            n += 1
    return n
