"""Feature interactions over field vectors (B, F, D): FM, FmFM, DCN v1/v2 cross, DLRM dots.

Each follows the reference formula in METHOD.md "Layer notes"; the per-dimension vectors are
returned (not summed) where a VM needs them as its backbone output h.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def cpu_fp32(x: torch.Tensor):
    """A context in which ops on ``x`` compute in fp32 when ``x`` is on a CPU under bf16
    autocast (``models.cpu_amp``); elsewhere a no-op. For matrix-vector work (DCN v1's cross
    layers: one dot product per row and layer): it does about one multiply-add per element it
    reads, so autocast's casts of the (B, F * D) input cost about as much as bf16 saves (the cast
    is as big as the product). docs/performance.md has the measure."""
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        return torch.autocast("cpu", enabled=False)
    return contextlib.nullcontext()


class FMInteraction(nn.Module):
    """Rendle's second-order term, per dimension: 0.5 * [(sum_i v_i)^2 - sum_i v_i^2].

    Summing the output over D gives sum_{i<j} <v_i, v_j>. Not TorchRec's
    ``FactorizationMachine`` (which flattens to (B, F*D) first).

    Shapes: (B, F, D) -> (B, D).

    Example:
        >>> v = torch.randn(2, 3, 4)
        >>> FMInteraction()(v).sum(1).shape
        torch.Size([2])
    """

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        s = v.sum(dim=1)
        return 0.5 * (s * s - (v * v).sum(dim=1))

    @staticmethod
    def from_parts(sparse: torch.Tensor, dense: torch.Tensor | None,
                   dense_vectors: torch.Tensor | None,
                   pooled: torch.Tensor | None = None) -> torch.Tensor:
        """The same term over field vectors that were never joined: sparse (B, Fs, D), dense
        values (B, Fd) with their vectors (Fd, D) (field j's vector is x_j v_j), pooled (B, Fq, D).
        sum_j x_j v_j = x @ V and sum_j (x_j v_j)^2 = x^2 @ V^2: no (B, Fd, D) tensor is built."""
        s, sq = sparse.sum(dim=1), (sparse * sparse).sum(dim=1)
        if dense is not None:
            s = s + dense @ dense_vectors
            sq = sq + (dense * dense) @ (dense_vectors * dense_vectors)
        if pooled is not None:
            s, sq = s + pooled.sum(dim=1), sq + (pooled * pooled).sum(dim=1)
        return 0.5 * (s * s - sq)


class FmFMInteraction(nn.Module):
    """FmFM: sum_{i<j} (v_i W_ij) (.) v_j, one D x D matrix per field pair, per dimension.

    Summing the output over D gives sum_{i<j} (v_i W_ij) . v_j; the lower-index field i is the one
    projected (W is not symmetric). W_ij starts at the identity, i.e. at plain FM.

    Args:
        num_fields: F. dim: D.

    Shapes: (B, F, D) -> (B, D).

    Example:
        >>> FmFMInteraction(3, 4)(torch.randn(2, 3, 4)).shape
        torch.Size([2, 4])
    """

    def __init__(self, num_fields: int, dim: int):
        super().__init__()
        i, j = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("left", i, persistent=False)
        self.register_buffer("right", j, persistent=False)
        eye = torch.eye(dim).expand(len(i), dim, dim).clone()
        self.W = nn.Parameter(eye)  # (P, D, D)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        vi = v[:, self.left]  # (B, P, D)
        vj = v[:, self.right]
        proj = torch.einsum("bpd,pde->bpe", vi, self.W)
        return (proj * vj).sum(dim=1)


class CrossNet(nn.Module):
    """DCN v1 cross layers: x_{l+1} = x0 * (w_l^T x_l) + b_l + x_l.

    Args:
        dim: width of x0 (= F * D). num_layers: L.

    Shapes: (B, dim) -> (B, dim).

    Example:
        >>> CrossNet(6, 2)(torch.randn(2, 6)).shape
        torch.Size([2, 6])
    """

    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.w = nn.ParameterList(nn.Parameter(torch.randn(dim) * dim ** -0.5)
                                  for _ in range(num_layers))
        self.b = nn.ParameterList(nn.Parameter(torch.zeros(dim)) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        with cpu_fp32(x0):  # matrix-vector work: bf16 does not pay on a CPU
            x = x0 = x0.float()
            for w, b in zip(self.w, self.b):
                x = x0 * (x @ w).unsqueeze(-1) + b + x
            return x


class CrossNetV2(nn.Module):
    """DCNv2 cross layers: x_{l+1} = x0 (.) (W_l x_l + b_l) + x_l.

    Full rank (``rank=None``): W_l in R^{dim x dim}. Low rank: a mixture of ``experts`` low-rank
    experts U_e (g(C_e g(V_e^T x_l))) with a softmax gate over experts (DCN-Mix, g = tanh).

    Args:
        dim: width of x0. num_layers: L. rank: None or r. experts: K (low rank only).

    Shapes: (B, dim) -> (B, dim).

    Example:
        >>> CrossNetV2(6, 2)(torch.randn(2, 6)).shape
        torch.Size([2, 6])
        >>> CrossNetV2(6, 2, rank=2, experts=3)(torch.randn(2, 6)).shape
        torch.Size([2, 6])
    """

    def __init__(self, dim: int, num_layers: int, rank: int | None = None, experts: int = 4):
        super().__init__()
        self.rank = rank
        if rank is None:
            self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers))
            for lin in self.layers:
                nn.init.normal_(lin.weight, std=dim ** -0.5 * 0.1)
                nn.init.zeros_(lin.bias)
        else:
            s = 1.0 / rank ** 0.5
            self.V = nn.ParameterList(nn.Parameter(torch.randn(experts, dim, rank) * dim ** -0.5)
                                      for _ in range(num_layers))
            self.C = nn.ParameterList(nn.Parameter(torch.randn(experts, rank, rank) * s)
                                      for _ in range(num_layers))
            self.U = nn.ParameterList(nn.Parameter(torch.randn(experts, rank, dim) * s * 0.1)
                                      for _ in range(num_layers))
            self.b = nn.ParameterList(nn.Parameter(torch.zeros(dim)) for _ in range(num_layers))
            self.gates = nn.ModuleList(nn.Linear(dim, experts, bias=False)
                                       for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        if self.rank is None:
            for lin in self.layers:
                x = x0 * lin(x) + x
            return x
        for V, C, U, b, gate in zip(self.V, self.C, self.U, self.b, self.gates):
            h = torch.tanh(torch.einsum("bd,edr->ber", x, V))
            h = torch.tanh(torch.einsum("ber,ers->bes", h, C))
            out = x0.unsqueeze(1) * (torch.einsum("bes,esd->bed", h, U) + b)  # (B, K, dim)
            g = torch.softmax(gate(x), dim=-1).unsqueeze(-1)  # (B, K, 1)
            x = (g * out).sum(dim=1) + x
        return x


class DotInteraction(nn.Module):
    """DLRM interaction: pairwise dot products of F vectors, upper triangle (no diagonal).

    Shapes: (B, F, D) -> (B, F (F - 1) / 2).

    Example:
        >>> DotInteraction(3)(torch.randn(2, 3, 4)).shape
        torch.Size([2, 3])
    """

    def __init__(self, num_fields: int):
        super().__init__()
        i, j = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("i", i, persistent=False)
        self.register_buffer("j", j, persistent=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        z = torch.bmm(v, v.transpose(1, 2))
        return z[:, self.i, self.j]
