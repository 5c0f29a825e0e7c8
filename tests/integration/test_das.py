"""DAS on the real stack: Ray Data actor pool over SeaweedFS, FM snapshots from MLflow, the lease
store in the stack's database.

- A day is augmented once: every row gets one ``fm_pred_<task>`` per FM task and one
  ``fm_version``; a re-run gives the same manifest digest; ``python -m ray_jobs.das_infer``
  prints ``EXFM_RESULT`` and logs its summary to MLflow.
- Snapshot switch while a job runs (a newer snapshot is published mid-job): no batch fails, every
  row carries exactly one version, both versions served, each worker loads each version once.
- Late labels: features land first, labels later (by request id); DAS infers on the features at
  once and commits when the label window closes; rows whose label never came are dropped, counted.
- Lease expiry lets GC archive old snapshots; the served one is never collected.
- Bad input: a corrupt raw part, no FM before the day: clear error, nothing committed.

Every test uses its own registered FM model (``das.fm_model``) and days, so it shares the stack
with other test modules safely.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

# read by Ray at import: a driver on the head's host must keep 127.0.0.1 (PITFALLS: Ray)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from exfm.das.augment import (AUGMENTED, FEATURES, LABELS, PENDING, AugmentError, augment_day,
                              augment_split_day, lease_store)
from exfm.models.build import build_fm
from exfm.registry.mlflow_registry import connect, ensure_experiments, register_fm
from exfm.storage.partitions import PartitionStore, ingest_dataset, load_remote_schema
from exfm.storage.s3 import StorageError, s3_client

pytestmark = pytest.mark.integration

DAYS = ["2025-06-01", "2025-06-02", "2025-06-03", "2025-06-04"]
ROWS = 400


def _cfg(stack_cfg, name: str, bucket: str | None = None):
    cfg = stack_cfg
    if bucket is not None:
        cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"bucket": bucket})})
    return cfg.model_copy(update={
        "das": cfg.das.model_copy(update={"fm_model": f"exfm-fm-{name}", "batch_size": 50,
                                          "refresh_s": 0.3, "max_actors": 2}),
        "models": cfg.models.model_copy(update={"fm_embed_dim": 4, "fm_hidden": [16],
                                                "fm_cross_layers": 1})})


@pytest.fixture(scope="module")
def das_env(stack_cfg, tmp_path_factory):
    """Four generated days in raw/, the remote schema, and a Ray driver for this module."""
    import ray

    from exfm.data.generator import generate
    from tests.integration.conftest import stack_env

    d = tmp_path_factory.mktemp("dasdata")
    g = stack_cfg.data.generator.model_copy(update={
        "days": len(DAYS), "rows_per_day": ROWS, "seed": 5, "n_users": 60, "n_items": 50,
        "start_date": DAYS[0]})
    with stack_env(stack_cfg):
        schema = generate(g, d / "data")
        ingest_dataset(stack_cfg, d / "data", progress=lambda m: None)
        # the head was started with the stack's client env: its workers reach S3 and MLflow
        ray.init(address=stack_cfg.ray_address, logging_level="WARNING", log_to_driver=False)
    yield {"schema": schema, "dir": d / "data"}
    ray.shutdown()


def _publish(cfg, day: str, seed: int) -> str:
    import torch

    torch.manual_seed(seed)
    ensure_experiments(cfg, vms=[])
    return register_fm(cfg, build_fm(load_remote_schema(cfg), None, cfg), day, ROWS, [])


def test_augment_once_per_row_and_rerun_identical(stack_cfg, das_env):
    cfg = _cfg(stack_cfg, "once")
    v1 = _publish(cfg, DAYS[0], seed=1)
    res = augment_day(cfg, DAYS[1], progress=lambda m: None)
    assert res.status == "committed" and res.rows == ROWS and res.fm_version == v1
    assert res.freshness_gap_days == 1
    aug = PartitionStore(cfg, AUGMENTED)
    t = aug.read_day(DAYS[1])
    raw = PartitionStore(cfg, "raw").read_day(DAYS[1])
    tasks = das_env["schema"].labels
    assert t.num_rows == raw.num_rows
    assert t.select(raw.column_names).equals(raw)  # rows untouched, in arrival order
    assert set(t.column("fm_version").to_pylist()) == {v1}
    for task in tasks:
        p = t.column(f"fm_pred_{task}")
        assert p.null_count == 0 and pc.min(p).as_py() >= 0 and pc.max(p).as_py() <= 1
    # a re-run replaces the day with identical content
    again = augment_day(cfg, DAYS[1], progress=lambda m: None)
    assert again.digest == res.digest
    # VMs read slices of this one partition: no inference per VM
    d0 = aug.read_day(DAYS[1], filter=pc.field("domain") == "d0")
    assert 0 < d0.num_rows < ROWS


def test_a_driver_with_a_relative_state_dir_runs_das(stack_cfg, das_env, monkeypatch):
    """`exfm das augment` from a checkout: the config's state_dir is relative (the default
    `.exfm`), and the DAS actors run in the Ray head's working directory, not the driver's. They
    must still find the stack's secrets (MLflow login) and lease store."""
    cfg = _cfg(stack_cfg, "relstate")
    monkeypatch.chdir(stack_cfg.state_path.parent)
    rel = cfg.model_copy(update={"state_dir": stack_cfg.state_path.name})
    assert not Path(rel.state_dir).is_absolute() and rel.state_path == stack_cfg.state_path
    v = _publish(rel, DAYS[0], seed=4)
    res = augment_day(rel, DAYS[1], progress=lambda m: None)
    assert res.status == "committed" and res.rows == ROWS and res.fm_version == v


