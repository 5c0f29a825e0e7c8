"""The offline reproduction split into DVC stages (``dvc.yaml`` -> ``exfm offline <stage>``).

data -> fm (one per FM kind) -> augment (one per FM kind) -> vm (FM x VM x arm) -> evaluate ->
report. Each stage reads its inputs from files the stage before wrote and runs the same
functions ``exfm reproduce`` runs (:mod:`exfm.reproduce.protocol`): ``train_fm`` streams the
FM over the days and logs its predictions, ``run_cell`` trains one VM trajectory, ``tune_cell``
picks GS/LS/LW where ``offline.tune`` asks. The main table (FM x VM x arm over every domain, the
first task) is staged cell by cell; the tables of ``offline.tables`` (per_domain, per_task,
freshness) run as one ``tables`` stage through ``run_protocol`` itself (their FMs, ``mtl`` and
the frozen copies of the freshness FM, are streamed inside it).

Layout under the stage outputs::

    <data>/schema.yaml, day=*/          the dataset (any source, the bring-your-own format)
    <fm_out>/preds_s<seed>.npz          the FM's logged predictions, one array per day index
    <fm_out>/fm.json                    FM quality and steps per day
    <aug_out>/s<seed>/d<i>.parquet      the day with fm_pred_<task> columns (what a VM reads)
    <vm_out>.json                       one metrics row per (seed, reading)
    <tables_out>/tables.json            the other tables' rows (same format, + fm_quality)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from exfm.config import ExfmConfig
from exfm.reproduce.protocol import (ALL, PLAIN, Cell, ReproduceOptions, ReproduceResult, Run,
                                     run_cell, run_protocol, seed_config, train_fm, tune_cell,
                                     with_fm_pred)
from exfm.storage.layout import fm_pred_column


# -- config and options ---------------------------------------------------------------------------
def stage_config(cfg: ExfmConfig) -> ExfmConfig:
    """``cfg`` with the offline section applied: quick models, tuning on/off."""
    from exfm.commands.reproduce import QUICK_OVERRIDES

    o = cfg.offline
    models = cfg.models.model_copy(update=QUICK_OVERRIDES) if o.quick_models else cfg.models
    dist = cfg.distillation.model_copy(update={"tune": o.tune})
    return cfg.model_copy(update={"models": models, "distillation": dist})


def stage_options(cfg: ExfmConfig) -> ReproduceOptions:
    o = cfg.offline
    return ReproduceOptions(seeds=o.seeds, fms=tuple(o.fms), vms=tuple(o.vms),
                            arms=tuple(a for a in o.arms if a != PLAIN), tables=("main",),
                            fm_days=o.fm_days, max_rows_per_day=o.max_rows_per_day,
                            baseline=PLAIN in o.arms)


def _seeds(opts: ReproduceOptions) -> range:
    return range(opts.seed_start, opts.seed_start + opts.seeds)


# -- stages ---------------------------------------------------------------------------------------
def data_stage(cfg: ExfmConfig, out: str | Path) -> Path:
    """Write the dataset of ``offline.source`` to ``out`` and check its format."""
    from exfm.data.validate import validate_dataset

    out, o = Path(out), cfg.offline
    if out.exists():
        shutil.rmtree(out)
    if o.source == "generate":
        from exfm.data.generator import generate

        g = cfg.data.generator.model_copy(update=dict(days=o.days, rows_per_day=o.rows_per_day))
        generate(type(g).model_validate(g.model_dump()), out)
    elif o.source == "movielens":
        from exfm.data.movielens import write_movielens

        write_movielens(out)
    else:
        shutil.copytree(Path(o.folder), out)
    validate_dataset(out)
    return out


def fm_stage(cfg: ExfmConfig, data: str | Path, kind: str, out: str | Path) -> Path:
    """Stream FM ``kind`` over the days (per seed) and save its logged predictions."""
    cfg, opts = stage_config(cfg), stage_options(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = Run(Path(data), opts, cfg, progress=None)
    result = ReproduceResult(dataset=run.schema.name, days=run.days)
    for seed in _seeds(opts):
        run.preds = {}
        train_fm(run, kind, seed_config(cfg, seed), seed, (), result)
        np.savez(out / f"preds_s{seed}.npz",
                 **{f"d{d}": p for d, p in run.preds.get(kind, {}).items()})
    (out / "fm.json").write_text(json.dumps(
        {"fm": kind, "fm_quality": result.fm_quality, "steps": result.steps}, indent=1,
        default=float))
    return out


def augment_stage(cfg: ExfmConfig, data: str | Path, fm_dir: str | Path,
                  out: str | Path) -> Path:
    """Join the FM's logged predictions onto their days (the DAS output layout)."""
    cfg, opts = stage_config(cfg), stage_options(cfg)
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    run = Run(Path(data), opts, cfg, progress=None)
    for seed in _seeds(opts):
        preds = np.load(Path(fm_dir) / f"preds_s{seed}.npz")
        (out / f"s{seed}").mkdir(parents=True, exist_ok=True)
        for key in preds.files:
            d = int(key[1:])
            pq.write_table(with_fm_pred(run.tables[d], run.tasks, preds[key]),
                           out / f"s{seed}" / f"{key}.parquet")
    return out


