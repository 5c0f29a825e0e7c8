"""FM blessing against a real MLflow registry: the first snapshot is blessed, a snapshot whose
predictions collapsed (constant) is not, and the DAS's choice (``das_fm_version``, and the updater's) skips it
and keeps the older one; the verdict with its figures is tagged on the version; the freshness
verdict of a VM day reads the FM's training day from the registry; and the versions DAS passed
over are listed with the blessing's reason (``skipped_fm_versions``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from exfm.das.augment import registry_latest
from exfm.das.blessing import bless_fm, fm_day_of, vm_freshness
from exfm.data.schema import DatasetSchema, SparseField
from exfm.models.build import build_fm
from exfm.promotion.freshness import StaleFMError
from exfm.registry.chain import das_fm_version, skipped_fm_versions
from exfm.registry.mlflow_registry import connect, ensure_experiments, register_fm

pytestmark = pytest.mark.integration

SCHEMA = DatasetSchema(name="bless", timestamp="ts", request_id="rid", labels=["click"],
                       sparse=[SparseField(name="user_id", vocab=20),
                               SparseField(name="item_id", vocab=30)], dense=["price"])


def table(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    return pa.table({"ts": pa.array(np.arange(n), pa.int64()), "rid": pa.array(np.arange(n), pa.int64()),
                     "user_id": pa.array(rng.integers(0, 20, n), pa.int64()),
                     "item_id": pa.array(rng.integers(0, 30, n), pa.int64()),
                     "price": pa.array(rng.random(n), pa.float32()),
                     "click": pa.array(rng.integers(0, 2, n), pa.int64())})


@pytest.fixture(scope="module")
def bcfg(stack_cfg):
    return stack_cfg.model_copy(update={
        "das": stack_cfg.das.model_copy(update={"fm_model": "exfm-fm-blesstest"}),
        "models": stack_cfg.models.model_copy(update={"fm_embed_dim": 4, "fm_hidden": [8],
                                                      "fm_cross_layers": 1})})


def test_collapsed_fm_is_not_leased(bcfg):
    cfg = bcfg
    ensure_experiments(cfg, vms=[])
    t = table()
    torch.manual_seed(0)
    good = build_fm(SCHEMA, None, cfg)
    va = register_fm(cfg, good, "2026-03-01", 2000, ["s3://none"], sample=t.slice(0, 8))
    first = bless_fm(cfg, "2026-03-02", table=t, log=lambda m: None)
    assert first.blessed is True and first.serving_version is None, first.reason
    collapsed = build_fm(SCHEMA, None, cfg)
    with torch.no_grad():
        for p in collapsed.parameters():
            p.zero_()  # every logit 0: the same prediction for every row
    vb = register_fm(cfg, collapsed, "2026-03-02", 4000, ["s3://none"], sample=t.slice(0, 8))
    refused = bless_fm(cfg, "2026-03-03", table=t, log=lambda m: None)
    assert refused.blessed is False and refused.reason.startswith("collapsed"), refused.reason
    assert refused.candidate_version == vb and refused.serving_version == va
    tags = connect(cfg).get_model_version("exfm-fm-blesstest", vb).tags
    assert tags["blessed"] == "false" and tags["blessing.reason"] == refused.reason
    assert float(tags["blessing.pred_std"]) < 1e-6
    # the DAS of 03-03 keeps serving the older snapshot; a re-run changes nothing
    assert das_fm_version(cfg, "2026-03-03") == va
    assert registry_latest(cfg, "2026-03-03")()[0] == va  # the updater does not lease it either
    assert das_fm_version(cfg, "2026-03-03", blessed_only=False) == vb
    # and why, for the results table: v_b passed over, refused, with the blessing's reason
    assert skipped_fm_versions(cfg, "2026-03-03", va) == [
        {"version": vb, "day": "2026-03-02", "blessed": "false", "reason": refused.reason}]
    assert skipped_fm_versions(cfg, "2026-03-02", va) == []  # nothing trained in between
    assert bless_fm(cfg, "2026-03-03", table=t, log=lambda m: None).blessed is False
    # freshness of a VM day taught by v_a (trained 03-01): gap 2 ok, gap 4 > 3 under fail
    assert fm_day_of(cfg, va) == "2026-03-01"
    assert vm_freshness(cfg, "2026-03-03", va).status == "ok"
    failing = cfg.model_copy(update={"freshness": cfg.freshness.model_copy(update={"policy": "fail"})})
    with pytest.raises(StaleFMError, match="4 day"):
        vm_freshness(failing, "2026-03-05", va)
    assert vm_freshness(cfg, "2026-03-05", va).degraded
