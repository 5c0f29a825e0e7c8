"""The FM's per-worker loop on Ray Train: the plain ``train_fm_day`` + shard, DDP, checkpoints.

What Ray adds to the local loop (``exfm.train.train_fm_day(model, table, ...)``):
``prepare_model`` (DDP), ``get_dataset_shard`` (this rank's rows), and a checkpoint after every
chunk of rows through ``ray.train.report``. Everything else is the same function on a table.

Resume semantics (``FailureConfig``): when a worker dies, Ray Train restarts the group and
``ray.train.get_checkpoint()`` returns the last checkpoint: weights, optimizer state and
``chunks_done``. Every rank skips that many chunks of its (deterministic) shard and goes on. The
rows a rank trained after that checkpoint in the failed attempt are trained again from the
checkpoint's weights: their first updates died with the failed attempt, so the registered
weights hold each row's update exactly once and ``rows_seen`` (= the day's rows) is exact.
The cost of a restart is at most one chunk per rank of repeated work (``restarts`` counts them);
no row is counted twice.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

CKPT_FILE = "checkpoint.pt"


def _weighted(metrics: dict[str, Any], rows: int) -> dict[str, float]:
    return {k: float(v) * rows for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k.startswith(("loss/", "train/")) and k != "train/examples_per_s"}


def _all_reduce_sums(sums: dict[str, float], device) -> dict[str, float]:
    """Sum a dict of floats over ranks (no-op without a process group)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or not sums:
        return sums
    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def fm_train_loop(config: dict) -> None:
    """``train_loop_per_worker`` of the FM job. ``config`` holds plain data only (see
    ``exfm.jobs.fm_day.run``): cfg dump, schema dump, day, batch size, chunk rows, warm start."""
    import ray
    import ray.train
    import ray.train.torch
    import torch

    from exfm.config import ExfmConfig
    from exfm.data.schema import DatasetSchema
    from exfm.models.build import build_fm
    from exfm.models.snapshot import load_snapshot
    from exfm.compute.scaling import device_name, torch_threads
    from exfm.train.checkpoint import load_checkpoint, save_checkpoint
    from exfm.train.optim import dense_small_tables
    from exfm.train.trainer import train_fm_day

    cfg = ExfmConfig.model_validate(config["cfg"])
    schema = DatasetSchema.model_validate(config["schema"])
    bs, chunk = int(config["batch_size"]), int(config["chunk_rows"])
    # the shard is already cut into equal-step chunks: the trainer must not shrink the batch
    cfg = cfg.model_copy(update={"models": cfg.models.model_copy(update={
        "batch_size": bs, "min_steps_per_day": 0, "torch_threads": torch_threads(cfg)})})
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device() if cfg.ray.use_gpu else torch.device(device_name(cfg))

    state: dict[str, Any] = {}
    resumed = ray.train.get_checkpoint()
    if resumed is not None:  # a restarted group (or a re-run of the same day): go on from there
        with resumed.as_directory() as d:
            model, state = load_checkpoint(Path(d) / CKPT_FILE)
    elif config.get("warm_start") is not None:  # yesterday's registered snapshot
        model, _ = load_snapshot(ray.get(config["warm_start"]))
        state = {}  # optimizer state is not in the registry: a warm start keeps weights only
    else:
        sample = config.get("sample")
        model = build_fm(schema, None, cfg, sample=None if sample is None else ray.get(sample))
    start_chunk = int(state.get("chunks_done", 0))
    history: list[dict] = list(state.get("history", []))
    sums: dict[str, float] = dict(state.get("metric_sums", {}))
    day_rows_done = int(state.get("day_rows", 0))
    restarts = int(state.get("restarts", 0)) + (resumed is not None)
    train_seconds = float(state.get("train_seconds", 0.0))  # inside train_fm_day, this rank
    model.train()
    dense_small_tables(model, cfg.models.sparse_min_elements)  # before DDP records sparse tables
    model = ray.train.torch.prepare_model(model)  # DDP (gloo on CPU, NCCL on GPU); moves to device

    row_log = config.get("row_log_dir")
    rid = schema.request_id
    shard = ray.train.get_dataset_shard("train")
    for chunk_i, batch in enumerate(shard.iter_batches(batch_size=chunk, batch_format="pyarrow",
                                                       prefetch_batches=1)):
        if chunk_i < start_chunk:  # done before the restart: its updates are in the weights
            continue
        if row_log and rid:
            with open(Path(row_log) / f"rank{rank}.jsonl", "a") as f:
                f.write(json.dumps({"chunk": chunk_i, "resumed": resumed is not None,
                                    "rids": batch.column(rid).to_pylist()}) + "\n")
        t_chunk = time.perf_counter()
        res = train_fm_day(model, batch, schema, cfg, state=state, device=device)
        train_seconds += time.perf_counter() - t_chunk
        state = res.state
        # global (all ranks) row-weighted sums of the chunk's progressive metrics
        chunk_sums = _all_reduce_sums({"rows": float(batch.num_rows),
                                       **_weighted(res.metrics, batch.num_rows)}, device)
        day_rows_done += int(chunk_sums["rows"])
        for k, v in chunk_sums.items():
            sums[k] = sums.get(k, 0.0) + v
        point = {"chunk": chunk_i, "day_rows": day_rows_done,
                 **{k: v / chunk_sums["rows"] for k, v in chunk_sums.items() if k != "rows"}}
        history.append(point)
        with tempfile.TemporaryDirectory() as d:
            ckpt = None
            if rank == 0:  # DDP keeps replicas identical: one rank writes
                save_checkpoint(Path(d) / CKPT_FILE, model, {
                    **state, "chunks_done": chunk_i + 1, "history": history,
                    "metric_sums": sums, "day_rows": day_rows_done, "restarts": restarts,
                    "train_seconds": train_seconds,
                    "day": config["day"]})
                ckpt = ray.train.Checkpoint.from_directory(d)
            ray.train.report({"chunk": chunk_i, "day_rows": day_rows_done, **point},
                             checkpoint=ckpt)
    # No final report: Ray Train's Result carries the last checkpoint, whose trainer state holds
    # the day's summary (see summarize_checkpoint_state).


def summarize_checkpoint_state(state: dict[str, Any]) -> dict[str, Any]:
    """The day's summary from the last checkpoint's trainer state: rows, restarts, history and
    the row-weighted progressive metrics over all ranks and chunks."""
    sums = state.get("metric_sums", {})
    total = max(float(sums.get("rows", 0.0)), 1.0)
    return {"day_rows": int(state.get("day_rows", 0)), "chunks": int(state.get("chunks_done", 0)),
            "restarts": int(state.get("restarts", 0)), "history": list(state.get("history", [])),
            "train_seconds": float(state.get("train_seconds", 0.0)),
            "metrics": {k: v / total for k, v in sums.items() if k != "rows"}}
