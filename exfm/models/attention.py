"""Attention over behaviour sequences: DIN target attention and DMIN's multi-interest extractor."""

from __future__ import annotations

import torch
from torch import nn

from exfm.models.blocks import MLP


class TargetAttention(nn.Module):
    """DIN: a_j = MLP([e_t, e_j, e_t - e_j, e_t * e_j]); padding masked; no softmax; sum_j a_j e_j.

    Args:
        dim: D. hidden: widths of the scoring MLP.

    Shapes: target (B, D), keys (B, L, D), mask (B, L) bool -> (B, D).

    Example:
        >>> att = TargetAttention(4)
        >>> att(torch.randn(2, 4), torch.randn(2, 5, 4), torch.ones(2, 5, dtype=torch.bool)).shape
        torch.Size([2, 4])
    """

    def __init__(self, dim: int, hidden: tuple[int, ...] = (36,)):
        super().__init__()
        self.score = MLP(4 * dim, hidden, 1)

    def forward(self, target: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = target.unsqueeze(1).expand_as(keys)
        a = self.score(torch.cat([t, keys, t - keys, t * keys], dim=-1)).squeeze(-1)  # (B, L)
        a = a * mask.to(a.dtype)
        return (a.unsqueeze(-1) * keys).sum(dim=1)


class BehaviourRefiner(nn.Module):
    """DMIN's refiner: multi-head self-attention + residual + LayerNorm, then FFN + residual + LN.

    Shapes: (B, L, D), mask (B, L) -> (B, L, D).
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pad = _safe_padding(mask)
        y, _ = self.attn(x, x, x, key_padding_mask=pad, need_weights=False)
        x = self.norm1(x + y)
        return self.norm2(x + self.ffn(x))


def _safe_padding(mask: torch.Tensor) -> torch.Tensor:
    """key_padding_mask (True = ignore); an all-padding row keeps one key to avoid NaN softmax."""
    pad = ~mask
    empty = pad.all(dim=1)
    if bool(empty.any()):
        pad = pad.clone()
        pad[empty, 0] = False
    return pad


class MultiInterestExtractor(nn.Module):
    """DMIN multi-interest extractor: H interests, each = self-attention head over the sequence,
    then a target attention whose query is the target embedding plus a position embedding,
    softmax under the padding mask. Output: the H interest vectors concatenated.

    Args:
        dim: D. interests: H. max_len: L (for the position embeddings).

    Shapes: target (B, D), seq (B, L, D), mask (B, L) -> (B, H * D).

    Example:
        >>> m = MultiInterestExtractor(4, 2, 5)
        >>> m(torch.randn(2, 4), torch.randn(2, 5, 4), torch.ones(2, 5, dtype=torch.bool)).shape
        torch.Size([2, 8])
    """

    def __init__(self, dim: int, interests: int, max_len: int):
        super().__init__()
        self.H, self.D = interests, dim
        self.qkv = nn.Linear(dim, 3 * interests * dim)
        self.position = nn.Parameter(torch.randn(max_len, dim) * 0.01)
        self.score = nn.ModuleList(MLP(4 * dim, (36,), 1) for _ in range(interests))

    def forward(self, target: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = seq.shape
        q, k, v = self.qkv(seq).view(B, L, 3, self.H, D).unbind(dim=2)  # (B, L, H, D) each
        q, k, v = (x.transpose(1, 2) for x in (q, k, v))  # (B, H, L, D)
        pad = _safe_padding(mask)
        logits = q @ k.transpose(-1, -2) / D ** 0.5  # (B, H, L, L)
        logits = logits.masked_fill(pad[:, None, None, :], float("-inf"))
        heads = torch.softmax(logits, dim=-1) @ v  # (B, H, L, D)
        query = (target.unsqueeze(1) + self.position[:L].unsqueeze(0))  # (B, L, D)
        out = []
        for h in range(self.H):
            keys = heads[:, h]
            s = self.score[h](torch.cat([query, keys, query - keys, query * keys], -1)).squeeze(-1)
            w = torch.softmax(s.masked_fill(pad, float("-inf")), dim=-1)
            w = w * mask.to(w.dtype)  # a row without history gets a zero interest
            out.append((w.unsqueeze(-1) * keys).sum(dim=1))
        return torch.cat(out, dim=-1)
