"""``das.fm_model`` overridden: the FM's day and DAS use that one registered model end to end.

Two days in a bucket of their own, with ``das.fm_model=exfm-fm-alt``: day 1 registers v1 under
the overridden name, day 2 warm-starts from it (``rows_seen`` cumulative, ``warm_start`` tag), a
retried day 2 finds its version (the "already registered?" check), and DAS on day 2 leases
``exfm-fm-alt`` v1 and writes its predictions. Nothing lands under the default ``exfm-fm``.

Before ``fm_model_name(cfg)`` named the FM everywhere, ``train_fm`` read the warm start and the
retry check from the constant ``exfm-fm``: day 2 either failed (no such version) or warm-started
from another model's snapshot (wrong ``rows_seen``), and the retry trained and registered twice.
"""

from __future__ import annotations

import pytest

from exfm.compute.submit import submit_and_wait
from tests.integration.conftest import stack_env
from tests.integration.test_ray_jobs import SMALL

pytestmark = pytest.mark.integration

ALT = "exfm-fm-alt"
BUCKET = "exfm-fm-alt-test"
D1, D2 = "2026-03-01", "2026-03-02"
ROWS = 640  # unlike test_ray_jobs' days: a warm start from another model shows in rows_seen


@pytest.fixture(scope="module")
def alt(stack_cfg, tmp_path_factory):
    """(cfg with the overrides, the job argv's config part): two days landed in BUCKET."""
    from exfm.data.generator import generate
    from exfm.stack.services import config_dump_path
    from exfm.storage.partitions import ingest_dataset

    cfg = stack_cfg.model_copy(update={
        "storage": stack_cfg.storage.model_copy(update={"bucket": BUCKET}),
        "das": stack_cfg.das.model_copy(update={"fm_model": ALT, "batch_size": 200})})
    g = stack_cfg.data.generator.model_copy(update={
        "days": 2, "rows_per_day": ROWS, "seed": 21, "start_date": D1, "n_users": 150,
        "n_items": 120})
    d = tmp_path_factory.mktemp("fmalt")
    with stack_env(stack_cfg):
        generate(g, d)
        ingest_dataset(cfg, d, progress=lambda m: None)
    args = ["--config", str(config_dump_path(stack_cfg)), *SMALL,
            "--set", f"storage.bucket={BUCKET}", "--set", f"das.fm_model={ALT}",
            "--set", "das.batch_size=200", "--set", "ray.num_workers=1"]
    return cfg, args


def _job(stack_cfg, module: str, day: str, sid: str, args: list[str]) -> dict:
    return submit_and_wait(stack_cfg, ["-m", f"ray_jobs.{module}", "--day", day, *args], sid,
                           log=lambda m: None, timeout_s=420)


def test_overridden_fm_model_drives_warm_start_retry_registration_and_lease(stack_cfg, alt):
    from exfm.das.store import lease_store
    from exfm.registry.mlflow_registry import connect, fm_model_name
    from exfm.storage.layout import AUGMENTED
    from exfm.storage.partitions import PartitionStore

    cfg, args = alt
    assert fm_model_name(cfg) == ALT
    first = _job(stack_cfg, "train_fm", D1, "test-fmalt-d1", args)
    assert first["warm_start"] is None and first["rows_seen"] == ROWS
    second = _job(stack_cfg, "train_fm", D2, "test-fmalt-d2", args)
    assert second["warm_start"] == first["version"]  # warm start read from the overridden name
    assert second["rows_seen"] == 2 * ROWS and second["rows_day"] == ROWS
    retry = _job(stack_cfg, "train_fm", D2, "test-fmalt-d2-retry", args)
    assert retry["reused"] and retry["version"] == second["version"]  # found, not re-trained

    client = connect(cfg)
    versions = {v.version: v for v in client.search_model_versions(f"name='{ALT}'")}
    assert set(versions) == {first["version"], second["version"]}  # registered there, once each
    assert versions[second["version"]].tags["warm_start"] == first["version"]
    assert versions[second["version"]].tags["day"] == D2
    default = client.search_model_versions("name='exfm-fm'")
    assert not [v for v in default if BUCKET in (v.tags.get("data_uris") or "")]

    das = _job(stack_cfg, "das_infer", D2, "test-fmalt-das-d2", args)
    assert das["status"] == "committed" and das["fm_version"] == first["version"]
    lease = lease_store(cfg).get(ALT)
    assert lease is not None and lease.fm_name == ALT and lease.version == first["version"]
    assert lease.uri == f"models:/{ALT}/{first['version']}"
    aug = PartitionStore(cfg, AUGMENTED)
    assert aug.manifest(D2).fm_version == first["version"]
    assert set(aug.read_day(D2, columns=["fm_version"]).column(0).to_pylist()) == {first["version"]}
