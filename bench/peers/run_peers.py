"""Train the peers' DeepFM and DCN one pass on bench/train.py's Parquet files; print JSON lines.

Runs inside bench/.venv-peers (created by bench/peers/install.sh), never in the project venv:
    bench/.venv-peers/bin/python bench/peers/run_peers.py SPEC.json

SPEC (written by bench/train.py): train/eval Parquet paths, the sparse fields with vocab sizes,
the dense fields, the label, embedding dim, DNN widths, cross layers, batch size, threads, lr.
Each line printed: {"lib", "model", "rows", "seconds", "examples_per_s", "auc"}.

Timing covers each library's own training entry point on in-memory data:
- DeepCTR-Torch: ``model.fit(x_dict, y, batch_size, epochs=1)`` (its input stacking, its
  DataLoader, its loop).
- FuxiCTR: ``model.train_step(batch)`` over pre-built tensor batches (its Ray-based Parquet loader
  is skipped, which only favours it): forward, BCE, backward, grad-norm clip, Adam step.
"""

from __future__ import annotations

import json
import sys
import time
from collections import OrderedDict

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score


def load(spec):
    sparse = [name for name, _ in spec["sparse"]]
    want = sparse + spec["dense"] + [spec["label"]]
    train = pd.read_parquet(spec["train"], columns=want)
    ev = pd.read_parquet(spec["eval"], columns=want)
    return train, ev


# -- DeepCTR-Torch ------------------------------------------------------------------------------
def run_deepctr(spec, train, ev, kind):
    from deepctr_torch.inputs import DenseFeat, SparseFeat
    from deepctr_torch.models import DCN, DeepFM

    D = spec["embed_dim"]
    cols = [SparseFeat(n, vocabulary_size=v, embedding_dim=D) for n, v in spec["sparse"]]
    cols += [DenseFeat(n, 1) for n in spec["dense"]]
    torch.manual_seed(0)
    if kind == "DeepFM":
        model = DeepFM(cols, cols, dnn_hidden_units=tuple(spec["hidden"]), task="binary",
                       device="cpu", l2_reg_embedding=0.0, l2_reg_linear=0.0, seed=0)
    else:
        model = DCN(cols, cols, cross_num=spec["cross_layers"], cross_parameterization="vector",
                    dnn_hidden_units=tuple(spec["hidden"]), task="binary", device="cpu",
                    l2_reg_embedding=0.0, l2_reg_linear=0.0, l2_reg_cross=0.0, seed=0)
    model.compile(torch.optim.Adam(model.parameters(), lr=spec["lr"]), "binary_crossentropy")
    names = [n for n, _ in spec["sparse"]] + spec["dense"]
    x = {n: train[n].to_numpy() for n in names}
    y = train[spec["label"]].to_numpy().astype(np.float32)
    c0, t0 = time.process_time(), time.perf_counter()
    model.fit(x, y, batch_size=spec["batch_size"], epochs=1, verbose=0, shuffle=False)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    p = model.predict({n: ev[n].to_numpy() for n in names}, batch_size=8192).reshape(-1)
    return secs, cpu, roc_auc_score(ev[spec["label"]].to_numpy(), p)


# -- FuxiCTR ------------------------------------------------------------------------------------
def feature_map(spec):
    from fuxictr.features import FeatureMap

    fmap = FeatureMap("bench", "/tmp")
    feats = OrderedDict()
    for n, v in spec["sparse"]:
        feats[n] = {"source": "", "type": "categorical", "vocab_size": v}
    for n in spec["dense"]:
        feats[n] = {"source": "", "type": "numeric"}
    fmap.features = feats
    fmap.labels = [spec["label"]]
    fmap.default_emb_dim = spec["embed_dim"]
    fmap.num_fields = fmap.get_num_fields()
    fmap.set_column_index()
    return fmap


