"""Peak memory of a day's FM training, DAS inference and VM training vs day size.

    .venv/bin/python bench/memory.py [--rows 1000000,4000000] [--modes streamed,materialised]

One generated day (``exfm.data.generator``) of the largest ``--rows`` is written as Parquet
(row groups of ``--row-group`` rows); each smaller size is every k-th row of it (the same mix of
row widths: the generator's sequences lengthen through a day, so the first rows are narrower). Each (stage, mode, size)
runs in a fresh process, which prints its peak RSS (``VmHWM``) and its RSS after imports and
model build (the baseline), so a number is one stage's alone:

- ``fm``: ``train_fm_day`` (DCN at bench/train.py's equal sizes, batch ``--batch``);
- ``vm``: ``train_vm_day`` (DeepFM, mode none, same sizes);
- ``das``: the FM's predictions appended as ``fm_pred_<task>`` and written back as Parquet.

``materialised`` reads the whole day (``pq.read_table``) and calls the trainer once (what the day
jobs did before they streamed); ``streamed`` reads it chunk by chunk, ``--chunk`` rows: FM
through ``exfm.train.trainer.train_stream`` over ``exfm.compute.ingest.iter_tables`` (the FM job's
Ray Train worker trains the same way on its shard's chunks), VM through what ``exfm.jobs.vm_day``
runs (``train_vm_stream`` over an ``exfm.data.stream.DayStream``), DAS one chunk in, one out.
- ``reproduce`` (``--stages reproduce``, not in the default set): ``exfm reproduce``'s protocol
  (FM ``dcn``, VM ``fam``, the main table) over a generated 8-day dataset of
  ``--reproduce-rows`` rows a day; ``streamed`` holds the two days in use
  (``exfm.reproduce.protocol.DayTables``, its default), ``materialised`` holds every day (what
  the protocol did before). It prints the days held at most and the days read, as counted by
  ``DayTables``.

Target (issue #18): the peak of the largest day within +/-10 % of the smallest's.
Results: printed and written to bench/out/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAGES = ("fm", "das", "vm")


def _status_mb(key: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc (Linux). Not ``ru_maxrss``:
    Linux carries the parent's peak into a forked child, so it would report the parent's."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reproduce_child(mode: str, path: str) -> dict:
    """``exfm reproduce``'s protocol over the dataset folder ``path`` in this process."""
    from exfm.config import load_config
    from exfm.reproduce import ReproduceOptions, run_protocol
    from exfm.reproduce import protocol

    if mode == "materialised":  # every day held, as before DayTables
        keep_all = protocol.DayTables

        class DayTables(keep_all):
            def __init__(self, data_dir, days, max_rows, keep=2):
                super().__init__(data_dir, days, max_rows, keep=len(days))

        protocol.DayTables = DayTables
    cfg = load_config(None, ["models.torch_threads=2", "distillation.tune=false"], env={})
    base = _status_mb("VmRSS")
    t0 = time.perf_counter()
    res = run_protocol(path, cfg, ReproduceOptions(seeds=1, fms=("dcn",), vms=("fam",),
                                                   tables=("main",), arms=("wo", "ah")))
    peak = _status_mb("VmHWM")
    return {"stage": "reproduce", "mode": mode, "rows": res.steps[0]["rows"],
            "peak_rss_mb": peak, "baseline_rss_mb": base, "above_baseline_mb": peak - base,
            "seconds": time.perf_counter() - t0, "days": len(res.days),
            "peak_days_in_memory": res.peak_days_in_memory, "day_reads": res.day_reads}


def child(stage: str, mode: str, path: str, rows: int, chunk: int, batch: int) -> dict:
    """One stage in this process; returns its figures (called through ``--child``)."""
    if stage == "reproduce":
        return reproduce_child(mode, path)
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    sys.path.insert(0, str(HERE))
    import train as bench_train  # noqa: E402 - the bench's equal-size config

    from exfm.compute.ingest import iter_tables
    from exfm.config import VMConfig
    from exfm.data.schema import DatasetSchema
    from exfm.models.build import build_fm, build_vm
    from exfm.models.snapshot import predict_table
    from exfm.data.stream import DayStream
    from exfm.train.trainer import train_fm_day, train_stream, train_vm_day, train_vm_stream

    torch.manual_seed(0)
    schema = DatasetSchema.model_validate_json(Path(path).with_suffix(".schema.json").read_text())
    small = bench_train.same_model_schema(schema)
    args = argparse.Namespace(batch=batch, threads=2)
    cfg = bench_train.bench_config(args, *bench_train.scfg_sets())
    vm_cfg = VMConfig(name="mem", model="deepfam", task="click", mode="none", control=False)
    model = build_vm(vm_cfg, small, cfg) if stage == "vm" else build_fm(small, None, cfg,
                                                                           name="dcn")
    base = _status_mb("VmRSS")
    t0 = time.perf_counter()
    tables = (iter_tables(path, chunk) if mode == "streamed"
              else iter([pq.read_table(path)]))
    if stage == "das":
        out = Path(path).with_name(f"das-{mode}-{os.getpid()}.parquet")
        writer = None
        for t in tables:
            p = predict_table(model, t)
            t = t.append_column("fm_pred_click", pa.array(p[:, 0], pa.float32()))
            writer = writer or pq.ParquetWriter(out, t.schema)
            writer.write_table(t)
        writer.close()
        out.unlink()
    elif stage == "vm" and mode == "streamed":  # what exfm.jobs.vm_day runs on a day's slice
        train_vm_stream(model, DayStream([path]), small, vm_cfg, cfg, chunk_rows=chunk)
    else:
        fn, extra = (train_fm_day, ()) if stage == "fm" else (train_vm_day, (vm_cfg,))
        train_stream(fn, model, tables, small, *extra, cfg)
    secs = time.perf_counter() - t0
    peak = _status_mb("VmHWM")
    return {"stage": stage, "mode": mode, "rows": rows, "peak_rss_mb": peak,
            "baseline_rss_mb": base, "above_baseline_mb": peak - base, "seconds": secs}


