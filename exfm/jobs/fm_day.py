"""The FM's day on Ray Train: one pass over ``raw/day=D``, warm-started, checkpointed, registered.

1. The committed parts of ``raw/day=D`` (its manifest, never a listing) through Ray Data and the
   explicit pyarrow S3 filesystem; :class:`~exfm.compute.ingest.OrderedSplit` gives rank ``r`` the
   contiguous ``r``-th slice of the day in arrival order (every row exactly once).
2. ``TorchTrainer`` with ``ScalingConfig`` from ``ray.*`` (``use_gpu`` -> CUDA + NCCL), each worker
   running :func:`exfm.compute.fm_worker.fm_train_loop`: DDP over the plain ``train_fm_day``,
   warm-started from the newest FM snapshot before D (day D-1's when ``fm.every_days`` is 1;
   :func:`exfm.registry.chain.fm_warm_start`: found by its ``day`` tag; refused, naming the
   FM day to run first, when that day's snapshot is missing).
3. A checkpoint on the bucket after every chunk (``ray.checkpoints_per_day``), under
   ``RunConfig(name=fm-D-<data digest>-w<warm version>-p<plan hash>, storage_path=<bucket>/ray/fm)``:
   a killed worker resumes from it (``FailureConfig(max_failures)``), and so does a re-run of the
   same day on the same data (an Airflow retry), instead of starting over.
4. Metrics to MLflow (one run ``fm-D`` in ``exfm-fm``), the snapshot registered as a new version
   with its tags. A re-run that finds its version registered returns it (``reused``).

``rows_day`` = rows of day D trained on (always the manifest's row count: each row's update is in
the weights exactly once, restarts included); ``rows_seen`` = cumulative over the warm-start chain
(the version tag ``rows_seen``; ``rows_day`` is tagged too).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from exfm.config import ExfmConfig
from exfm.storage.layout import RAW, RAY_FM


@dataclass
class FMDayResult:
    """What the FM's day did (the ``EXFM_RESULT`` of ``ray_jobs.train_fm``)."""

    day: str
    version: str
    rows_seen: int
    rows_day: int
    run_name: str
    warm_start: str | None
    reused: bool
    run_id: str | None
    metrics: dict = field(default_factory=dict)
    seconds: float = 0.0
    num_workers: int = 0
    restarts: int = 0
    chunks: int = 0
    checkpoint: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def run_name(day: str, digest: str, warm_version: str | None, plan: dict | None = None) -> str:
    """Deterministic per (day, the day's data, warm start, training plan): a retry resumes from
    its checkpoints; new data, another warm start, or another plan (workers, batch, chunks, model
    config) starts a fresh run instead of skipping chunks of differently cut shards."""
    name = f"fm-{day}-{digest[:8]}-w{warm_version or 0}"
    if plan:
        name += "-p" + hashlib.sha256(json.dumps(plan, sort_keys=True, default=str).encode()
                                      ).hexdigest()[:6]
    return name


def _warm_start(cfg: ExfmConfig, fm_name: str, version: str | None):
    """(object ref of the snapshot bytes, its rows_seen) of the warm-start version, or (None, 0)."""
    import io

    import ray

    from exfm.models.snapshot import save_snapshot
    from exfm.registry.mlflow_registry import connect, load_snapshot_version

    if version is None:
        return None, 0
    model, _, _ = load_snapshot_version(cfg, fm_name, version)
    buf = io.BytesIO()
    save_snapshot(model, buf, {})
    rows = int(connect(cfg).get_model_version(fm_name, version).tags.get("rows_seen", 0))
    return ray.put(buf.getvalue()), rows  # through the object store, not the config pickle


