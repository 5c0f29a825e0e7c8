"""FM training for one day on Ray Train: ``python -m ray_jobs.train_fm --day D [--config C]``.

1. The committed parts of ``raw/day=D`` (its manifest, never a listing) through Ray Data and the
   explicit pyarrow S3 filesystem; :class:`~exfm.rayjobs.ingest.OrderedSplit` gives rank ``r`` the
   contiguous ``r``-th slice of the day in arrival order (every row exactly once).
2. ``TorchTrainer`` with ``ScalingConfig`` from ``ray.*`` (``use_gpu`` -> CUDA + NCCL), each worker
   running :func:`exfm.rayjobs.fm_worker.fm_train_loop`: DDP over the plain ``train_fm_day``,
   warm-started from the newest ``exfm-fm`` version trained before D.
3. A checkpoint on the bucket after every chunk (``ray.checkpoints_per_day``), under
   ``RunConfig(name=fm-D-<data digest>-w<warm version>-p<plan hash>,
   storage_path=<bucket>/ray/fm)``: a killed
   worker resumes from it (``FailureConfig(max_failures)``), and so does a re-run of the same day
   on the same data (an Airflow retry), instead of starting over.
4. Metrics to MLflow (one run ``fm-D`` in ``exfm-fm``), the snapshot registered as a new
   ``exfm-fm`` version with its tags. A re-run that finds its version registered returns it.

The last stdout line is ``EXFM_RESULT {"version", "rows_seen", "rows_day", "metrics", ...}``:
``rows_day`` = rows of day D trained on (always the manifest's row count: each row's update is in
the weights exactly once, restarts included); ``rows_seen`` = cumulative over the warm-start chain
(the version tag ``rows_seen``; ``rows_day`` is tagged too).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ray_jobs.common import init_ray, job_parser, load_job_config, main_guard, print_result

STORAGE_SUBDIR = "ray/fm"


def run_name(day: str, digest: str, warm_version: str | None, plan: dict | None = None) -> str:
    """Deterministic per (day, the day's data, warm start, training plan): a retry resumes from
    its checkpoints; new data, another warm start, or another plan (workers, batch, chunks, model
    config) starts a fresh run instead of skipping chunks of differently cut shards."""
    import hashlib
    import json

    name = f"fm-{day}-{digest[:8]}-w{warm_version or 0}"
    if plan:
        name += "-p" + hashlib.sha256(json.dumps(plan, sort_keys=True, default=str).encode()
                                      ).hexdigest()[:6]
    return name


def _registered(cfg, name: str) -> str | None:
    """The ``exfm-fm`` version an earlier attempt of this exact run registered, if any."""
    from exfm.registry.mlflow_registry import FM_MODEL, connect

    try:
        versions = connect(cfg).search_model_versions(f"name='{FM_MODEL}'")
    except Exception:  # noqa: BLE001 - no registered model yet
        return None
    done = [v for v in versions if v.tags.get("train_run") == name
            and v.tags.get("archived") != "true"]
    return str(max(int(v.version) for v in done)) if done else None


def run(cfg, day: str, row_log_dir: str | None = None) -> dict:
    """Train the FM for ``day`` on the cluster, register it, return the job's result."""
    import mlflow
    import pyarrow.parquet as pq
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from exfm.models.snapshot import save_snapshot
    from exfm.rayjobs.fm_worker import (CKPT_FILE, FAIL_ENV, fm_train_loop,
                                        summarize_checkpoint_state)
    from exfm.rayjobs.ingest import (OrderedSplit, chunk_rows, equal_steps_batch_size,
                                     read_day_dataset, shard_bounds)
    from exfm.rayjobs.scaling import scaling_config
    from exfm.registry.mlflow_registry import (FM_MODEL, connect, ensure_experiments,
                                               experiment_name, latest_fm_version,
                                               load_snapshot_version, log_dataset_input,
                                               register_fm)
    from exfm.storage.partitions import DayNotFound, PartitionStore, load_remote_schema
    from exfm.storage.s3 import arrow_fs
    from exfm.train.checkpoint import load_checkpoint
    from exfm.train.optim import effective_batch_size

    raw = PartitionStore(cfg, "raw")
    m = raw.manifest(day)
    if m is None:
        raise DayNotFound(f"{raw.uri(day)}: no committed raw partition; land the day first")
    schema = load_remote_schema(cfg)
    client = connect(cfg)
    ensure_experiments(cfg, vms=[])

    warm_version = latest_fm_version(cfg, before_day=day)
    world = cfg.ray.num_workers
    sizes = [b - a for a, b in shard_bounds(m.rows, world)]
    bs = equal_steps_batch_size(sizes, effective_batch_size(min(sizes), cfg.models))
    chunk = chunk_rows(max(sizes), bs, cfg.ray.checkpoints_per_day)
    name = run_name(day, m.digest, warm_version, plan={
        "world": world, "batch": bs, "chunk": chunk, "models": cfg.models.model_dump(mode="json")})
    done = _registered(cfg, name)
    if done is not None:  # this exact run finished and registered before (a retried task)
        mv = client.get_model_version(FM_MODEL, done)
        print(f"exfm-fm v{done} already holds run {name}; nothing to do", flush=True)
        return {"day": day, "version": done, "rows_seen": int(mv.tags.get("rows_seen", 0)),
                "rows_day": int(mv.tags.get("rows_day", 0)),
                "run_name": name, "warm_start": warm_version, "reused": True,
                "run_id": mv.tags.get("run_id"), "metrics": {}}
    warm_ref, warm_rows = None, 0
    if warm_version is not None:
        import io

        model, _, _ = load_snapshot_version(cfg, FM_MODEL, warm_version)
        buf = io.BytesIO()
        save_snapshot(model, buf, {})
        warm_ref = ray.put(buf.getvalue())  # through the object store, not the config pickle
        warm_rows = int(client.get_model_version(FM_MODEL, warm_version).tags.get("rows_seen", 0))

    if row_log_dir:
        Path(row_log_dir).mkdir(parents=True, exist_ok=True)
    loop_config = {
        "cfg": cfg.model_dump(mode="python"), "schema": schema.model_dump(mode="json"), "day": day,
        "batch_size": bs, "chunk_rows": chunk,
        "warm_start": warm_ref, "warm_rows_seen": warm_rows, "row_log_dir": row_log_dir,
        "fail_spec": os.environ.get(FAIL_ENV)}
    fs = arrow_fs(cfg)
    trainer = TorchTrainer(
        fm_train_loop, train_loop_config=loop_config, scaling_config=scaling_config(cfg),
        datasets={"train": read_day_dataset(cfg, m)}, dataset_config=OrderedSplit(),
        run_config=ray.train.RunConfig(
            name=name, storage_path=f"{cfg.storage.bucket}/{STORAGE_SUBDIR}", storage_filesystem=fs,
            failure_config=ray.train.FailureConfig(max_failures=cfg.ray.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)))
    print(f"FM {cfg.models.fm} day {day}: {m.rows} rows on {world} worker(s) "
          f"(shards {sizes}, batch {bs}, chunk {chunk}), run {name}, "
          f"warm start {warm_version or 'none'}", flush=True)
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
    return {"day": day, "version": version, "rows_seen": rows_seen, "rows_day": rows_day,
            "seconds": secs,
            "warm_start": warm_version, "run_id": run.info.run_id, "run_name": name,
            "num_workers": world, "restarts": summary["restarts"], "chunks": summary["chunks"],
            "checkpoint": result.checkpoint.path, "reused": False, "metrics": metrics}


def main(argv: list[str] | None = None) -> dict:
    p = job_parser(__doc__.splitlines()[0])
    p.add_argument("--row-log-dir", default=None,
                   help="tests: each worker appends the row ids it trains on there")
    args = p.parse_args(argv)
    cfg = load_job_config(args)
    init_ray(cfg)
    out = run(cfg, args.day, row_log_dir=args.row_log_dir)
    print_result(out)
    return out


if __name__ == "__main__":
    main_guard(main)
