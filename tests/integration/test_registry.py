"""MLflow as the SPD, against the real MLflow server (artifacts on SeaweedFS).

- An FM snapshot registers as a version of ``exfm-fm`` with its lineage tags, and loads back
  predicting exactly what was registered; a VM version carries the FM version that taught it.
- A version that does not exist fails with a message naming the model and the version.
- ``log_dataset_input`` records the partition (URI + manifest digest) on the run.
- ``archive_version`` hides a version from ``latest_fm_version`` and deletes its artifacts.
"""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pyarrow as pa
import pytest

from exfm.data.schema import DatasetSchema, SparseField
from exfm.models.build import build_fm
from exfm.models.snapshot import predict_table
from exfm.registry.mlflow_registry import (RegistryError, archive_version, connect,
                                           ensure_experiments, latest_fm_version, load_fm,
                                           log_dataset_input, register_fm, register_vm)
from exfm.storage.partitions import PartitionStore

pytestmark = pytest.mark.integration

SCHEMA = DatasetSchema(name="tiny", timestamp="ts", request_id="rid", labels=["click", "like"],
                       sparse=[SparseField(name="user_id", vocab=20), SparseField(name="item_id", vocab=30)],
                       dense=["price"])


def tiny_table(n: int = 64, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"ts": pa.array(np.arange(n), pa.int64()), "rid": pa.array(np.arange(n), pa.int64()),
                     "user_id": pa.array(rng.integers(0, 20, n), pa.int64()),
                     "item_id": pa.array(rng.integers(0, 30, n), pa.int64()),
                     "price": pa.array(rng.random(n), pa.float32()),
                     "click": pa.array(rng.integers(0, 2, n), pa.int64()),
                     "like": pa.array(rng.integers(0, 2, n), pa.int64())})


def tiny_fm(cfg, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    small = cfg.model_copy(update={"models": cfg.models.model_copy(update={
        "fm_embed_dim": 4, "fm_hidden": [8], "fm_cross_layers": 1})})
    return build_fm(SCHEMA, None, small)


@pytest.fixture
def cfg(stack_cfg):
    """The stack's config with an FM registered model of these tests' own."""
    return stack_cfg.model_copy(update={"das": stack_cfg.das.model_copy(
        update={"fm_model": "exfm-fm-regtest"})})


def test_register_load_tags_and_lineage(cfg):
    stack_cfg = cfg
    ensure_experiments(stack_cfg, vms=["t-click"])
    fm = tiny_fm(stack_cfg)
    t = tiny_table()
    store = PartitionStore(stack_cfg, "t_reg")
    m = store.write_day("2026-03-01", t, producer="test")
    mlflow.set_experiment("exfm-fm")
    with mlflow.start_run() as run:
        log_dataset_input(store.uri("2026-03-01"), m, context="training", sample=t)
        v = register_fm(stack_cfg, fm, "2026-03-01", rows_seen=64, data_uris=[store.uri("2026-03-01")],
                        sample=t.slice(0, 8), tags={"warm_start": "none"})
    mv = connect(stack_cfg).get_model_version("exfm-fm-regtest", v)
    assert mv.tags["day"] == "2026-03-01" and mv.tags["rows_seen"] == "64"
    assert json.loads(mv.tags["data_uris"]) == [store.uri("2026-03-01")]
    assert mv.tags["run_id"] == run.info.run_id and mv.tags["git_rev"]
    assert latest_fm_version(stack_cfg) == v
    assert latest_fm_version(stack_cfg, before_day="2026-03-01") != v
    loaded, lv = load_fm(stack_cfg, v)
    assert lv == v
    np.testing.assert_allclose(predict_table(loaded, t), predict_table(fm, t), rtol=1e-6)
    # lineage: the run names the partition by URI and manifest digest
    inputs = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    assert [(i.dataset.source, i.dataset.digest) for i in inputs] == [
        (json.dumps({"uri": store.uri("2026-03-01")}), m.digest[:36])] or any(
        store.uri("2026-03-01") in i.dataset.source and i.dataset.digest == m.digest[:36]
        for i in inputs)
    # a VM version carries the FM version that taught it (run started for it when none is active)
    vv = register_vm(stack_cfg, "t-click", fm, "2026-03-02", 64, [store.uri("2026-03-01")], fm_version=v)
    assert connect(stack_cfg).get_model_version("exfm-vm-t-click", vv).tags["fm_version"] == v


def test_missing_version_is_named(cfg):
    stack_cfg = cfg
    ensure_experiments(stack_cfg, vms=[])
    with pytest.raises(RegistryError, match=r"exfm-fm-regtest version '9999' does not exist"):
        load_fm(stack_cfg, "9999")


def test_archive_hides_and_deletes(cfg):
    stack_cfg = cfg
    ensure_experiments(stack_cfg, vms=[])
    v = register_fm(stack_cfg, tiny_fm(stack_cfg, 1), "2026-03-05", 1, [])
    assert latest_fm_version(stack_cfg) == v
    archive_version(stack_cfg, "exfm-fm-regtest", v)
    assert connect(stack_cfg).get_model_version("exfm-fm-regtest", v).tags["archived"] == "true"
    assert latest_fm_version(stack_cfg) != v
    with pytest.raises(RegistryError):
        load_fm(stack_cfg, v)  # its files are gone
