"""Gradient Scaling (GS, METHOD.md eq. 5): identity forward, alpha * grad backward.

Placed between the backbone output h and the distillation heads only, so it amplifies what the
distillation heads push back into the backbone; the heads' own gradients are not scaled.
"""

from __future__ import annotations

import torch


class GradientScale(torch.autograd.Function):
    """y = x forward; dL/dx = alpha * dL/dy backward.

    Example:
        >>> x = torch.ones(3, requires_grad=True)
        >>> GradientScale.apply(x, 2.0).sum().backward()
        >>> x.grad
        tensor([2., 2., 2.])
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:  # noqa: D102
        ctx.alpha = float(alpha)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        return grad * ctx.alpha, None


def scale_gradient(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """``x`` unchanged, with its backward gradient multiplied by ``alpha`` (1.0 = a no-op)."""
    if alpha == 1.0 or not x.requires_grad:
        return x
    return GradientScale.apply(x, alpha)