def test_exfm_das_augment_from_a_shell_without_the_stack_env(stack_cfg, das_env):
    """`exfm das augment` typed in a shell that never ran `exfm stack env`: no RAY_AUTH_TOKEN,
    RAY_ADDRESS or MLflow login in the environment. The driver joins the embedded head with the
    token from the stack's secrets file (without it: InvalidAuthToken, then ConnectionError)."""
    from exfm.stack.services import config_dump_path

    cfg = _cfg(stack_cfg, "cli")
    v = _publish(cfg, DAYS[0], seed=6)
    env = {k: val for k, val in os.environ.items()
           if not k.startswith(("RAY_", "MLFLOW_", "AWS_", "EXFM_"))}
    argv = [str(Path(sys.executable).with_name("exfm")), "das", "augment", "--day", DAYS[1],
            "--config", str(config_dump_path(stack_cfg)), "--set", "das.fm_model=exfm-fm-cli",
            "--set", "das.batch_size=100"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == "committed" and out["rows"] == ROWS and out["fm_version"] == v
    # `exfm ray status` lists that driver by its job id (it has no submission id)
    argv = [argv[0], "ray", "status", "--config", str(config_dump_path(stack_cfg))]
    lines = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                           check=True).stdout.splitlines()
    names = [line.split("\t")[0] for line in lines]
    assert "None" not in names and any(n.startswith("(driver ") for n in names), lines