def make_days(sizes: list[int], out: Path, row_group: int) -> dict[int, Path]:
    import pyarrow.parquet as pq

    from exfm.config import load_config
    from exfm.data.generator import generator_schema, iter_days
    from exfm.data.io import thin

    g = load_config(None, [], env={}).data.generator.model_copy(
        update={"days": 1, "rows_per_day": max(sizes), "seed": 11})
    schema = generator_schema(g)
    _, table = next(iter(iter_days(g)))
    paths = {}
    for n in sizes:
        path = out / f"day-{n}.parquet"
        # a smaller day is every k-th row of the largest, not its first rows: the generator's
        # behaviour sequences lengthen through a day (a row near the end of a 4M-row day holds
        # ~40 % more bytes than one in its first 1M), and the target is about the number of rows
        pq.write_table(thin(table, n), path, row_group_size=row_group)
        path.with_suffix(".schema.json").write_text(schema.model_dump_json())
        paths[n] = path
    return paths


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="1000000,4000000", help="comma list of day sizes")
    p.add_argument("--modes", default="streamed,materialised")
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--chunk", type=int, default=262_144, help="rows per streamed chunk")
    p.add_argument("--row-group", type=int, default=131_072)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--reproduce-rows", type=int, default=200_000,
                   help="rows a day of the reproduce stage's 8-day dataset")
    p.add_argument("--out", default=str(HERE / "out"))
    p.add_argument("--child", nargs=3, metavar=("STAGE", "MODE", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sizes = sorted(int(x) for x in args.rows.split(","))
    if args.child:
        stage, mode, path = args.child
        rows = 0 if stage == "reproduce" else int(Path(path).stem.split("-")[1])
        print(json.dumps(child(stage, mode, path, rows, args.chunk, args.batch)), flush=True)
        return {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = args.stages.split(",")
    day_stages = [s for s in stages if s != "reproduce"]
    what = [f"days of {sizes} rows"] * bool(day_stages) + \
        [f"reproduce: 8 days of {args.reproduce_rows:,} rows"] * ("reproduce" in stages)
    print(f"memory bench: {', '.join(what)}, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="exfm-mem-") as tmp:
        t0 = time.perf_counter()
        paths = make_days(sizes, Path(tmp), args.row_group) if day_stages else {}
        if "reproduce" in stages:
            from exfm.config import load_config
            from exfm.data.generator import generate

            g = load_config(None, [], env={}).data.generator.model_copy(
                update={"days": 8, "rows_per_day": args.reproduce_rows})
            generate(g, Path(tmp) / "reproduce")
        print(f"generated in {time.perf_counter() - t0:.0f}s", flush=True)
        print(f"{'stage':<10}{'mode':<14}{'rows':>11}{'peak MB':>9}{'base MB':>9}{'above':>8}"
              f"{'s':>7}")
        for stage in stages:
            for mode in args.modes.split(","):
                for n in (sizes if stage != "reproduce" else [args.reproduce_rows]):
                    path = paths[n] if stage != "reproduce" else Path(tmp) / "reproduce"
                    proc = subprocess.run(
                        [sys.executable, __file__, "--child", stage, mode, str(path),
                         "--chunk", str(args.chunk), "--batch", str(args.batch)],
                        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
                    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("{")),
                                None)
                    if proc.returncode != 0 or line is None:
                        print(proc.stderr[-3000:])
                        raise RuntimeError(f"{stage}/{mode}/{n} failed")
                    r = json.loads(line)
                    results.append(r)
                    print(f"{stage:<10}{mode:<14}{n:>11,}{r['peak_rss_mb']:>9,.0f}"
                          f"{r['baseline_rss_mb']:>9,.0f}{r['above_baseline_mb']:>8,.0f}"
                          f"{r['seconds']:>7.0f}", flush=True)
    if any(r["stage"] != "reproduce" for r in results):
        print("\ntarget: peak RSS of the largest day within +/-10 % of the smallest's")
    verdicts = []
    for r in (r for r in results if r["stage"] == "reproduce"):
        print(f"reproduce {r['mode']:<13} {r['days']} days of {r['rows']:,} rows: at most "
              f"{r['peak_days_in_memory']} days held, {r['day_reads']} day reads, "
              f"{r['above_baseline_mb']:,.0f} MB above baseline")
    for stage in day_stages:
        for mode in args.modes.split(","):
            rs = sorted((r for r in results if (r["stage"], r["mode"]) == (stage, mode)),
                        key=lambda r: r["rows"])
            if len(rs) >= 2:
                ratio = rs[-1]["peak_rss_mb"] / rs[0]["peak_rss_mb"]
                met = abs(ratio - 1) <= 0.10
                verdicts.append({"stage": stage, "mode": mode, "ratio": ratio, "met": met})
                print(f"{stage:<6}{mode:<14}{rs[-1]['rows']:,} / {rs[0]['rows']:,} rows: peak "
                      f"x{ratio:.2f} {'MET' if met else 'NOT MET'}")
    report = {"args": vars(args), "results": results, "verdicts": verdicts,
              "load_average_end": os.getloadavg()[0]}
    (out / "memory.json").write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