def run(cfg: ExfmConfig, day: str, row_log_dir: str | None = None) -> FMDayResult:
    """Train the FM for ``day`` on the cluster (joined here if needed), register it."""
    import mlflow
    import pyarrow.parquet as pq
    import ray.train
    from ray.train.torch import TorchTrainer

    from exfm.compute.entry import init_ray
    from exfm.compute.fm_worker import CKPT_FILE, fm_train_loop, summarize_checkpoint_state
    from exfm.compute.ingest import (OrderedSplit, chunk_rows, equal_steps_batch_size,
                                     read_day_dataset, shard_bounds)
    from exfm.compute.scaling import scaling_config
    from exfm.data.dense_scale import FIT_ROWS
    from exfm.registry.mlflow_registry import (connect, ensure_experiments, experiment_name,
                                               find_version, fm_model_name,
                                               log_dataset_input, register_fm)
    from exfm.registry.chain import fm_warm_start, supersede_day
    from exfm.storage.partitions import DayNotFound, PartitionStore, load_remote_schema
    from exfm.storage.s3 import arrow_fs
    from exfm.train.checkpoint import load_checkpoint
    from exfm.train.optim import effective_batch_size

    init_ray(cfg)
    raw = PartitionStore(cfg, RAW)
    m = raw.manifest(day)
    if m is None:
        raise DayNotFound(f"{raw.uri(day)}: no committed raw partition; land the day first")
    schema = load_remote_schema(cfg)
    fm_name = fm_model_name(cfg)
    client = connect(cfg)
    ensure_experiments(cfg, vms=[])

    warm_version = fm_warm_start(cfg, day)  # newest before d (ChainError: an FM day missing)
    world = cfg.ray.num_workers
    sizes = [b - a for a, b in shard_bounds(m.rows, world)]
    bs = equal_steps_batch_size(sizes, effective_batch_size(min(sizes), cfg.models))
    chunk = chunk_rows(max(sizes), bs, cfg.ray.checkpoints_per_day)
    name = run_name(day, m.digest, warm_version, plan={
        "world": world, "batch": bs, "chunk": chunk, "models": cfg.models.model_dump(mode="json")})
    done = find_version(cfg, fm_name, train_run=name)
    if done is not None:  # this exact run finished and registered before (a retried task)
        mv = client.get_model_version(fm_name, done)
        print(f"{fm_name} v{done} already holds run {name}; nothing to do", flush=True)
        return FMDayResult(day=day, version=done, rows_seen=int(mv.tags.get("rows_seen", 0)),
                           rows_day=int(mv.tags.get("rows_day", 0)), run_name=name,
                           warm_start=warm_version, reused=True, run_id=mv.tags.get("run_id"))
    warm_ref, warm_rows = _warm_start(cfg, fm_name, warm_version)

    if row_log_dir:
        Path(row_log_dir).mkdir(parents=True, exist_ok=True)
    # the chain's first FM fixes its dense inputs' scales on the day's first rows, here, so that
    # every worker builds the same model (exfm.data.dense_scale)
    sample = None if warm_ref is not None else ray.put(raw.stream_day(day).head(FIT_ROWS))
    loop_config = {
        "cfg": cfg.dump_for_children(mode="python"), "schema": schema.model_dump(mode="json"),
        "day": day, "batch_size": bs, "chunk_rows": chunk,
        "warm_start": warm_ref, "warm_rows_seen": warm_rows, "row_log_dir": row_log_dir,
        "sample": sample}
    fs = arrow_fs(cfg)
    trainer = TorchTrainer(
        fm_train_loop, train_loop_config=loop_config, scaling_config=scaling_config(cfg),
        datasets={"train": read_day_dataset(cfg, m)}, dataset_config=OrderedSplit(),
        run_config=ray.train.RunConfig(
            name=name, storage_path=f"{cfg.storage.bucket}/{RAY_FM}", storage_filesystem=fs,
            failure_config=ray.train.FailureConfig(max_failures=cfg.ray.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)))
    print(f"FM {cfg.models.fm} day {day}: {m.rows} rows on {world} worker(s) "
          f"(shards {sizes}, batch {bs}, chunk {chunk}), run {name}, "
          f"warm start {fm_name} {warm_version or 'none'}", flush=True)
    t0 = time.time()
    result = trainer.fit()
    secs = time.time() - t0
    if result.error:
        raise RuntimeError(f"FM training for {day} failed: {result.error}")
    with result.checkpoint.as_directory() as d:
        model, state = load_checkpoint(Path(d) / CKPT_FILE)
    summary = summarize_checkpoint_state(state)
    rows_day = summary["day_rows"]
    if rows_day != m.rows:
        raise RuntimeError(f"FM day {day}: trained {rows_day} rows, the manifest has {m.rows}")
    rows_seen = warm_rows + rows_day  # cumulative, like TrainResult.rows_seen
    metrics = summary["metrics"]

    mlflow.set_experiment(experiment_name(cfg, "fm"))
    sample = pq.read_table(f"{cfg.storage.bucket}/{m.parts[0]}", filesystem=fs).slice(0, 64)
    with mlflow.start_run(run_name=f"fm-{day}", tags={
            "day": day, "component": "fm", "model": cfg.models.fm, "train_run": name,
            "warm_start": warm_version or "none"}) as run:
        mlflow.log_params({k: v for k, v in cfg.public_dump().items()
                           if k.startswith(("models.", "ray."))})
        log_dataset_input(raw.uri(day), m, name=f"raw-{day}", sample=sample)
        for point in summary["history"]:
            mlflow.log_metrics({k: float(v) for k, v in point.items()
                                if k.startswith(("loss/", "train/"))}, step=int(point["day_rows"]))
        mlflow.log_metrics({**metrics, "train/seconds": secs, "train/rows_day": rows_day,
                            "train/rows_seen": rows_seen,
                            "train/rows_per_s": rows_day / max(secs, 1e-9),
                            "train/restarts": float(summary["restarts"])})
        version = register_fm(cfg, model, day, rows_seen, [raw.uri(day)], sample=sample,
                              extra={"day": day, "train_run": name},
                              tags={"train_run": name, "warm_start": warm_version or "none",
                                    "rows_day": str(rows_day),
                                    "manifest_digest": m.digest, "num_workers": str(world),
                                    "use_gpu": str(cfg.ray.use_gpu).lower()})
        superseded = supersede_day(cfg, fm_name, day, version)  # a re-run of the day replaces it
        if superseded:
            mlflow.set_tag("supersedes", ",".join(superseded))
    return FMDayResult(day=day, version=version, rows_seen=rows_seen, rows_day=rows_day,
                       run_name=name, warm_start=warm_version, reused=False,
                       run_id=run.info.run_id, metrics=metrics, seconds=secs, num_workers=world,
                       restarts=summary["restarts"], chunks=summary["chunks"],
                       checkpoint=result.checkpoint.path)