def vm_stage(cfg: ExfmConfig, data: str | Path, aug_dir: str | Path, fm: str, vm: str, arm: str,
             out: str | Path) -> Path:
    """Train one VM trajectory (FM ``fm``, VM kind ``vm``, arm ``arm``) per seed on the
    augmented days; write one metrics row per (seed, reading) to ``out`` (JSON)."""
    cfg, opts = stage_config(cfg), stage_options(cfg)
    run = Run(Path(data), opts, cfg, progress=None)
    src = None if arm in ("wo", PLAIN) else fm
    cell = Cell("main", fm, vm, ALL, run.task, arm, src)
    result = ReproduceResult(dataset=run.schema.name, days=run.days)
    rows = []
    for seed in _seeds(opts):
        scfg = seed_config(cfg, seed)
        run.preds = {fm: _read_augmented(Path(aug_dir) / f"s{seed}", run.tasks)}
        if scfg.distillation.tune and arm in ("ah", "ah_sa") and run.tune_day is not None:
            scfg = tune_cell(run, cell, vm, scfg, seed, result).apply(scfg)
        for r in run_cell(run, cell, vm, scfg, seed, result):
            rows.append(dict(dataset=run.schema.name, table="main", fm=fm, vm=vm, domain=ALL,
                             task=run.task, arm=arm, **r))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "steps": result.steps, "tuning": result.tuning,
                               "days": run.days, "vm_days": [d + 1 for d in run.vm_days]},
                              indent=1, default=float))
    return out


def tables_stage(cfg: ExfmConfig, data: str | Path, out: str | Path) -> Path:
    """Run ``offline.tables`` (per_domain, per_task, freshness: ``exfm reproduce``'s tables other
    than main) with the same options as the staged main table; write their rows, steps, tuning
    and FM quality to ``<out>/tables.json`` (no rows when ``offline.tables`` is empty)."""
    import dataclasses

    cfg, opts = stage_config(cfg), stage_options(cfg)
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    doc: dict = {"rows": [], "steps": [], "tuning": [], "fm_quality": [], "days": [],
                 "vm_days": [], "tables": list(cfg.offline.tables)}
    if cfg.offline.tables:
        res = run_protocol(Path(data), cfg, dataclasses.replace(
            opts, tables=tuple(cfg.offline.tables), baseline=False))
        # an FM of offline.fms (the freshness FM, say) streamed again here is the fm@ stage's
        # very stream: its quality and steps are reported once, from there
        staged = set(cfg.offline.fms)
        doc.update(rows=res.rows, tuning=res.tuning, days=res.days, vm_days=res.vm_days,
                   steps=[r for r in res.steps if r.get("model") not in
                          {f"fm:{k}" for k in staged}],
                   fm_quality=[r for r in res.fm_quality if r.get("fm") not in staged])
    (out / "tables.json").write_text(json.dumps(doc, indent=1, default=float))
    return out


def _read_augmented(folder: Path, tasks: list[str]) -> dict[int, np.ndarray]:
    out = {}
    for p in sorted(folder.glob("d*.parquet")):
        t = pq.read_table(p, columns=[fm_pred_column(x) for x in tasks])
        out[int(p.stem[1:])] = np.stack([t.column(c).to_numpy() for c in t.column_names], 1)
    return out


