"""The foundation model (teacher): one large multi-task model over every field, fm_only included.

Kinds (``models.fm``):
    dcn    DCN v1 cross net || deep MLP, parallel, then one linear layer to T logits.
    dcnv2  DCNv2 cross net (full rank, or a gated mixture of low-rank experts) || deep MLP.
    dmin   behaviour refiner + multi-interest extractor per sequence, concatenated with the other
           field vectors into a deep MLP (no sequence: an MLP over the field vectors).
    mtl    hard parameter sharing: a DCNv2 shared bottom, one MLP tower per task.
Sequences are pooled with DIN target attention (dcn, dcnv2, mtl). ``forward(batch) -> (B, T)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from exfm.config.kinds import FM_KINDS
from exfm.data.schema import DatasetSchema
from exfm.models.attention import BehaviourRefiner, MultiInterestExtractor
from exfm.models.blocks import MLP, cpu_bf16_autocast
from exfm.models.embeddings import FieldEncoder, set_sparse_gradients
from exfm.models.interactions import CrossNet, CrossNetV2, cpu_fp32

# Hyper-parameters an FM is rebuilt from (ModelsConfig field names).
FM_HPARAMS = ("fm_embed_dim", "fm_hidden", "fm_cross_layers", "fm_cross_rank", "fm_cross_experts",
              "fm_interests", "fm_tower_hidden", "dropout", "embedding_optimizer", "cpu_amp")


class FoundationModel(nn.Module):
    """The teacher. ``forward(batch) -> logits (B, T)``, one per task in ``tasks``.

    Args:
        kind: one of :data:`FM_KINDS`. schema: every field it reads. tasks: the T label names.
        hp: the :data:`FM_HPARAMS` values (a plain dict, so a snapshot can rebuild it).

    Example:
        >>> fm = build_fm(schema, ["click"], load_config())        # doctest: +SKIP
        >>> fm(batch).shape                                          # doctest: +SKIP
        torch.Size([512, 1])
    """

    role = "fm"

    def __init__(self, kind: str, schema: DatasetSchema, tasks: list[str], hp: dict):
        super().__init__()
        if kind not in FM_KINDS:
            raise ValueError(f"unknown FM kind {kind!r}; expected one of {FM_KINDS}")
        self.kind, self.schema, self.tasks, self.hp = kind, schema, list(tasks), dict(hp)
        D, T, drop = hp["fm_embed_dim"], len(tasks), hp["dropout"]
        seq_pool = "none" if kind == "dmin" else "target"
        self.encoder = FieldEncoder(schema, D, seq_pool=seq_pool)
        width = self.encoder.num_fields * D
        if kind == "dmin":
            H = hp["fm_interests"]
            heads = next(h for h in (4, 2, 1) if D % h == 0)
            self.refiners = nn.ModuleList(BehaviourRefiner(D, heads) for _ in schema.sequences)
            self.extractors = nn.ModuleList(MultiInterestExtractor(D, H, q.max_len)
                                            for q in schema.sequences)
            width += len(schema.sequences) * H * D
            self.deep = MLP(width, hp["fm_hidden"], None, drop)
            self.out = nn.Linear(self.deep.out_dim, T)
        else:
            self._build_cross(kind, width, tasks, hp)
        set_sparse_gradients(self, hp.get("embedding_optimizer", "sparse_adam") == "sparse_adam")

    def _build_cross(self, kind: str, width: int, tasks: list[str], hp: dict) -> None:
        drop, T = hp["dropout"], len(tasks)
        cross = (CrossNet(width, hp["fm_cross_layers"]) if kind == "dcn" else
                 CrossNetV2(width, hp["fm_cross_layers"], hp["fm_cross_rank"],
                            hp["fm_cross_experts"]))
        self.cross = cross
        self.deep = MLP(width, hp["fm_hidden"], None, drop)
        joined = width + self.deep.out_dim
        if kind == "mtl":
            self.towers = nn.ModuleList(MLP(joined, hp["fm_tower_hidden"], 1, drop)
                                        for _ in tasks)
        else:
            self.out = nn.Linear(joined, T)

    @torch.no_grad()
    def init_output_bias(self, prior: torch.Tensor) -> None:
        """Cold start: output biases = logit(prior), prior (T,) the positive rate per task."""
        z = torch.logit(prior.float().clamp(1e-4, 0.5))
        if self.kind == "mtl":
            for t, tower in enumerate(self.towers):
                tower.net[-1].bias.fill_(float(z[t]))
        else:
            self.out.bias.copy_(z.to(self.out.bias))

    def forward(self, batch: dict) -> torch.Tensor:
        if self.training:  # the trainer sets training's precision (train_fm_day's autocast)
            return self._forward(batch)
        # inference in the precision it trains in: bf16 autocast on a CPU that computes it
        # natively when hp["cpu_amp"] (models.cpu_amp; False in snapshots older than the key)
        with cpu_bf16_autocast(batch["sparse"], bool(self.hp.get("cpu_amp"))):
            return self._forward(batch)

    def _forward(self, batch: dict) -> torch.Tensor:
        fields = self.encoder.parts(batch)
        if self.kind == "dcn" and fields.dense is not None and self.fold_dense:
            # the DNN's first layer and the cross net fold the dense fields: no (B, F, D) join;
            # the cross net is matrix-vector work, so it runs in fp32 under CPU autocast
            deep = self.encoder.mlp(self.deep, fields)
            with cpu_fp32(deep):
                return self._dcn_folded(fields, deep.float())
        v = self.encoder.join(fields)  # (B, F, D)
        x0 = v.flatten(1)
        if self.kind == "dmin":
            interests = []
            seqs = self.encoder.sequence_embeddings(batch)
            for k, (e, mask) in enumerate(seqs):
                target = v[:, self.encoder.seq_of[k]]
                refined = self.refiners[k](e, mask)
                interests.append(self.extractors[k](target, refined, mask))
            extra = torch.cat(interests, dim=1) if interests else None
            return self.out(self.encoder.mlp(self.deep, fields, flat=x0, extra=extra))
        # the DNN's first layer folds the dense fields (FieldEncoder.mlp); the cross net reads x0
        deep = self.encoder.mlp(self.deep, fields, flat=x0)
        h = torch.cat([self.cross(x0), deep], dim=1)
        if self.kind == "mtl":
            return torch.cat([tower(h) for tower in self.towers], dim=1)
        return self.out(h)

    #: dcn: run the cross net and the output layer with the dense fields folded (the same
    #: function and gradients as the cross net over the joined fields; False = the joined form)
    fold_dense = True

    def _dcn_folded(self, fields, deep: torch.Tensor) -> torch.Tensor:
        """``out(cat[cross(x0), deep])`` of DCN v1 without the dense fields' D-wide blocks.

        Dense field j enters x0 as ``d_j v_j`` (a value times a learned vector). Through the cross
        layers ``x_{l+1} = x0 * (x_l . w_l) + b_l + x_l`` its block stays ``d_j v_j c_l + B_l``:
        ``c_l`` one scalar per row (``c_0 = 1``, ``c_{l+1} = c_l + x_l . w_l``) and ``B_l`` a
        constant (the sum of the earlier biases' blocks). So the layers run over the other fields'
        blocks (``(Fs + Fq) * D`` wide) plus ``c``, and the output layer takes ``c * d`` through
        the weight columns ``W_j v_j`` and ``W B_L`` in its bias, all built from the same
        parameters each call: ``Fd * (D - 1)`` fewer columns in every cross layer and the output.
        :meth:`forward` runs it in fp32 under CPU autocast (:func:`cpu_fp32`).
        """
        D, Fs, d = self.encoder.dim, fields.sparse.shape[1], fields.dense
        Fd, V = d.shape[1], self.encoder.dense_vectors  # V: (Fd, D)
        a, b = Fs * D, (Fs + Fd) * D
        rest = [fields.sparse.flatten(1)]
        if fields.pooled is not None:
            rest.append(fields.pooled.flatten(1))
        xs0 = torch.cat(rest, dim=1) if len(rest) > 1 else rest[0]
        xs, c, const = xs0, None, None  # c None = 1 for every row; const None = 0
        for w, bias in zip(self.cross.w, self.cross.b):
            u = (V * w[a:b].view(Fd, D)).sum(-1)  # (Fd,): v_j . (w_l's block j)
            du = d @ u  # (B,)
            s = xs @ torch.cat([w[:a], w[b:]]) + (du if c is None else c * du)  # x_l . w_l
            if const is not None:
                s = s + const @ w[a:b]
            xs = xs0 * s.unsqueeze(-1) + torch.cat([bias[:a], bias[b:]]) + xs
            c = 1.0 + s if c is None else c + s
            const = bias[a:b] if const is None else const + bias[a:b]
        W, width = self.out.weight, b + xs0.shape[1] - a  # (T, width + H)
        folded = (W[:, a:b].view(-1, Fd, D) * V).sum(-1)  # (T, Fd)
        cd = d if c is None else c.unsqueeze(-1) * d
        x = torch.cat([xs, cd, deep], dim=1)
        weight = torch.cat([W[:, :a], W[:, b:width], folded, W[:, width:]], dim=1)
        out_bias = self.out.bias if const is None else self.out.bias + W[:, a:b] @ const
        return F.linear(x, weight, out_bias)
