"""Tiny hand-made schema, table and batch for the model/distill/train unit tests."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from exfm.config import load_config
from exfm.data.batches import TableTensors
from exfm.data.schema import DatasetSchema, SequenceField, SparseField

torch.set_num_threads(1)


@pytest.fixture
def tiny_schema() -> DatasetSchema:
    return DatasetSchema(
        name="tiny", timestamp="ts", domain="domain", labels=["click", "like"],
        sparse=[SparseField(name="user_id", vocab=30), SparseField(name="item_id", vocab=20),
                SparseField(name="item_cat", vocab=5), SparseField(name="xsvc_id", vocab=7)],
        dense=["price", "xsvc_ctr"],
        sequences=[SequenceField(name="hist_item", of="item_id", max_len=4)],
        fm_only=["xsvc_id", "xsvc_ctr"])


def make_table(n: int, seed: int = 0, fm_pred: bool = True) -> pa.Table:
    """n rows of the tiny schema; click depends on user and item, so a model can learn it."""
    rng = np.random.default_rng(seed)
    user, item = rng.integers(0, 30, n), rng.integers(0, 20, n)
    logit = -1.0 + 1.5 * ((user % 3) == 0) + 1.0 * ((item % 2) == 0)
    p = 1 / (1 + np.exp(-logit))
    hist = [list(rng.integers(0, 20, rng.integers(0, 7))) for _ in range(n)]
    cols = {
        "ts": np.arange(n, dtype=np.int64), "domain": ["d0"] * n,
        "click": (rng.random(n) < p).astype(np.int64),
        "like": (rng.random(n) < 0.3).astype(np.int64),
        "user_id": user, "item_id": item, "item_cat": item % 5,
        "xsvc_id": rng.integers(0, 7, n), "price": rng.random(n), "xsvc_ctr": p + 0.1 * rng.random(n),
        "hist_item": pa.array(hist, pa.list_(pa.int64())),
    }
    if fm_pred:
        cols["fm_pred_click"] = np.clip(p + 0.05 * rng.standard_normal(n), 0.01, 0.99)
        cols["fm_pred_like"] = np.full(n, 0.3)
    return pa.table(cols)


@pytest.fixture
def table_factory():
    """``make_table(n, seed=0, fm_pred=True)``: more days of the tiny schema."""
    return make_table


@pytest.fixture
def tiny_table() -> pa.Table:
    return make_table(256)


@pytest.fixture
def tiny_cfg():
    """Small widths so every model builds and steps in milliseconds."""
    return load_config(None, ["models.fm_embed_dim=8", "models.embed_dim=4",
                              "models.fm_hidden=[32,16]", "models.vm_hidden=[16,8]",
                              "models.fm_tower_hidden=[8]", "models.fm_cross_layers=2",
                              "models.batch_size=64", "models.min_steps_per_day=0",
                              "models.torch_threads=1"], env={})


@pytest.fixture
def tiny_batch(tiny_schema, tiny_table) -> dict:
    """A batch of everything the FM reads (the declared fields plus the domain column)."""
    from exfm.data.vocab import input_schema
    return next(TableTensors.from_table(tiny_table, input_schema(tiny_schema, "fm")).batches(16))