def collect(vm_dir: str | Path | list[str | Path],
            fm_dirs: list[str | Path] = ()) -> ReproduceResult:
    """Every VM stage's rows (and the FM stages' quality) as one :class:`ReproduceResult`;
    ``vm_dir``: a folder of VM stage outputs, or several (the first holds the main table's; the
    ``tables`` stage's folder may follow); ``fm_dirs``: FM stage outputs, or folders holding
    them."""
    dirs = [vm_dir] if isinstance(vm_dir, (str, Path)) else list(vm_dir)
    files = sorted(Path(dirs[0]).glob("*.json"))
    if not files:
        raise FileNotFoundError(f"{dirs[0]}: no VM stage outputs (*.json)")
    first = json.loads(files[0].read_text())
    res = ReproduceResult(dataset="", days=first["days"], vm_days=first["vm_days"])
    for f in files + [f for d in dirs[1:] for f in sorted(Path(d).glob("*.json"))]:
        d = json.loads(f.read_text())
        if d.get("rows") and d.get("days") and d["days"] != res.days:
            raise ValueError(f"{f}: covers days {d['days']}, the VM stages {res.days}")
        res.rows += d["rows"]
        res.steps += d["steps"]
        res.tuning += d["tuning"]
        res.fm_quality += d.get("fm_quality", [])
    res.dataset = res.rows[0]["dataset"] if res.rows else ""
    fm_files = [f for fd in fm_dirs for f in ([Path(fd) / "fm.json"]
                                              if (Path(fd) / "fm.json").exists()
                                              else sorted(Path(fd).glob("*/fm.json")))]
    for f in fm_files:
        d = json.loads(f.read_text())
        res.fm_quality += d["fm_quality"]
        res.steps += d["steps"]
    return res


def evaluate_stage(vm_dir: str | Path, metrics: str | Path, plots: str | Path) -> dict:
    """``metrics`` (JSON: mean AUC/NE/calibration per FM/VM/arm, and each arm's AUC gain over
    ``wo``) and ``plots`` (CSV: one row per FM/VM/arm/reading, for ``dvc plots show``)."""
    import pandas as pd

    res = collect(vm_dir)
    df = pd.DataFrame(res.rows)
    out: dict = {}
    for (fm, vm, arm), g in df.groupby(["fm", "vm", "arm"]):
        out.setdefault(fm, {}).setdefault(vm, {})[arm] = {
            m: round(float(g[m].mean()), 6) for m in ("auc", "ne", "calibration")}
    for fm, by_vm in out.items():
        for vm, arms in by_vm.items():
            if "wo" in arms:
                for arm, m in list(arms.items()):
                    if arm != "wo":
                        m["auc_gain_vs_wo"] = round(m["auc"] - arms["wo"]["auc"], 6)
    Path(metrics).parent.mkdir(parents=True, exist_ok=True)
    Path(metrics).write_text(json.dumps(out, indent=1, sort_keys=True))
    Path(plots).parent.mkdir(parents=True, exist_ok=True)
    df.assign(cell=df.fm + "/" + df.vm + "/" + df.arm)[
        ["cell", "fm", "vm", "arm", "seed", "reading", "auc", "ne", "calibration"]
    ].sort_values(["cell", "seed", "reading"]).to_csv(plots, index=False)
    return out


def report_stage(cfg: ExfmConfig, vm_dir: str | Path | list[str | Path],
                 fm_dirs: list[str | Path], out: str | Path) -> dict[str, Path]:
    """The tables of ``exfm reproduce`` (results.md, CSVs, plots) from the staged runs
    (``vm_dir``: as :func:`collect`)."""
    from exfm.reproduce.report import write_report

    res = collect(vm_dir, fm_dirs)
    meta = {"offline": cfg.offline.model_dump(mode="json"),
            "distillation": cfg.distillation.model_dump(mode="json"), "staged": True}
    return write_report(res, out, meta)


__all__ = ["augment_stage", "collect", "data_stage", "evaluate_stage", "fm_stage",
           "report_stage", "stage_config", "stage_options", "tables_stage", "vm_stage"]
