"""Plain building blocks: the MLP every model and head is made of."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
