"""The plain-loop anchor: DeepFM and DCN as a minimal hand-written PyTorch loop.

One embedding table for every sparse field (per-field offsets), dense fields as raw values next
to the flattened embeddings, dense Adam on every parameter, batches sliced from in-memory
tensors, one pass in arrival order. No framework: what exfm's trainer is measured against
(``bench/train.py``). Importable by the bench only; exfm never imports it.

    from plain import run_plain
    run_plain("DeepFM", schema, train_table, eval_table, batch=4096, lr=1e-3)
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

INFER_PASSES = 3  # inference: best of this many passes over the eval day (exfm's too)


def _tensors(table, schema, label: str):
    """(ids (N, Fs) int64, dense (N, Fd) float32, y (N,) float32) from a pyarrow Table."""
    ids = np.stack([table.column(f.name).fill_null(-1).to_numpy().astype(np.int64)
                    for f in schema.sparse], axis=1)
    dense = (np.stack([table.column(c).cast("float64").fill_null(0.0).to_numpy()
                       for c in schema.dense], axis=1).astype(np.float32)
             if schema.dense else np.zeros((table.num_rows, 0), np.float32))
    y = table.column(label).cast("float64").to_numpy().astype(np.float32)
    return torch.from_numpy(ids), torch.from_numpy(dense), torch.from_numpy(y)


class PlainCTR(nn.Module):
    """DeepFM (first order + FM + DNN) or DCN v1 (cross || DNN, one output layer)."""

    def __init__(self, kind: str, vocabs: list[int], n_dense: int, dim: int,
                 hidden: list[int], cross_layers: int):
        super().__init__()
        self.kind = kind
        offs = np.concatenate([[0], np.cumsum(vocabs)[:-1]]).astype(np.int64)
        self.register_buffer("offsets", torch.from_numpy(offs))
        self.register_buffer("sizes", torch.tensor(vocabs, dtype=torch.long))
        self.total = int(sum(vocabs))
        self.emb = nn.Embedding(self.total + 1, dim)
        nn.init.normal_(self.emb.weight, std=0.01)
        width = len(vocabs) * dim + n_dense
        layers, d = [], width
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.dnn = nn.Sequential(*layers)
        if kind == "DeepFM":
            self.first = nn.Embedding(self.total + 1, 1)
            nn.init.zeros_(self.first.weight)
            self.dense_lin = nn.Linear(n_dense, 1) if n_dense else None
            self.out = nn.Linear(d, 1)
        else:
            self.w = nn.Parameter(torch.randn(cross_layers, width) * width ** -0.5)
            self.b = nn.Parameter(torch.zeros(cross_layers, width))
            self.out = nn.Linear(d + width, 1)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        ok = (ids >= 0) & (ids < self.sizes)
        return torch.where(ok, ids + self.offsets, self.total)

    def forward(self, ids: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        r = self.rows(ids)
        v = self.emb(r)  # (B, F, D)
        x0 = torch.cat([v.flatten(1), dense], dim=1)
        if self.kind == "DeepFM":
            s = v.sum(1)
            fm = 0.5 * (s * s - (v * v).sum(1)).sum(1, keepdim=True)
            z = self.first(r).sum(1) + fm + self.out(self.dnn(x0))
            if self.dense_lin is not None:
                z = z + self.dense_lin(dense)
            return z.squeeze(1)
        x = x0
        for i in range(self.w.shape[0]):
            x = x0 * (x @ self.w[i]).unsqueeze(1) + self.b[i] + x
        return self.out(torch.cat([x, self.dnn(x0)], dim=1)).squeeze(1)


def tower_ceiling(width: int, hidden: list[int], *, batch: int = 4096, steps: int = 30,
                  bf16: bool = False, seed: int = 0) -> float:
    """Rows/s of the DNN tower alone (``width`` -> ``hidden`` -> 1, Linear + ReLU), forward and
    backward at ``batch`` on random input: no embeddings, no loss terms, no optimizer. Every
    library's DeepFM or DCN of these sizes runs these GEMMs each step, so no trainer of them can
    go faster than this on this CPU (in fp32; ``bf16``: under CPU bf16 autocast)."""
    torch.manual_seed(seed)
    layers, d = [], width
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    tower = nn.Sequential(*layers, nn.Linear(d, 1))
    x = torch.randn(batch, width, requires_grad=True)
    ctx = (torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu",
                                                                                    enabled=False))

    def step():
        with ctx:
            z = tower(x)
        z.float().sum().backward()

    for _ in range(3):  # warm-up: oneDNN primitives, allocator
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def run_plain(kind: str, schema, train_table, eval_table, *, label: str = "click",
              batch: int = 4096, lr: float = 1e-3, dim: int = 16,
              hidden: list[int] = (256, 128), cross_layers: int = 3, seed: int = 0) -> dict:
    """Train one pass, evaluate; the timed part is tensors-from-table + the loop, like exfm's."""
    torch.manual_seed(seed)
    model = PlainCTR(kind, [f.vocab for f in schema.sparse], len(schema.dense), dim,
                     list(hidden), cross_layers)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    c0, t0 = time.process_time(), time.perf_counter()
    ids, dense, y = _tensors(train_table, schema, label)
    n = len(y)
    model.train()
    for i in range(0, n, batch):
        z = model(ids[i:i + batch], dense[i:i + batch])
        loss = nn.functional.binary_cross_entropy_with_logits(z, y[i:i + batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    ids_e, dense_e, y_e = _tensors(eval_table, schema, label)
    model.eval()
    inf_s = float("inf")
    for _ in range(INFER_PASSES):  # best of a few passes, as exfm's (bench/train.py)
        t1 = time.perf_counter()
        with torch.inference_mode():
            p = torch.cat([torch.sigmoid(model(ids_e[i:i + 8192], dense_e[i:i + 8192]))
                           for i in range(0, len(y_e), 8192)])
        inf_s = min(inf_s, time.perf_counter() - t1)
    return {"lib": "plain loop", "model": kind, "rows": n, "seconds": secs,
            "examples_per_s": n / secs, "cpu_seconds": cpu, "examples_per_cpu_s": n / cpu,
            "auc": _auc(y_e.numpy(), p.numpy()), "infer_examples_per_s": len(y_e) / inf_s,
            "params": sum(p.numel() for p in model.parameters())}
