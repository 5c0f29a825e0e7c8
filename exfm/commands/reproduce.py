"""``exfm reproduce --data DIR --out OUT``: the paper's offline protocol, no orchestrator.

Writes OUT/results.csv, OUT/results.md (the paper's tables, mean ± std, steps per day),
OUT/steps.csv, OUT/fm_quality.csv and PNG plots. ``--quick`` is a smoke run (one seed, thinned
days, smaller FMs): minutes, not hours.
"""

from __future__ import annotations

from pathlib import Path

import click

from exfm.commands.options import config_options
from exfm.config import ExfmConfig

QUICK_OVERRIDES = {
    # smaller teachers and students: the quick run checks the plumbing, not the paper's numbers
    "fm_hidden": [128, 64], "fm_embed_dim": 16, "fm_tower_hidden": [32], "vm_hidden": [32],
    "embed_dim": 8, "min_steps_per_day": 20, "torch_threads": 1,
}
QUICK_ROWS_PER_DAY = 1000


def _csv(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


@click.command("reproduce")
@click.option("--data", "data_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="dataset folder in the bring-your-own format (8 days)")
@click.option("--out", "out_dir", default="reproduce-out", show_default=True,
              type=click.Path(file_okay=False), help="where results.csv/.md and plots go")
@click.option("--seeds", type=int, default=None, help="seeds (default 3; --quick: 1)")
@click.option("--seed-start", type=int, default=0, show_default=True,
              help="first seed index (run seeds in separate processes, merge with --from-runs)")
@click.option("--from-runs", default=None,
              help="comma-separated OUT folders of earlier runs: merge them into --out, no training")
@click.option("--multi-fm", default=None,
              help="FM kind of the per-domain/per-task tables (default mtl)")
@click.option("--quick", is_flag=True, help="smoke run: 1 seed, thinned days, smaller models")
@click.option("--fms", default=None, help="FM kinds of the main grid (default dcn,dcnv2,dmin)")
@click.option("--vms", default=None, help="VM kinds of the main grid (default fam,fmfam,deepfam)")
@click.option("--tables", default=None,
              help="tables to run (default main,per_domain,per_task,freshness)")
@click.option("--task", default=None, help="task of the main table (default: the first label)")
@click.option("--max-rows-per-day", type=int, default=None,
              help="thin each day to at most this many rows (every k-th row, order kept)")
@click.option("--freshness-ks", default=None,
              help="days after which the freshness FM is frozen (default 2,3)")
@click.option("--vm-fresh", is_flag=True,
              help="rebuild the VM for every reading instead of warm-starting it")
@config_options
def reproduce(cfg: ExfmConfig, data_dir: str | None, out_dir: str, seeds: int | None,
              seed_start: int, from_runs: str | None, multi_fm: str | None, quick: bool,
              fms: str | None, vms: str | None, tables: str | None, task: str | None,
              max_rows_per_day: int | None, freshness_ks: str | None, vm_fresh: bool) -> None:
    """Run the paper's offline protocol (METHOD.md 4.1) on DIR and write the tables."""
    from tqdm import tqdm

    from exfm.reproduce import ReproduceOptions, run_protocol, write_report
    from exfm.reproduce.protocol import TABLES, load_result, merge_results

    out = Path(out_dir)
    if from_runs:
        runs = [load_result(p) for p in _csv(from_runs)]
        merged = merge_results(runs)
        meta = {"merged_from": list(_csv(from_runs))}
        write_report(merged, out, meta)
        click.echo((out / "results.md").read_text())
        return
    if data_dir is None:
        raise click.UsageError("--data DIR is required (or --from-runs to merge earlier runs)")
    kw: dict = {"seed_start": seed_start}
    if multi_fm:
        kw["multi_fm"] = multi_fm
    if quick:
        cfg = cfg.model_copy(update={"models": cfg.models.model_copy(update=QUICK_OVERRIDES)})
        # the main grid's dcnv2 doubles as the multi-task FM (it has one logit per task)
        kw.update(seeds=1, max_rows_per_day=QUICK_ROWS_PER_DAY, freshness_ks=(3,),
                  multi_fm="dcnv2")
    if seeds is not None:
        kw["seeds"] = seeds
    for name, val in (("fms", _csv(fms)), ("vms", _csv(vms)), ("tables", _csv(tables))):
        if val is not None:
            kw[name] = val
    if "tables" in kw:
        bad = [t for t in kw["tables"] if t not in TABLES]
        if bad:
            raise click.BadParameter(f"unknown table(s) {bad}; choose from {TABLES}",
                                     param_hint="--tables")
    if task:
        kw["task"] = task
    if max_rows_per_day is not None:
        kw["max_rows_per_day"] = max_rows_per_day
    if freshness_ks is not None:
        kw["freshness_ks"] = tuple(int(k) for k in _csv(freshness_ks))
    if vm_fresh:
        kw["vm_warm_start"] = False
    opts = ReproduceOptions(**kw)
    bar = tqdm(total=0, unit="step", desc="reproduce", dynamic_ncols=True)

    def on_total(n: int) -> None:
        bar.total = n
        bar.refresh()

    def progress(n: int, what: str) -> None:
        bar.set_postfix_str(what, refresh=False)
        bar.update(n)

    try:
        result = run_protocol(data_dir, cfg, opts, progress=progress, on_total=on_total)
    finally:
        bar.close()
    meta = {**{k: v for k, v in opts.__dict__.items()}, "data": str(data_dir), "quick": quick,
            "models": cfg.models.model_dump(mode="json"),
            "distillation": cfg.distillation.model_dump(mode="json")}
    paths = write_report(result, out, meta)
    click.echo((out / "results.md").read_text())
    click.echo(f"wrote {', '.join(str(p) for p in paths.values())} "
               f"in {result.seconds / 60:.1f} min ({result.day_reads} day reads, at most "
               f"{result.peak_days_in_memory} days in memory)")
