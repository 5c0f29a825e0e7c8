"""Gradient Scaling (GS, METHOD.md eq. 5): identity forward, alpha * grad backward.

A layer-level autograd function, so it lives with the layers: :class:`VerticalModel.heads`
places it between the backbone output h and the distillation heads only, so it amplifies what
the distillation heads push back into the backbone; the heads' own gradients are not scaled::

    forward   y = x
    backward  dL/dx = alpha * dL/dy            (alpha = distillation.gs)

With h the backbone output (B, H), z_d = MLP_d(GS(h)) gives the backbone
alpha * dL_kd/dh from the Auxiliary Head and dL_label/dh (unscaled) from the serving head.
"""

from __future__ import annotations

import torch


class GradientScale(torch.autograd.Function):
    """y = x forward; dL/dx = alpha * dL/dy backward. Any shape; the output has x's shape.

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
    """``x`` unchanged, with its backward gradient multiplied by ``alpha`` (1.0 = a no-op).

    Args:
        x: any tensor, e.g. the backbone output h (B, H).
        alpha: the GS factor (``distillation.gs``, > 0).

    Returns:
        ``x`` itself when ``alpha == 1`` or ``x`` needs no gradient, else a view of ``x`` whose
        gradient is scaled.

    Example:
        >>> h = torch.zeros(2, 4, requires_grad=True)
        >>> (scale_gradient(h, 3.0) * 2).sum().backward()
        >>> h.grad[0]
        tensor([6., 6., 6., 6.])
    """
    if alpha == 1.0 or not x.requires_grad:
        return x
    return GradientScale.apply(x, alpha)
