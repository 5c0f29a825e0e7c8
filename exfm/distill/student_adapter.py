"""Student Adapter (SA, METHOD.md eq. 6): a small MLP from the FM's prediction to an adapted one,
trained alone on the fresh true labels, one step per streaming batch (Algorithm 1 step i).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from exfm.models.blocks import MLP

LOGIT_EPS = 1e-6


def prob_logit(p: torch.Tensor, eps: float = LOGIT_EPS) -> torch.Tensor:
    """logit(p) with p clamped to [eps, 1 - eps]."""
    p = p.clamp(eps, 1 - eps)
    return torch.log(p) - torch.log1p(-p)


class StudentAdapter(nn.Module):
    """p_SA = sigma(MLP_SA(logit(p_FM))), MLP_SA(u) = u + g(u) with g's last layer at zero, so the
    adapter starts as the FM itself and learns the correction the fresh labels ask for.

    Args:
        hidden: width of g's hidden layer (``distillation.sa_hidden``).

    Shapes: p_fm (B,) in [0, 1] -> logit (B,).

    Example:
        >>> sa = StudentAdapter(8)
        >>> torch.sigmoid(sa(torch.tensor([0.2, 0.7])))
        tensor([0.2000, 0.7000], grad_fn=<SigmoidBackward0>)
    """

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.g = MLP(1, [hidden], 1)
        nn.init.zeros_(self.g.net[-1].weight)
        nn.init.zeros_(self.g.net[-1].bias)

    def forward(self, p_fm: torch.Tensor) -> torch.Tensor:
        u = prob_logit(p_fm).unsqueeze(-1)
        return (u + self.g(u)).squeeze(-1)


def student_adapter_step(sa: StudentAdapter, optimizer: torch.optim.Optimizer,
                         p_fm: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1 (i) and (ii): one step of SA on L_SA = BCE(y, logit_SA), then sg(p_SA) from
    the *updated* SA. Returns (L_SA detached, p_SA detached (B,))."""
    p_fm = p_fm.detach()
    loss = F.binary_cross_entropy_with_logits(sa(p_fm), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        p_sa = torch.sigmoid(sa(p_fm))
    return loss.detach(), p_sa
