"""The VM objective for each distillation mode (METHOD.md eqs 1, 2, 5, 7).

    none     L = BCE(y, z_s)                                                          (eq. 1)
    vanilla  L = BCE(y, z_s) + BCE(p_FM, z_s)                 one head, both targets  (eq. 2)
    ah       L = BCE(y, z_s) + w BCE(min(beta p_FM, 1), z_d)                          (eq. 5)
    ah_sa    L = eq. 5 + w_sa BCE(sg(p_SA), z_d2)                                     (eq. 7)
GS (alpha) is applied inside the model (:meth:`VerticalModel.heads`), on the path from z_d and
z_d2 into the backbone. Vanilla KD is eq. 2 as written: no LW, LS or GS.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from exfm.config.kinds import DISTILL_MODES, DistillMode


def bce(target: torch.Tensor, logit: torch.Tensor) -> torch.Tensor:
    """BCE(t, z) of METHOD.md, mean over the batch; t in [0, 1] may be soft."""
    return F.binary_cross_entropy_with_logits(logit, target)


def scale_label(p: torch.Tensor, beta: float) -> torch.Tensor:
    """Label Scaling: min(beta * p, 1)."""
    return (beta * p).clamp(max=1.0)


def distillation_loss(mode: DistillMode, z: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                      y: torch.Tensor, p_fm: torch.Tensor | None = None,
                      p_sa: torch.Tensor | None = None, lw: float = 1.0, ls: float = 1.0,
                      sa_weight: float = 1.0, kd_weight: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The VM loss of ``mode`` and its parts (detached, keys ``loss/label``, ``loss/kd``, ...).

    Args:
        z: (z_s, z_d, z_d2) logits (B,) from :meth:`VerticalModel.heads`.
        y: labels (B,). p_fm: FM predictions (B,), needed unless mode is none.
        p_sa: the SA's predictions (B,), needed for ah_sa; detached here (sg).
        kd_weight: per-row weights (B,) of the AH's distillation term (the SA's trust in the FM,
            ``distillation.sa_trust_ah``); None = 1 on every row.

    Heads a mode does not use enter with weight 0, so every parameter gets a gradient (a DDP
    wrapper then needs no ``find_unused_parameters``).
    """
    if mode not in DISTILL_MODES:
        raise ValueError(f"unknown distillation mode {mode!r}; expected one of {DISTILL_MODES}")
    z_s, z_d, z_d2 = z
    label = bce(y, z_s)
    parts = {"loss/label": label.detach()}
    total = label
    unused = 0.0 * (z_d.sum() + z_d2.sum())
    if mode != "none" and p_fm is None:
        raise ValueError(f"mode {mode!r} needs the FM's predictions (fm_pred_<task> column)")
    if mode == "vanilla":
        kd = bce(p_fm, z_s)
        total = total + kd
        parts["loss/kd"] = kd.detach()
    elif mode in ("ah", "ah_sa"):
        if kd_weight is None:
            kd = bce(scale_label(p_fm, ls), z_d)
        else:
            kd = (F.binary_cross_entropy_with_logits(z_d, scale_label(p_fm, ls), reduction="none")
                  * kd_weight.detach()).mean()
        total = total + lw * kd
        parts["loss/kd"] = kd.detach()
        unused = 0.0 * z_d2.sum()
        if mode == "ah_sa":
            if p_sa is None:
                raise ValueError("mode 'ah_sa' needs the student adapter's predictions")
            sa_kd = bce(p_sa.detach(), z_d2)
            total = total + sa_weight * sa_kd
            parts["loss/sa_kd"] = sa_kd.detach()
            unused = 0.0
    total = total + unused
    parts["loss/total"] = total.detach()
    return total, parts
