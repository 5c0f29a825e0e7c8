"""DAS throughput and inference count: ``python bench/das.py [--rows N] [--config C]``.

End to end on the embedded stack: N generated rows committed to ``raw/day=D``, a DCNv2 FM
snapshot (the configured size, random weights: inference cost is what is measured) registered
as trained on D-1, then DAS reads the day from S3, infers on a Ray Data actor pool and commits
``augmented/day=D``. Prints rows/s and then, for 1, 4 and 16 VMs reading their slices of the
augmented day, the FM inferences per row (must stay 1: VMs read a column, they never call the FM).

``--repeats K`` (default 3) runs the DAS on the day K times (a re-run replaces the day whole),
each followed by one in-memory pass of the same FM over the same rows, so a burst of machine
load hits both sides; the verdict is the best end-to-end rate over the best in-memory one (as
``bench/train.py`` takes best rounds), with the ratio of the medians printed beside it.

Uses the stack of ``--config`` if it is up, else starts one under ``--state`` (and stops it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import date, timedelta

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--config", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--state", default=None, help="state dir of a stack this bench starts")
    p.add_argument("--repeats", type=int, default=3,
                   help="interleaved (end to end, in memory) rounds; best of each is compared")
    args = p.parse_args()
    if args.repeats < 1:
        p.error("--repeats must be at least 1")

    from exfm.config import load_config
    from exfm.stack import client_env, stack_down, stack_status, stack_up

    overrides = list(args.overrides) + ["das.fm_model=exfm-fm-bench"]
    if args.state:
        overrides.append(f"state_dir={args.state}")
    cfg = load_config(args.config, overrides)
    started = False
    if not all(s.healthy for s in stack_status(cfg, ["s3", "mlflow", "ray"])):
        stack_up(cfg, ["s3", "mlflow", "ray"])
        started = True
    os.environ.update(client_env(cfg))
    try:
        run(cfg, args.rows, args.repeats)
    finally:
        if started:
            stack_down(cfg, ["s3", "mlflow", "ray"])


def run(cfg, rows: int, repeats: int = 3) -> None:
    import pyarrow.compute as pc
    import ray
    import torch

    from exfm.das.augment import augment_day
    from exfm.data.generator import generate
    from exfm.models.build import build_fm, count_parameters
    from exfm.registry.mlflow_registry import ensure_experiments, register_fm
    from exfm.storage.layout import AUGMENTED
    from exfm.storage.partitions import PartitionStore, ingest_dataset
    from exfm.storage.s3 import ensure_bucket

    day = "2030-01-02"
    fm_day = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
    g = cfg.data.generator.model_copy(update={"days": 1, "rows_per_day": rows, "start_date": day})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        schema = generate(g, tmp)
        print(f"generated {rows:,} rows in {time.time() - t0:.1f}s", flush=True)
        ensure_bucket(cfg)
        t0 = time.time()
        ingest_dataset(cfg, tmp, progress=lambda m: None)
        print(f"ingested into raw/day={day} in {time.time() - t0:.1f}s", flush=True)
    torch.manual_seed(0)
    fm = build_fm(schema, None, cfg, name="dcnv2")
    ensure_experiments(cfg, vms=[])
    version = register_fm(cfg, fm, fm_day, 0, [])
    print(f"FM dcnv2: {count_parameters(fm):,} parameters, registered v{version}", flush=True)

    ray.init(address=cfg.ray_address, logging_level="WARNING", log_to_driver=False)
    from exfm.das.augment import fm_forward_rows, infer_partition
    from exfm.models.snapshot import predict_table
    from exfm.storage.layout import RAW
    from exfm.train.trainer import autocast, cpu_bf16_native

    raw = PartitionStore(cfg, RAW)
    inputs = raw.read_day(day)
    end_to_end, in_memory = [], []
    for k in range(repeats):  # interleaved: a burst of load hits both sides
        t0 = time.time()
        res = augment_day(cfg, day, progress=lambda m: print(m, flush=True), gc=False)
        wall = time.time() - t0
        end_to_end.append(res.rows / wall)
        print(f"round {k + 1}/{repeats}: DAS end to end (read S3 -> infer "
              f"{cfg.das.max_actors} actor(s) -> commit): {res.rows:,} rows in {wall:.1f}s = "
              f"{res.rows / wall:,.0f} rows/s (inference stage {res.rows_per_s:,.0f} rows/s)",
              flush=True)
        t0 = time.time()
        # the same model on the same rows, in memory, at DAS's precision: bf16 where
        # models.cpu_amp applies (a bf16 CPU), else fp32
        with autocast(torch.device("cpu"), cfg.models.amp, cpu=cfg.models.cpu_amp):
            predict_table(fm, inputs)
        in_memory.append(inputs.num_rows / (time.time() - t0))
        print(f"round {k + 1}/{repeats}: in memory {in_memory[-1]:,.0f} rows/s", flush=True)
    ratio = max(end_to_end) / max(in_memory)
    median_ratio = statistics.median(end_to_end) / statistics.median(in_memory)
    bf16 = cfg.models.cpu_amp and cpu_bf16_native()
    print(f"\nDAS end to end, best of {repeats}: {max(end_to_end):,.0f} rows/s (median "
          f"{statistics.median(end_to_end):,.0f}); in-memory inference of the same FM on the same "
          f"rows (1 process, {'bf16' if bf16 else 'fp32'} as DAS), best of {repeats}: "
          f"{max(in_memory):,.0f} rows/s (median {statistics.median(in_memory):,.0f}); "
          f"end to end / in memory = {ratio:.2f}x (target >= 0.7x: "
          f"{'MET' if ratio >= 0.7 else 'NOT MET'}; median rounds: {median_ratio:.2f}x)")
    # the FM's own count: infer_partition again (read -> infer, nothing written), rows through
    # the FM's forward per row read
    table = infer_partition(cfg, raw.manifest(day), day, pinned=version)
    forward = fm_forward_rows(table)
    aug = PartitionStore(cfg, AUGMENTED)
    domains = sorted(set(aug.read_day(day, columns=["domain"]).column("domain").to_pylist()))
    tasks = schema.labels
    for n_vms in (1, 4, 16):
        t0 = time.time()
        read = 0
        for k in range(n_vms):  # VM k: a (domain, task) slice; reads fm_pred_<task>, no FM call
            dom, task = domains[k % len(domains)], tasks[k % len(tasks)]
            t = aug.read_day(day, columns=[f"fm_pred_{task}", "fm_version"],
                             filter=pc.field("domain") == dom)
            read += t.num_rows
        # the FM ran once per row, in DAS (its forward-hook count); VM reads add none
        print(f"{n_vms:>2} VM(s): read {read:,} rows in {time.time() - t0:.1f}s; "
              f"FM inferences per row = {(forward or 0) / table.num_rows:.2f} "
              f"(rows through the FM's forward / rows)")
    ray.shutdown()


if __name__ == "__main__":
    main()
