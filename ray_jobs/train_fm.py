"""FM training for one day on Ray Train: ``python -m ray_jobs.train_fm --day D [--config C]``.

A ``TorchTrainer`` with ``ray.num_workers`` DDP workers (``use_gpu`` from config) reads the
committed parts of ``raw/day=D`` through Ray Data, each worker one shard (equal split, so every
worker takes the same number of steps and DDP never waits on a finished peer), one pass in
arrival order within a shard. It warm-starts from the newest ``exfm-fm`` version trained before
D, checkpoints to the bucket (``RunConfig(storage_path=bucket/ray, storage_filesystem=S3)``),
retries failed workers from the last checkpoint (``FailureConfig(max_failures)``), and the
driver registers the result as a new ``exfm-fm`` version with its tags and lineage.
"""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

from ray_jobs.common import init_ray, job_parser, load_job_config, print_result

CKPT_FILE = "model.pt"
STATE_FILE = "trainer_state.pt"


def scaling_config(cfg):
    """``ray.*`` config -> Ray Train's ScalingConfig (GPU resources only when use_gpu)."""
    from ray.train import ScalingConfig

    res = {"CPU": cfg.ray.cpus_per_worker}
    if cfg.ray.use_gpu:
        res["GPU"] = cfg.ray.gpus_per_worker
    return ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu,
                         resources_per_worker=res)