def fuxictr_model(spec, kind):
    """The model_zoo DeepFM / DCN (not shipped in the fuxictr wheel), built from fuxictr's own
    layers and BaseModel exactly as model_zoo/{DeepFM,DCN}/*_torch/src defines them."""
    from fuxictr.pytorch.layers import (CrossNet, FactorizationMachine, FeatureEmbedding,
                                        MLP_Block)
    from fuxictr.pytorch.models import BaseModel

    fmap = feature_map(spec)
    common = dict(model_id=kind, gpu=-1, verbose=0, model_root="/tmp/fuxictr-bench",
                  metrics=["AUC"], optimizer="adam", loss="binary_crossentropy")
    D, H = spec["embed_dim"], spec["hidden"]

    class DeepFM(BaseModel):
        def __init__(self):
            super().__init__(fmap, **common)
            self.embedding_layer = FeatureEmbedding(fmap, D)
            self.fm = FactorizationMachine(fmap)
            self.mlp = MLP_Block(input_dim=fmap.sum_emb_out_dim(), output_dim=1, hidden_units=H,
                                 hidden_activations="ReLU", output_activation=None)
            self.compile(common["optimizer"], common["loss"], spec["lr"])
            self.reset_parameters()
            self.model_to_device()

        def forward(self, inputs):
            X = self.get_inputs(inputs)
            emb = self.embedding_layer(X)
            y = self.fm(X, emb) + self.mlp(emb.flatten(start_dim=1))
            return {"y_pred": self.output_activation(y)}

    class DCN(BaseModel):
        def __init__(self):
            super().__init__(fmap, **common)
            self.embedding_layer = FeatureEmbedding(fmap, D)
            width = fmap.sum_emb_out_dim()
            self.dnn = MLP_Block(input_dim=width, output_dim=None, hidden_units=H,
                                 hidden_activations="ReLU", output_activation=None)
            self.crossnet = CrossNet(width, spec["cross_layers"])
            self.fc = torch.nn.Linear(width + H[-1], 1)
            self.compile(common["optimizer"], common["loss"], spec["lr"])
            self.reset_parameters()
            self.model_to_device()

        def forward(self, inputs):
            X = self.get_inputs(inputs)
            emb = self.embedding_layer(X, flatten_emb=True)
            out = torch.cat([self.crossnet(emb), self.dnn(emb)], dim=-1)
            return {"y_pred": self.output_activation(self.fc(out))}

    torch.manual_seed(0)
    return DeepFM() if kind == "DeepFM" else DCN()


def to_batches(spec, df, bs):
    cols = {n: torch.from_numpy(df[n].to_numpy().astype(np.int64)) for n, _ in spec["sparse"]}
    cols.update({n: torch.from_numpy(df[n].to_numpy().astype(np.float32)) for n in spec["dense"]})
    cols[spec["label"]] = torch.from_numpy(df[spec["label"]].to_numpy().astype(np.float32))
    n = len(df)
    return [{k: v[i:i + bs] for k, v in cols.items()} for i in range(0, n, bs)]


def run_fuxictr(spec, train, ev, kind):
    model = fuxictr_model(spec, kind)
    model._max_gradient_norm = 10.0  # BaseModel.fit's default; train_step reads it
    model.train()
    c0, t0 = time.process_time(), time.perf_counter()
    for batch in to_batches(spec, train, spec["batch_size"]):
        model.train_step(batch)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    model.eval()
    with torch.no_grad():
        p = torch.cat([model(b)["y_pred"].reshape(-1) for b in to_batches(spec, ev, 8192)])
    return secs, cpu, roc_auc_score(ev[spec["label"]].to_numpy(), p.numpy())


def main(path: str) -> None:
    spec = json.loads(open(path).read())
    torch.set_num_threads(spec["threads"])
    train, ev = load(spec)
    for lib, fn in (("deepctr-torch", run_deepctr), ("fuxictr", run_fuxictr)):
        for kind in spec["models"]:
            secs, cpu, auc = fn(spec, train, ev, kind)
            print(json.dumps({"lib": lib, "model": kind, "rows": len(train), "seconds": secs,
                              "examples_per_s": len(train) / secs, "cpu_seconds": cpu,
                              "examples_per_cpu_s": len(train) / cpu, "auc": float(auc)}),
                  flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
