"""Vertical models (students, served): a backbone h = backbone(x), a serving head and two
distillation heads (the Auxiliary Head MLP_d and the Student-Adapter head MLP_d2, METHOD.md eqs
3-7). Serving runs the serving head only: ``forward(batch) -> (B, 1)``.

Backbones (``VMConfig.model``), each reading ``schema.fields_for("vm")``:
    fam        FM (Rendle): h = [w0 + sum_i w_i, 0.5 ((sum_i v_i)^2 - sum_i v_i^2)]   (1 + D)
    fmfam      FmFM:        h = [linear, sum_{i<j} (v_i W_ij) (.) v_j]                   (1 + D)
    deepfam    DeepFM:      h = [linear, FM vector, DNN(flatten v)]                (1 + D + H)
    dlrm       DLRM: dense bottom MLP, pairwise dots of (dense, sparse, pooled sequences),
               top MLP                                                                  (H)
    two_tower  h = u (.) i, u = MLP(user-side fields), i = MLP(item-side fields)          (H)
The serving head on fam/fmfam/two_tower starts as a plain sum over h (weights 1, bias 0), i.e. at
the textbook model (FM, FmFM, dot product); deepfam's head starts with weight 1 on its FM part.

Two-tower field split: item side = the sparse fields that sequences hold ids of (the target item)
plus fields whose name contains item/ad/video/movie/product/creative/doc; user side = the rest
(user, context, dense, sequences). If a side would be empty the fields are split in half.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from exfm.config.kinds import VM_KINDS
from exfm.data.schema import DatasetSchema
from exfm.models.blocks import MLP, cpu_bf16_layers
from exfm.models.embeddings import FieldEncoder, LinearTerm, set_sparse_gradients
from exfm.models.gradient_scaling import scale_gradient
from exfm.models.interactions import DotInteraction, FMInteraction, FmFMInteraction

VM_HPARAMS = ("embed_dim", "vm_hidden", "head_hidden", "dropout", "embedding_optimizer",
              "vm_bf16_min_work")
_ITEM_WORDS = re.compile(r"item|(^|_)ad(_|$)|video|movie|product|creative|doc")


class FMBackbone(nn.Module):
    """fam / fmfam / deepfam: (B, F, D) field vectors -> h (B, 1 + D [+ H]).

    Args:
        schema: VM fields. dim: D. interaction: "fm" | "fmfm". deep: DNN widths or None.
    """

    def __init__(self, schema: DatasetSchema, dim: int, interaction: str,
                 deep: list[int] | None = None, dropout: float = 0.0):
        super().__init__()
        self.encoder = FieldEncoder(schema, dim)
        self.linear = LinearTerm(schema)
        F = self.encoder.num_fields
        self.interaction = FMInteraction() if interaction == "fm" else FmFMInteraction(F, dim)
        self.deep = MLP(F * dim, deep, None, dropout) if deep is not None else None
        self.sum_dims = 1 + dim
        self.out_dim = 1 + dim + (self.deep.out_dim if self.deep is not None else 0)

    def forward(self, batch: dict) -> torch.Tensor:
        fields = self.encoder.parts(batch)
        if isinstance(self.interaction, FMInteraction):  # FM and DNN read the parts: no join
            v = None
            fm = FMInteraction.from_parts(fields.sparse, fields.dense,
                                          self.encoder.dense_vectors, fields.pooled)
        else:
            v = self.encoder.join(fields)
            fm = self.interaction(v)
        parts = [self.linear(batch), fm]
        if self.deep is not None:
            parts.append(self.encoder.mlp(self.deep, fields,
                                          flat=None if v is None else v.flatten(1)))
        return torch.cat(parts, dim=1)


class DLRMBackbone(nn.Module):
    """DLRM: bottom MLP(dense) -> D, stacked with sparse/sequence vectors (B, F+1, D), pairwise
    dots (upper triangle) concatenated with the dense vector, top MLP -> h (B, H)."""

    def __init__(self, schema: DatasetSchema, dim: int, hidden: list[int], dropout: float = 0.0):
        super().__init__()
        self.encoder = FieldEncoder(schema.model_copy(update={"dense": []}), dim)
        self.bottom = MLP(len(schema.dense), [2 * dim], dim) if schema.dense else None
        F = self.encoder.num_fields + (1 if self.bottom is not None else 0)
        self.dots = DotInteraction(F)
        self.top = MLP(F * (F - 1) // 2 + (dim if self.bottom is not None else 0), hidden,
                       None, dropout)
        self.sum_dims = 0
        self.out_dim = self.top.out_dim

    def forward(self, batch: dict) -> torch.Tensor:
        v = self.encoder(batch)
        if self.bottom is None:
            return self.top(self.dots(v))
        d = self.bottom(batch["dense"])
        v = torch.cat([d.unsqueeze(1), v], dim=1)
        return self.top(torch.cat([d, self.dots(v)], dim=1))


def two_tower_split(schema: DatasetSchema) -> tuple[list[int], list[int]]:
    """Indices into the encoder's fields (sparse, dense, sequences): (user side, item side)."""
    targets = {q.of for q in schema.sequences}
    names = schema.sparse_names + list(schema.dense) + [q.name for q in schema.sequences]
    n_sparse = len(schema.sparse_names)
    item = [k for k, n in enumerate(names)
            if k < n_sparse and (n in targets or _ITEM_WORDS.search(n.lower()))]
    user = [k for k in range(len(names)) if k not in item]
    if not item or not user:
        half = max(1, len(names) // 2)
        user, item = list(range(half)), list(range(half, len(names)))
    if not item:  # a single field: both towers read it
        item = user
    return user, item


class TwoTowerBackbone(nn.Module):
    """Two towers over a field split (:func:`two_tower_split`): h = u (.) i, (B, H)."""

    def __init__(self, schema: DatasetSchema, dim: int, hidden: list[int], dropout: float = 0.0):
        super().__init__()
        self.encoder = FieldEncoder(schema, dim)
        user, item = two_tower_split(schema)
        self.register_buffer("user_idx", torch.tensor(user), persistent=False)
        self.register_buffer("item_idx", torch.tensor(item), persistent=False)
        hidden = list(hidden) or [dim]
        self.user = MLP(len(user) * dim, hidden[:-1], hidden[-1], dropout)
        self.item = MLP(len(item) * dim, hidden[:-1], hidden[-1], dropout)
        self.sum_dims = hidden[-1]
        self.out_dim = hidden[-1]

    def forward(self, batch: dict) -> torch.Tensor:
        v = self.encoder(batch)
        u = self.user(v[:, self.user_idx].flatten(1))
        i = self.item(v[:, self.item_idx].flatten(1))
        return u * i


def _backbone(kind: str, schema: DatasetSchema, hp: dict) -> nn.Module:
    D, H, drop = hp["embed_dim"], list(hp["vm_hidden"]), hp["dropout"]
    if kind == "fam":
        return FMBackbone(schema, D, "fm")
    if kind == "fmfam":
        return FMBackbone(schema, D, "fmfm")
    if kind == "deepfam":
        return FMBackbone(schema, D, "fm", deep=H, dropout=drop)
    if kind == "dlrm":
        return DLRMBackbone(schema, D, H, drop)
    if kind == "two_tower":
        return TwoTowerBackbone(schema, D, H, drop)
    raise ValueError(f"unknown VM kind {kind!r}; expected one of {VM_KINDS}")


class VerticalModel(nn.Module):
    """Backbone + serving head + Auxiliary Head (MLP_d) + SA head (MLP_d2).

    Args:
        kind: one of :data:`VM_KINDS`. schema: the VM's fields (``fields_for("vm")``).
        task: the one label it serves. hp: the :data:`VM_HPARAMS` values. name: the VM's name.

    ``forward(batch) -> (B, 1)`` serving logits (what is served and evaluated).
    ``heads(batch, gs) -> (z_s, z_d, z_d2)`` each (B,), with the gradient from the two
    distillation heads into h scaled by ``gs`` (GS, eq. 5).

    Example:
        >>> vm = build_vm(VMConfig(name="v", model="fam"), schema, load_config())  # doctest: +SKIP
        >>> vm(batch).shape                                                        # doctest: +SKIP
        torch.Size([512, 1])
    """

    role = "vm"

    def __init__(self, kind: str, schema: DatasetSchema, task: str, hp: dict, name: str = ""):
        super().__init__()
        self.kind, self.schema, self.task, self.hp, self.name = kind, schema, task, dict(hp), name
        self.tasks = [task]
        self.backbone = _backbone(kind, schema, hp)
        H, head_hidden = self.backbone.out_dim, list(hp["head_hidden"])
        self.serving_head = MLP(H, head_hidden, 1)
        self.aux_head = MLP(H, head_hidden, 1)
        self.sa_head = MLP(H, head_hidden, 1)
        if not head_hidden and self.backbone.sum_dims:
            for head in (self.serving_head, self.aux_head, self.sa_head):
                lin = head.net[-1]
                with torch.no_grad():
                    lin.weight[:, : self.backbone.sum_dims] = 1.0
                    lin.bias.zero_()
        set_sparse_gradients(self, hp.get("embedding_optimizer", "sparse_adam") == "sparse_adam")
        # bf16 for its big MLP layers on a CPU that has it (0, or a snapshot older than the key:
        # every layer fp32); the trainer sets it from each day's config
        cpu_bf16_layers(self, int(hp.get("vm_bf16_min_work", 0)))

    @torch.no_grad()
    def init_output_bias(self, prior: torch.Tensor) -> None:
        """Cold start: every head's bias = logit(prior), prior (1,) the positive rate."""
        z = float(torch.logit(prior.float().clamp(1e-4, 0.5)).reshape(-1)[0])
        for head in (self.serving_head, self.aux_head, self.sa_head):
            head.net[-1].bias.fill_(z)

    def forward(self, batch: dict, gs: float | None = None):
        """``gs=None``: serving logits (B, 1). Else :meth:`heads` (through ``__call__``, so a
        DDP wrapper sees the training forward too)."""
        if gs is not None:
            return self.heads(batch, gs)
        return self.serving_head(self.backbone(batch))

    def heads(self, batch: dict, gs: float = 1.0) -> tuple[torch.Tensor, ...]:
        """(z_s, z_d, z_d2), each (B,); GS = ``gs`` on the distillation heads' path into h."""
        h = self.backbone(batch)
        hd = h.detach() if gs == 0 else scale_gradient(h, gs)  # 0: the heads never pull h
        return (self.serving_head(h).squeeze(-1), self.aux_head(hd).squeeze(-1),
                self.sa_head(hd).squeeze(-1))
