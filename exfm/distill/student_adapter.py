"""Student Adapter (SA, METHOD.md eq. 6): a small MLP from the FM's prediction to an adapted one,
trained alone on the fresh true labels, one step per streaming batch (Algorithm 1 step i).

Beyond the paper's eq. 6, the SA also sees cheap signals of how stale the FM is and where the row
comes from (:func:`sa_context`): the freshness gap in days (``fm_age_days`` next to the FM's
predictions; 1, a daily FM, when absent; ``distillation.sa_freshness_gap``), the row's domain and
stage (the VM's categorical inputs, when its slice spans several) and the dense columns named in
``distillation.sa_columns`` that the VM reads (item age, where declared). They enter as an
additive logit correction that starts at zero, so the SA still starts as the FM itself, and
(``distillation.sa_trust_ah``) as a per-row trust t(c) in (0, 2) of the FM's logit, starting at 1,
which also weights the AH's distillation term of the row (:meth:`StudentAdapter.trust`).
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

    def __init__(self, hidden: int = 16, n_dense: int = 0, categories: list[int] | None = None,
                 cat_dim: int = 4, trust: bool = False):
        super().__init__()
        self.g = MLP(1, [hidden], 1)
        nn.init.zeros_(self.g.net[-1].weight)
        nn.init.zeros_(self.g.net[-1].bias)
        self.cats = nn.ModuleList(nn.Embedding(n, cat_dim) for n in (categories or []))
        width = n_dense + cat_dim * len(self.cats)
        self.ctx = MLP(width, [hidden], 1) if width else None
        if self.ctx is not None:  # the correction starts at zero: p_SA = p_FM at step 0
            nn.init.zeros_(self.ctx.net[-1].weight)
            nn.init.zeros_(self.ctx.net[-1].bias)
        # trust t(c) = 2 sigmoid(MLP_t(c)) in (0, 2) scales the FM's (adapted) logit per row;
        # it starts at 1, and where the fresh labels say the FM's logit carries less, it shrinks
        self.tr = MLP(width, [hidden], 1) if (trust and width) else None
        if self.tr is not None:
            nn.init.zeros_(self.tr.net[-1].weight)
            nn.init.zeros_(self.tr.net[-1].bias)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """An SA saved without context weights (before the staleness signals), or with context
        inputs of another shape (e.g. saved with ``sa_freshness_gap`` on, loaded with it off),
        loads with its context branch at the start: a zero correction. The FM-logit part ``g``
        must still match."""
        ctx = ("ctx.", "cats.", "tr.")
        own = self.state_dict()
        saved = {k: v for k, v in state_dict.items() if k.startswith(ctx)}
        if any(k not in own or own[k].shape != v.shape for k, v in saved.items()):
            saved = {}  # the context inputs changed: start that branch fresh
        base = {k: v for k, v in state_dict.items() if not k.startswith(ctx)}
        fresh = {k: v for k, v in own.items() if k.startswith(ctx)}
        return super().load_state_dict({**base, **fresh, **saved}, strict=strict, assign=assign)

    def forward(self, p_fm: torch.Tensor, ctx: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> torch.Tensor:
        """``ctx``: (dense (B, n_dense) float, ids (B, len(categories)) int) from
        :func:`sa_context`; None = the paper's SA (no context)."""
        u = prob_logit(p_fm).unsqueeze(-1)
        z = u + self.g(u)
        if self.ctx is not None and ctx is not None:
            c = self._ctx_input(ctx)
            if self.tr is not None:
                z = 2 * torch.sigmoid(self.tr(c)) * z
            z = z + self.ctx(c)
        return z.squeeze(-1)

    def _ctx_input(self, ctx: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        dense, ids = ctx
        return torch.cat([dense] + [e(ids[:, k].clamp(min=0)) for k, e in enumerate(self.cats)],
                         dim=1)

    @torch.no_grad()
    def trust(self, ctx: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor | None:
        """min(t(c), 1) per row (B,), detached: how far the fresh labels say the FM's logit is
        to be trusted in the row's context; None without a trust branch or a context."""
        if self.tr is None or ctx is None:
            return None
        return (2 * torch.sigmoid(self.tr(self._ctx_input(ctx)))).clamp(max=1.0).squeeze(-1)


def sa_shape(model: nn.Module, columns: list[str], gap: bool = True) -> dict:
    """The :class:`StudentAdapter` keyword arguments that fit :func:`sa_context` of ``model``
    (same ``columns`` and ``gap``)."""
    from exfm.data.vocab import InputSchema

    s = model.schema
    cats = [c.capacity for c in s.categorical] if isinstance(s, InputSchema) else []
    return {"n_dense": int(gap) + len([c for c in columns if c in s.dense]), "categories": cats}


def sa_context(model: nn.Module, batch: dict, columns: list[str], gap: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The SA's context of a VM ``batch``: dense (B, [1 +] k) = [log1p(freshness gap in days)
    when ``gap``, the ``columns`` the VM reads], ids (B, K) = the VM's categorical inputs
    (domain, stage)."""
    from exfm.data.vocab import InputSchema

    s, sparse = model.schema, batch["sparse"]
    B = sparse.shape[0]
    dense = [sparse.new_zeros((B, 0), dtype=torch.float32)]
    if gap:
        age = batch.get("fm_age")
        days = (age if age is not None else torch.ones(B, device=sparse.device)).float()
        dense.append(torch.log1p(days.clamp(min=0)).unsqueeze(1))
    idx = [s.dense.index(c) for c in columns if c in s.dense]
    if idx:
        dense.append(batch["dense"][:, idx])
    names = [c.column for c in s.categorical] if isinstance(s, InputSchema) else []
    cols = [s.sparse_names.index(c) for c in names]
    ids = sparse[:, cols] if cols else sparse.new_zeros((B, 0))
    return torch.cat(dense, dim=1), ids


def student_adapter_step(sa: StudentAdapter, optimizer: torch.optim.Optimizer,
                         p_fm: torch.Tensor, y: torch.Tensor,
                         ctx: tuple[torch.Tensor, torch.Tensor] | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1 (i) and (ii): one step of SA on L_SA = BCE(y, logit_SA), then sg(p_SA) from
    the *updated* SA. Returns (L_SA detached, p_SA detached (B,))."""
    p_fm = p_fm.detach()
    loss = F.binary_cross_entropy_with_logits(sa(p_fm, ctx), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        p_sa = torch.sigmoid(sa(p_fm, ctx))
    return loss.detach(), p_sa