def train_loop_per_worker(config: dict) -> None:
    """One worker: build (or resume) the FM, train one pass over its shard, report."""
    import pyarrow as pa
    import ray.train
    import ray.train.torch
    import torch

    from exfm.config import ExfmConfig
    from exfm.data.schema import DatasetSchema
    from exfm.models.build import build_fm, unwrap
    from exfm.models.snapshot import load_snapshot, save_snapshot
    from exfm.train.trainer import train_fm_day

    cfg = ExfmConfig.model_validate(config["cfg"])
    schema = DatasetSchema.model_validate(config["schema"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device() if cfg.ray.use_gpu else torch.device("cpu")
    torch.set_num_threads(max(1, int(cfg.ray.cpus_per_worker)))

    state = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:  # a retry after a failure: resume from the last checkpoint
        with ckpt.as_directory() as d:
            model, _ = load_snapshot(Path(d) / CKPT_FILE)
            if (Path(d) / STATE_FILE).exists():
                state = torch.load(Path(d) / STATE_FILE, weights_only=True)
        model.train()
    elif config.get("warm_start") is not None:
        model, _ = load_snapshot(config["warm_start"])
        model.train()
    else:
        model = build_fm(schema, None, cfg)
    model = ray.train.torch.prepare_model(model)

    shard = ray.train.get_dataset_shard("train")
    parts = list(shard.iter_batches(batch_format="pyarrow", batch_size=65536))
    table = pa.concat_tables(parts) if parts else None
    rows_here = 0 if table is None else table.num_rows
    if config.get("row_log_dir") and config.get("rid"):  # tests: which rows each worker saw
        import json

        ids = [] if table is None else table.column(config["rid"]).to_pylist()
        Path(config["row_log_dir"], f"rank-{rank}.json").write_text(json.dumps(ids))
    t0 = time.time()
    res = train_fm_day(model, table, schema, cfg, state=state, device=device)
    metrics = {"rows_seen": rows_here, "steps": res.steps, "seconds": time.time() - t0,
               "rank": rank, **{(k if "/" in k else f"train/{k}"): v for k, v in res.metrics.items()}}
    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if rank == 0:
            save_snapshot(unwrap(model), Path(d) / CKPT_FILE, {"day": config["day"]})
            torch.save(res.state, Path(d) / STATE_FILE)
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=checkpoint)


def run(cfg, day: str, row_log_dir: str | None = None) -> dict:
    """Train the FM for ``day`` on the cluster and register it. Returns the job's result."""
    import mlflow
    import pyarrow.parquet as pq
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from exfm.models.snapshot import load_snapshot
    from exfm.registry.mlflow_registry import (FM_MODEL, connect, ensure_experiments,
                                               experiment_name, latest_fm_version,
                                               load_snapshot_version, log_dataset_input,
                                               register_fm)
    from exfm.storage.partitions import DayNotFound, PartitionStore, load_remote_schema
    from exfm.storage.s3 import arrow_fs

    raw = PartitionStore(cfg, "raw")
    m = raw.manifest(day)
    if m is None:
        raise DayNotFound(f"{raw.uri(day)}: no committed raw partition; land the day first")
    schema = load_remote_schema(cfg)
    fs = arrow_fs(cfg)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ds = ray.data.read_parquet([f"{cfg.storage.bucket}/{k}" for k in m.parts], filesystem=fs)

    warm, warm_version = None, latest_fm_version(cfg, before_day=day)
    if warm_version is not None:
        model, _, _ = load_snapshot_version(cfg, FM_MODEL, warm_version)
        from exfm.models.snapshot import save_snapshot

        buf = io.BytesIO()
        save_snapshot(model, buf, {})
        warm = buf.getvalue()

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg.model_dump(mode="python"), "schema": schema.model_dump(mode="json"),
                           "day": day, "warm_start": warm, "rid": schema.request_id,
                           "row_log_dir": row_log_dir},
        scaling_config=scaling_config(cfg),
        run_config=ray.train.RunConfig(
            name=f"fm-{day}", storage_path=f"{cfg.storage.bucket}/ray", storage_filesystem=fs,
            failure_config=ray.train.FailureConfig(max_failures=cfg.ray.max_failures)),
        datasets={"train": ds},
    )
    t0 = time.time()
    result = trainer.fit()
    secs = time.time() - t0
    if result.error:
        raise RuntimeError(f"FM training for {day} failed: {result.error}")
    with result.checkpoint.as_directory() as d:
        model, _ = load_snapshot(Path(d) / CKPT_FILE)
    rank0 = result.metrics or {}
    rows_seen = int(rank0.get("rows_seen", 0)) * cfg.ray.num_workers  # equal split per worker

    connect(cfg)
    ensure_experiments(cfg)
    mlflow.set_experiment(experiment_name(cfg, "fm"))
    sample = pq.read_table(f"{cfg.storage.bucket}/{m.parts[0]}", filesystem=fs).slice(0, 64)
    with mlflow.start_run(run_name=f"fm-{day}", tags={"day": day, "component": "fm",
                                                      "model": cfg.models.fm}) as run:
        mlflow.log_params({k: v for k, v in cfg.public_dump().items()
                           if k.startswith(("models.", "ray.num_workers", "ray.use_gpu"))})
        log_dataset_input(raw.uri(day), m.digest, name=f"raw-{day}", sample=sample)
        mlflow.log_metrics({"train/seconds": secs, "train/rows_seen": rows_seen,
                            "train/rows_per_s": rows_seen / max(secs, 1e-9),
                            **{k: float(v) for k, v in rank0.items()
                               if k.startswith("train/") and isinstance(v, (int, float))}})
        version = register_fm(cfg, model, day, rows_seen, [raw.uri(day)],
                              extra={"day": day}, sample=sample,
                              tags={"warm_start": warm_version or "none", "run_id": run.info.run_id})
    out = {"day": day, "version": version, "rows_seen": rows_seen, "seconds": secs,
           "warm_start": warm_version, "run_id": run.info.run_id,
           "metrics": {k: v for k, v in rank0.items() if k.startswith("train/")}}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = job_parser(__doc__.splitlines()[0])
    p.add_argument("--row-log-dir", default=None, help="write each worker's row ids there (tests)")
    args = p.parse_args(argv)
    cfg = load_job_config(args)
    init_ray(cfg)
    out = run(cfg, args.day, row_log_dir=args.row_log_dir)
    print_result(out)
    return out


if __name__ == "__main__":
    main()