def test_das_infer_entrypoint_prints_result_and_logs(stack_cfg, das_env, tmp_path):
    from exfm.stack.services import config_dump_path

    cfg = _cfg(stack_cfg, "job")
    v = _publish(cfg, DAYS[1], seed=2)
    argv = [sys.executable, "-m", "ray_jobs.das_infer", "--day", DAYS[2], "--config",
            str(config_dump_path(stack_cfg)), "--set", "das.fm_model=exfm-fm-job",
            "--set", "das.batch_size=100"]
    proc = subprocess.run(argv, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("EXFM_RESULT ")
    out = json.loads(last.removeprefix("EXFM_RESULT "))
    assert out["rows"] == ROWS and out["fm_version"] == v and out["uri"].endswith(f"day={DAYS[2]}/")
    runs = connect(cfg).search_runs(
        [connect(cfg).get_experiment_by_name("exfm-das").experiment_id],
        filter_string=f"tags.day = '{DAYS[2]}' and tags.fm_version = '{v}'")
    assert runs and runs[0].data.metrics["das/rows"] == ROWS
    assert runs[0].data.metrics["das/freshness_gap_days"] == 1


def test_snapshot_published_while_a_day_runs_changes_nothing_of_that_day(stack_cfg, das_env):
    """A day's inputs are fixed by its date: DAS of day d pins the newest FM trained before d when
    it starts, so a snapshot registered while the job runs reaches no row of that day, and the
    manifest's per-row-range lineage names the one pinned version."""
    import numpy as np
    import torch

    from exfm.models.snapshot import predict_table
    from exfm.registry.mlflow_registry import load_fm
    from exfm.storage.layout import fm_pred_column
    from exfm.train.trainer import autocast

    cfg = _cfg(stack_cfg, "switch")
    v1 = _publish(cfg, DAYS[0], seed=3)
    result, error = {}, []
    logs: list[str] = []

    def run():
        try:
            result["res"] = augment_day(cfg, DAYS[2], progress=logs.append, batch_delay_s=0.25)
        except Exception as e:  # noqa: BLE001
            error.append(e)

    job = threading.Thread(target=run)
    job.start()
    deadline = time.time() + 180
    while not any("inferring with" in m for m in logs) and time.time() < deadline:
        time.sleep(0.2)
    assert any(f"inferring with v{v1}" in m for m in logs), logs  # pinned before any batch
    v2 = _publish(cfg, DAYS[1], seed=4)  # registered mid-job: trained before DAYS[2], yet too late
    job.join(timeout=300)
    assert not error, error
    res = result["res"]
    t = PartitionStore(cfg, AUGMENTED).read_day(DAYS[2])
    versions = t.column("fm_version").to_pylist()
    assert len(versions) == ROWS and set(versions) == {v1}, (v1, v2, set(versions))
    assert res.versions_seen == [v1]
    ranges = PartitionStore(cfg, AUGMENTED).manifest(DAYS[2]).extra["fm_version_ranges"]
    assert ranges == [[0, ROWS, v1]]
    model = load_fm(cfg, v1)[0]
    got = np.stack([t.column(fm_pred_column(task)).to_numpy() for task in model.tasks], 1)
    with autocast(torch.device("cpu"), cfg.models.amp, cpu=cfg.models.cpu_amp):  # DAS's precision
        want = predict_table(model, t)
    assert np.allclose(got, want, atol=1e-5)


def test_late_labels_join_and_drop(stack_cfg, das_env):
    from exfm.storage.partitions import put_remote_schema
    from exfm.storage.s3 import ensure_bucket

    schema = das_env["schema"]
    day = DAYS[2]
    full = PartitionStore(stack_cfg, "raw").read_day(day)
    cfg = _cfg(stack_cfg, "late", bucket="exfm-late")  # a bucket without raw/day=d
    ensure_bucket(cfg)
    put_remote_schema(cfg, schema.to_yaml())
    _publish(cfg, DAYS[1], seed=5)
    rid = schema.request_id
    features = full.drop_columns(schema.labels)
    labels = full.select([rid] + schema.labels)
    # labels of day d arrive on d (first half) and d+1 (every third of the rest); others never
    n = full.num_rows
    on_day = labels.slice(0, n // 2)
    rest = labels.slice(n // 2)
    late = rest.filter(pa.array([i % 3 == 0 for i in range(rest.num_rows)]))
    PartitionStore(cfg, FEATURES).write_day(day, features, producer="test")
    PartitionStore(cfg, LABELS).write_day(day, on_day, producer="test")
    nxt = DAYS[3]
    r1 = augment_day(cfg, day, progress=lambda m: None)   # features inferred, window still open
    assert r1.status == "pending_labels" and r1.inferred_rows == n and r1.rows == n // 2
    assert PartitionStore(cfg, PENDING).manifest(day) is not None
    assert PartitionStore(cfg, AUGMENTED).manifest(day) is None
    PartitionStore(cfg, LABELS).write_day(nxt, late, producer="test")
    r2 = augment_split_day(cfg, day, progress=lambda m: None)  # no second inference
    assert r2.status == "committed" and r2.inferred_rows == 0
    assert r2.rows == n // 2 + late.num_rows and r2.dropped_unlabeled == n - r2.rows
    t = PartitionStore(cfg, AUGMENTED).read_day(day)
    expect = full.filter(pc.is_in(full.column(rid), pa.concat_arrays(
        [on_day.column(rid).combine_chunks(), late.column(rid).combine_chunks()])))
    assert t.select(full.column_names).equals(expect)  # labels joined right, arrival order kept
    assert PartitionStore(cfg, AUGMENTED).manifest(day).extra["dropped_unlabeled"] == r2.dropped_unlabeled


def test_expired_lease_gc_never_collects_the_served_snapshot(stack_cfg, das_env):
    from exfm.das.gc import collect_snapshots
    from exfm.das.snapshots import SnapshotUpdater
    from exfm.registry.mlflow_registry import latest_fm_version

    cfg = _cfg(stack_cfg, "gc")
    cfg = cfg.model_copy(update={"das": cfg.das.model_copy(update={"keep_last": 1,
                                                                   "lease_ttl_s": 10})})
    store = lease_store(cfg)
    fm = cfg.das.fm_model
    published = []
    for k, day in enumerate(DAYS[:3]):
        published.append(_publish(cfg, day, seed=10 + k))
        SnapshotUpdater(store, fm, lambda: (published[-1], "u")).poll_once(now=1000.0 + k)
    assert collect_snapshots(cfg, now=1005.0, log=lambda m: None) == []  # leases still valid
    gone = collect_snapshots(cfg, now=5000.0, log=lambda m: None)       # all expired
    assert sorted(gone, key=int) == published[:2]
    assert store.get(fm).version == published[2]
    assert latest_fm_version(cfg) == published[2]
    mv = connect(cfg).get_model_version(fm, published[0])
    assert mv.tags["archived"] == "true"
    assert collect_snapshots(cfg, now=99999.0, log=lambda m: None) == []  # the served one stays


def test_bad_input_commits_nothing(stack_cfg, das_env):
    cfg = _cfg(stack_cfg, "bad")
    with pytest.raises(AugmentError, match=rf"no FM snapshot trained before {DAYS[0]}"):
        augment_day(cfg, DAYS[0], progress=lambda m: None)
    _publish(cfg, DAYS[0], seed=20)
    # a corrupt part in the raw partition of another prefix's copy of the day
    corrupt = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"bucket": "exfm-bad"})})
    from exfm.storage.s3 import ensure_bucket

    ensure_bucket(corrupt)
    m = PartitionStore(corrupt, "raw").write_day(DAYS[3], PartitionStore(cfg, "raw").read_day(DAYS[3]),
                                                 rows_per_part=100)
    s3_client(corrupt).put_object(Bucket="exfm-bad", Key=m.parts[2], Body=b"not parquet")
    with pytest.raises(StorageError, match=m.parts[2]):
        augment_day(corrupt, DAYS[3], progress=lambda m: None)
    assert PartitionStore(corrupt, AUGMENTED).manifest(DAYS[3]) is None
    with pytest.raises(AugmentError, match="no committed partition for 2030-01-01"):
        augment_day(cfg, "2030-01-01", progress=lambda m: None)


