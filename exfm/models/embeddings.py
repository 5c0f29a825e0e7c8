"""Embeddings: one fused table for all sparse fields, and the encoder that turns a batch into
field vectors (B, F, D).

Every sparse field owns a slice of one ``nn.Embedding`` (per-field offsets), so a batch needs a
single lookup. Row ``total`` is a padding row (zero, never trained) that takes ``-1`` (sequence
padding, nulls) and ids outside the field's vocab (ids a newer day introduced).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from exfm.data.schema import DatasetSchema
from exfm.models.blocks import MLP


class FieldParts(NamedTuple):
    """A batch's field vectors before they are joined (see :meth:`FieldEncoder.parts`)."""

    sparse: torch.Tensor  # (B, Fs, D)
    dense: torch.Tensor | None  # (B, Fd) raw values
    pooled: torch.Tensor | None  # (B, Fq, D)


class _IndexAddEmbedding(torch.autograd.Function):
    """``weight[rows]`` whose backward is one ``index_add_`` into a dense gradient: the same
    gradient as ``F.embedding``'s (the padding row's stays zero), built 3-4x faster on CPU than
    ``embedding_dense_backward`` (docs/performance.md)."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, weight: torch.Tensor, padding_idx: int) -> torch.Tensor:
        ctx.save_for_backward(rows)
        ctx.shape, ctx.padding_idx = weight.shape, padding_idx
        return weight.index_select(0, rows.reshape(-1)).view(*rows.shape, weight.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (rows,) = ctx.saved_tensors
        g = grad.new_zeros(ctx.shape).index_add_(0, rows.reshape(-1),
                                                 grad.reshape(-1, ctx.shape[1]))
        g[ctx.padding_idx] = 0
        return None, g, None


class FusedEmbedding(nn.Module):
    """All sparse fields in one table, with per-field offsets and a shared padding row.

    Args:
        vocabs: vocab size of each field, in schema order. dim: embedding width.
        sparse_grad: emit sparse gradients (the trainer's embedding optimizer expects them).
        init_std: std of the normal init.

    Shapes: ids (B, ..., ) of field ``field`` or (B, F) of all fields -> (..., D).

    Example:
        >>> emb = FusedEmbedding([10, 5], 4)
        >>> emb(torch.tensor([[3, -1]])).shape
        torch.Size([1, 2, 4])
    """

    def __init__(self, vocabs: list[int], dim: int, sparse_grad: bool = True,
                 init_std: float = 0.01):
        super().__init__()
        self.vocabs = list(vocabs)
        self.dim = dim
        self.total = int(sum(vocabs))
        offs = [0]
        for v in vocabs[:-1]:
            offs.append(offs[-1] + v)
        self.register_buffer("offsets", torch.tensor(offs, dtype=torch.long), persistent=False)
        self.register_buffer("sizes", torch.tensor(vocabs, dtype=torch.long), persistent=False)
        self.table = nn.Embedding(self.total + 1, dim, padding_idx=self.total, sparse=sparse_grad)
        nn.init.normal_(self.table.weight, std=init_std)
        with torch.no_grad():
            self.table.weight[self.total].zero_()

    def rows(self, ids: torch.Tensor, field: int | None = None) -> torch.Tensor:
        """Raw ids -> rows of the fused table (padding row for -1 or out-of-vocab)."""
        if field is None:  # (B, F): one column per field
            off, size = self.offsets, self.sizes
        else:
            off, size = self.offsets[field], self.sizes[field]
        ok = (ids >= 0) & (ids < size)
        return torch.where(ok, ids + off, torch.full_like(ids, self.total))

    def forward(self, ids: torch.Tensor, field: int | None = None) -> torch.Tensor:
        w = self.table.weight
        if self.table.sparse or w.device.type != "cpu" or not (torch.is_grad_enabled()
                                                                and w.requires_grad):
            return self.table(self.rows(ids, field))
        return _IndexAddEmbedding.apply(self.rows(ids, field), w, self.table.padding_idx)


class FieldEncoder(nn.Module):
    """A batch -> field vectors (B, F, D), F = sparse + dense + sequence fields (schema order).

    Sparse field: its embedding. Dense field j: value * v_j (a learned vector per field, Rendle's
    treatment of real-valued features). Sequence field: a pooled vector of its ids' embeddings
    (shared with the sparse field it holds ids of). Pooling: ``"mean"`` over non-padding ids, or
    ``"target"`` (DIN target attention, query = the row's own id of that sparse field), or
    ``"none"`` (sequences are left to the caller: see :meth:`sequence_embeddings`).

    Args:
        schema: the fields to read. dim: D. seq_pool: "mean" | "target" | "none".
        sparse_grad: see :class:`FusedEmbedding`.

    Example:
        >>> enc = FieldEncoder(schema, 8)                          # doctest: +SKIP
        >>> enc(batch).shape  # (B, len(sparse) + len(dense) + len(sequences), 8)  # doctest: +SKIP
    """

    def __init__(self, schema: DatasetSchema, dim: int, seq_pool: str = "mean",
                 sparse_grad: bool = True):
        super().__init__()
        if seq_pool not in ("mean", "target", "none"):
            raise ValueError(f"seq_pool must be mean|target|none, got {seq_pool!r}")
        self.dim, self.seq_pool = dim, seq_pool
        self.sparse_names = schema.sparse_names
        self.seq_names = [q.name for q in schema.sequences]
        self.seq_of = [self.sparse_names.index(q.of) for q in schema.sequences]
        self.n_dense = len(schema.dense)
        if not self.sparse_names:
            raise ValueError(f"schema '{schema.name}' has no sparse fields to embed")
        self.embedding = FusedEmbedding([f.vocab for f in schema.sparse], dim, sparse_grad)
        self.dense_vectors = (nn.Parameter(torch.randn(self.n_dense, dim) * 0.01)
                              if self.n_dense else None)
        if seq_pool == "target":
            from exfm.models.attention import TargetAttention

            self.attention = nn.ModuleList(TargetAttention(dim) for _ in self.seq_names)

    @property
    def num_fields(self) -> int:
        pooled = len(self.seq_names) if self.seq_pool != "none" else 0
        return len(self.sparse_names) + self.n_dense + pooled

    def sequence_embeddings(self, batch: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per sequence field: (embeddings (B, L, D), mask (B, L) bool, True = real id)."""
        out = []
        for name, f in zip(self.seq_names, self.seq_of):
            ids = batch["seq"][name]
            out.append((self.embedding(ids, f), (ids >= 0) & (ids < self.embedding.sizes[f])))
        return out

    def parts(self, batch: dict) -> FieldParts:
        """The field vectors before they are joined: (sparse (B, Fs, D), dense values (B, Fd) or
        None, pooled sequences (B, Fq, D) or None)."""
        sparse = self.embedding(batch["sparse"])  # (B, Fs, D)
        dense = batch["dense"] if self.n_dense else None
        pooled = None
        if self.seq_pool != "none" and self.seq_names:
            vecs = []
            for k, (e, mask) in enumerate(self.sequence_embeddings(batch)):
                if self.seq_pool == "mean":
                    m = mask.unsqueeze(-1).to(e.dtype)
                    vecs.append((e * m).sum(1) / m.sum(1).clamp_min(1.0))
                else:
                    vecs.append(self.attention[k](sparse[:, self.seq_of[k]], e, mask))
            pooled = torch.stack(vecs, dim=1)  # (B, Fq, D)
        return FieldParts(sparse, dense, pooled)

    def join(self, parts: FieldParts) -> torch.Tensor:
        """(B, F, D): sparse, then value * v_j per dense field, then pooled sequences."""
        out = [parts.sparse]
        if parts.dense is not None:
            out.append(parts.dense.unsqueeze(-1) * self.dense_vectors)  # (B, Fd, D)
        if parts.pooled is not None:
            out.append(parts.pooled)
        return torch.cat(out, dim=1) if len(out) > 1 else out[0]

    def forward(self, batch: dict) -> torch.Tensor:
        return self.join(self.parts(batch))

    def mlp(self, mlp: nn.Module, parts: FieldParts, flat: torch.Tensor | None = None,
            extra: torch.Tensor | None = None) -> torch.Tensor:
        """``mlp(cat([join(parts).flatten(1), extra], 1))``, computed with every dense field's
        D inputs folded into one.

        The first layer's block of dense field j (W_j, H x D) only ever sees value_j * v_j, so
        W_j (value_j v_j) = value_j (W_j v_j): the layer runs over (Fs + Fq) * D + Fd inputs with
        the weight columns W_j v_j, built from the same parameters each call. The same function
        and gradients as the wide layer, less work (Fd * (D - 1) fewer inputs per row).

        Args:
            mlp: an :class:`~exfm.models.blocks.MLP` whose input is the joined fields (+ extra).
            flat: ``join(parts).flatten(1)`` when the caller has it (used without dense fields).
            extra: (B, E) inputs after the fields, or None.
        """
        first = mlp.net[0] if len(mlp.net) else None
        if parts.dense is None or not isinstance(first, nn.Linear):
            x = flat if flat is not None else self.join(parts).flatten(1)
            return mlp(x if extra is None else torch.cat([x, extra], dim=1))
        D, Fs, Fd = self.dim, parts.sparse.shape[1], parts.dense.shape[1]
        W = first.weight  # (H, F * D [+ E])
        a, b = Fs * D, (Fs + Fd) * D
        folded = (W[:, a:b].unflatten(1, (Fd, D)) * self.dense_vectors).sum(-1)  # (H, Fd)
        xs, ws = [parts.sparse.flatten(1), parts.dense], [W[:, :a], folded]
        rest = [t for t in (None if parts.pooled is None else parts.pooled.flatten(1), extra)
                if t is not None]
        if rest:
            xs += rest
            ws.append(W[:, b:])
        x, w = torch.cat(xs, dim=1), torch.cat(ws, dim=1)
        if not isinstance(mlp, MLP):
            return mlp.net[1:](F.linear(x, w, first.bias))
        if mlp.bf16(x, w.shape[0]):  # its layers may compute in bf16 (cpu_bf16_layers)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                h = F.linear(x, w, first.bias)
        else:
            h = F.linear(x, w, first.bias)
        return mlp.run(h, start=1)


class LinearTerm(nn.Module):
    """First-order term w0 + sum_i w_i (+ sum_j u_j x_j for dense fields): (B,) per row.

    Example:
        >>> LinearTerm(schema)(batch).shape  # (B, 1)      # doctest: +SKIP
    """

    def __init__(self, schema: DatasetSchema, sparse_grad: bool = True):
        super().__init__()
        self.weights = FusedEmbedding([f.vocab for f in schema.sparse], 1, sparse_grad, init_std=0.0)
        self.dense = nn.Linear(len(schema.dense), 1) if schema.dense else None
        if self.dense is not None:  # zero like the sparse weights: nn.Linear's U(+-1/sqrt(n))
            nn.init.zeros_(self.dense.weight)  # is +-1 for one dense field, a random-sign
            nn.init.zeros_(self.dense.bias)  # first-order effect a short day cannot undo
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: dict) -> torch.Tensor:
        out = self.weights(batch["sparse"]).sum(dim=1) + self.bias  # (B, 1)
        if self.dense is not None:
            out = out + self.dense(batch["dense"])
        return out


def set_sparse_gradients(model: nn.Module, sparse: bool) -> None:
    """Switch every embedding table of ``model`` to sparse (or dense) gradients."""
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            m.sparse = sparse