def test_augment_finishes_while_another_job_holds_the_cpus(stack_cfg, das_env):
    """A concurrent FM training holds CPUs with its workers (``train_fm`` beside ``augment`` in the
    DAG): the DAS's actor pool takes the one CPU left, and its reads must still run. Before the
    reads asked for no CPU, Ray Data's listing/read tasks waited for a CPU for ever (the demo hung on
    day 2's augment)."""
    import ray

    cfg = _cfg(stack_cfg, "busy")
    cfg = cfg.model_copy(update={"das": cfg.das.model_copy(update={"max_actors": 1})})
    v = _publish(cfg, DAYS[2], seed=3)
    total = int(ray.cluster_resources().get("CPU", 1))

    @ray.remote(num_cpus=1)
    class Worker:  # stands for a training worker of another job
        def ready(self):
            return True

    hogs = [Worker.remote() for _ in range(total - 1)]
    ray.get([h.ready.remote() for h in hogs], timeout=60)
    try:
        assert ray.available_resources().get("CPU", 0) <= 1
        ex = concurrent.futures.ThreadPoolExecutor(1)
        fut = ex.submit(augment_day, cfg, DAYS[3], progress=lambda m: None)
        try:
            res = fut.result(timeout=240)  # a deadlock never returns
        finally:
            ex.shutdown(wait=False)
        assert res.status == "committed" and res.rows == ROWS and res.fm_version == v
    finally:
        for h in hogs:
            ray.kill(h)
