"""The paper's offline public-data protocol (METHOD.md, section 4.1), with no orchestrator.

Eight day splits. The FM trains one pass per day, in order, warm from the day before (a
streaming teacher); after day ``fm_days + r`` it infers on day ``fm_days + r + 1``, which is
the VM's training day of reading ``r``; the VM trains one pass on that day with the FM's
predictions as an extra column and is scored on the next day (serving head only). With 8 days
and ``fm_days = 4`` that gives 3 readings.

What the VM trains on (the same for every arm, so arm differences are the method's):
  - reading 1 is the paper's setting exactly: a fresh VM, one pass over day 5;
  - readings 2 and 3 continue the *same* VM (weights, optimizer and SA state), one pass over
    day 6, then day 7: a streaming VM, as the daily pipeline runs it (``vm_warm_start``;
    False rebuilds a fresh VM for every reading instead);
  - every arm of a (seed, VM kind) starts from the same initial weights (``build_vm`` seeds
    its init from ``models.seed``) and sees the same rows in the same order; the ``wo`` arm does
    not depend on the FM, so it is trained once and shared by every FM row of its VM.

Self-tuned amplifiers (``distillation.tune``, the default): before reading 1, the AH and AH+SA arms
of each (FM, VM, slice) pick GS/LS/LW (each arm for its own loss) on the days *before* the first scored day: a fresh VM per
candidate trains on day ``fm_days`` with the predictions of the FM snapshot after day
``fm_days - 1`` and is scored on day ``fm_days + 1`` (the VM's first training day, never a
scored day). The choice then holds for every reading. ``exfm.train.tuning`` has the search.

Tables: ``main`` (FM x VM grid, one VM over every domain, the first task), ``per_domain`` (one
multi-task FM, one VM per domain), ``per_task`` (one multi-task FM, one VM per task),
``freshness`` (the FM frozen after day k, so the gap between the FM and the VM's day grows; with
AH and with AH + SA).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from exfm.config import ExfmConfig, VMConfig
from exfm.data.batches import fm_pred_column
from exfm.data.slices import slice_table
from exfm.data.io import read_day, thin  # noqa: F401 (thin: re-exported)
from exfm.data.schema import DatasetSchema, list_days, load_schema

ARMS = ("wo", "vanilla", "ah", "ah_sa")
# The plain baseline of the main table: the same VM on the same rows, trained the way a user
# would write it in an afternoon (see :func:`plain_config`); not one of the method's arms.
PLAIN = "plain"
ARM_MODE = {"wo": "none", "vanilla": "vanilla", "ah": "ah", "ah_sa": "ah_sa", PLAIN: "none"}
TABLES = ("main", "per_domain", "per_task", "freshness")
RESULT_COLUMNS = ["dataset", "table", "fm", "vm", "domain", "task", "arm", "seed", "reading",
                  "auc", "logloss", "ne", "calibration"]
ALL = "all"


@dataclass(frozen=True)
class ReproduceOptions:
    """What to run. Defaults: the paper's grid, 3 seeds, every table.

    fms/vms: the FM and VM kinds of the main grid. fm_days: days the FM trains before the first
    reading. multi_fm/multi_vm: the kinds of the one-FM-many-VMs tables. fresh_pair: (FM, VM) of
    the freshness study; freshness_ks: the days (1-based) after which that FM is frozen.
    max_rows_per_day: keep every k-th row of a day so that at most this many remain (order kept).
    seed_start: the first seed index (seeds run ``seed_start .. seed_start + seeds - 1``), so
    seeds can run as separate processes and be merged with :func:`load_result`.
    """

    seeds: int = 3
    seed_start: int = 0
    fms: tuple[str, ...] = ("dcn", "dcnv2", "dmin")
    vms: tuple[str, ...] = ("fam", "fmfam", "deepfam")
    arms: tuple[str, ...] = ARMS
    tables: tuple[str, ...] = TABLES
    fm_days: int = 4
    task: str | None = None
    multi_fm: str = "mtl"
    multi_vm: str = "deepfam"
    fresh_pair: tuple[str, str] = ("dcnv2", "deepfam")
    freshness_ks: tuple[int, ...] = (2, 3)
    vm_warm_start: bool = True
    max_rows_per_day: int | None = None
    baseline: bool = True  # the main table's plain one-pass row per VM kind (arm "plain")


@dataclass
class ReproduceResult:
    """Everything a report needs: one dict per (cell, seed, reading), steps, FM quality."""

    dataset: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    fm_quality: list[dict[str, Any]] = field(default_factory=list)
    days: list[str] = field(default_factory=list)
    vm_days: list[int] = field(default_factory=list)  # 1-based VM training day of each reading
    seconds: float = 0.0
    tuning: list[dict[str, Any]] = field(default_factory=list)  # one row per tuning trial
    day_reads: int = 0  # days read from disk (a day is read again when it was let go)
    peak_days_in_memory: int = 0  # the most days held at once


# --- data ---------------------------------------------------------------------------------------
def fm_age_days(fm_source: str, day: int) -> int:
    """Days between the FM's last training day and VM day index ``day`` (0-based): 1 for the
    streaming FM (it trained through the day before), ``day - k + 1`` for ``kind@dk`` (frozen
    after day k, 1-based)."""
    if "@d" not in fm_source:
        return 1
    return day - int(fm_source.split("@d")[1]) + 1


def with_fm_pred(table: pa.Table, tasks: list[str], pred: np.ndarray,
                 age: int | None = None) -> pa.Table:
    """``table`` plus one ``fm_pred_<task>`` column per task (the DAS output layout), and the
    ``fm_age_days`` column (the FM's freshness gap, which the Student Adapter sees) when
    ``age`` is given."""
    for t, task in enumerate(tasks):
        name = fm_pred_column(task)
        col = pa.array(pred[:, t].astype(np.float32))
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, col)
        else:
            table = table.append_column(name, col)
    if age is not None:
        from exfm.data.batches import FM_AGE_COLUMN
        col = pa.array(np.full(table.num_rows, float(age), dtype=np.float32))
        if FM_AGE_COLUMN in table.column_names:
            table = table.set_column(table.column_names.index(FM_AGE_COLUMN), FM_AGE_COLUMN, col)
        else:
            table = table.append_column(FM_AGE_COLUMN, col)
    return table


def domain_slice(table: pa.Table, schema: DatasetSchema, domain: str) -> pa.Table:
    """The rows of one domain (``all`` = every row): :func:`exfm.data.slices.slice_table`."""
    return slice_table(table, schema, domain=domain)


def domains_of(table: pa.Table, schema: DatasetSchema) -> list[str]:
    if not schema.domain:
        return []
    vals = pc.unique(pc.cast(table.column(schema.domain), pa.string())).to_pylist()
    return sorted(v for v in vals if v is not None)


class DayTables:
    """The dataset's days, indexed like a list, read (and thinned) when asked for and kept only
    while they are among the last ``keep`` days asked for. Every step of the protocol uses at most
    two days at a time (a training day and the day it is scored on, or the FM's day and the day it
    infers on), so a run holds two days, not all of them; a day asked for again is read again
    (the same rows: the thinning is deterministic).

    ``reads`` counts the days read from disk and ``peak_resident`` the most days held at once,
    where they happen.
    """

    def __init__(self, data_dir: Path, days: list[str], max_rows: int | None, keep: int = 2):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.data_dir, self.days, self.max_rows, self.keep = Path(data_dir), list(days), \
            max_rows, keep
        self._held: dict[int, pa.Table] = {}  # insertion order = least recently used first
        self.reads = 0
        self.peak_resident = 0

    def __len__(self) -> int:
        return len(self.days)

    def __getitem__(self, i: int) -> pa.Table:
        if not -len(self.days) <= i < len(self.days):
            raise IndexError(f"day index {i} out of range ({len(self.days)} days)")
        i %= len(self.days)
        table = self._held.pop(i, None)
        if table is None:
            while len(self._held) >= self.keep:  # drop the least recently used before reading
                self._held.pop(next(iter(self._held)))
            table = thin(read_day(self.data_dir, self.days[i]), self.max_rows)
            self.reads += 1
        self._held[i] = table
        self.peak_resident = max(self.peak_resident, len(self._held))
        return table

    def resident(self) -> list[int]:
        """Indices of the days held now, least recently used first."""
        return list(self._held)


# --- one VM trajectory --------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One row group of a results table: a VM trajectory over the readings for one arm."""

    table: str
    fm: str            # the FM name the row is reported under ("-" never: wo rows are copied)
    vm: str
    domain: str
    task: str
    arm: str
    fm_source: str | None  # key of the FM predictions it trains with (None for wo)


def _seed_cfg(cfg: ExfmConfig, seed: int) -> ExfmConfig:
    c = cfg.model_copy(deep=True)
    c.models.seed = cfg.models.seed + seed
    return c


class _Run:
    """State of one reproduce run: the days, the FM predictions, the progress bar."""

    def __init__(self, data_dir: Path, opts: ReproduceOptions, cfg: ExfmConfig,
                 progress: Callable[[int, str], None] | None):
        self.opts, self.cfg, self.progress = opts, cfg, progress
        self.schema = load_schema(data_dir)
        self.days = list_days(data_dir)
        need = opts.fm_days + 2
        if len(self.days) < need:
            raise ValueError(f"{data_dir}: {len(self.days)} day(s); the protocol needs at least "
                             f"{need} (fm_days={opts.fm_days} + a VM day + a test day)")
        self.tables = DayTables(data_dir, self.days, opts.max_rows_per_day)
        self.tasks = list(self.schema.labels)
        self.task = opts.task or self.tasks[0]
        if self.task not in self.tasks:
            raise ValueError(f"task {self.task!r} is not a label of {self.schema.name}")
        self.readings = len(self.days) - opts.fm_days - 1
        # the VM day of reading r (0-based index into days), its test day is +1
        self.vm_days = [opts.fm_days + r for r in range(self.readings)]
        # the tuning day (0-based): the day before the first VM day; the FM snapshot that
        # labels it has trained on at least one day. None = nothing earlier to tune on.
        self.tune_day = opts.fm_days - 1 if opts.fm_days >= 2 else None
        self.preds: dict[str, dict[int, np.ndarray]] = {}

    def tick(self, what: str) -> None:
        if self.progress:
            self.progress(1, what)


def _train_fm(run: _Run, kind: str, cfg: ExfmConfig, seed: int, freeze_after: tuple[int, ...],
              result: ReproduceResult) -> None:
    """Stream the FM over the days; log predictions for every VM day (and frozen copies)."""
    from exfm.models import build_fm, predict_table
    from exfm.train import train_fm_day

    fm = build_fm(run.schema, run.tasks, cfg, kind, sample=run.tables[0])
    state = None
    last_needed = run.vm_days[-1]
    for i in range(last_needed):  # train days 0..last VM day - 1
        res = train_fm_day(fm, run.tables[i], run.schema, cfg, state=state)
        state = res.state
        result.steps.append(dict(model=f"fm:{kind}", seed=seed, day=run.days[i], rows=res.metrics
                                 .get("rows", run.tables[i].num_rows), steps=res.steps,
                                 batch_size=res.metrics.get("batch_size")))
        run.tick(f"FM {kind} day {i + 1}")
        k = i + 1  # days trained so far (1-based day of the snapshot)
        if k == run.tune_day:  # labels the tuning day (an earlier day, never scored)
            run.preds.setdefault(kind, {})[k] = predict_table(fm, run.tables[k], run.schema)
        if k in run.vm_days:  # fresh FM: infers on the next day = the VM day of a reading
            p = predict_table(fm, run.tables[k], run.schema)
            run.preds.setdefault(kind, {})[k] = p
            _fm_quality(run, result, kind, seed, k, p)
        if k in freeze_after:  # frozen FM: this snapshot infers every later VM day
            frozen = copy.deepcopy(fm)
            for d in run.vm_days:
                if d > k:
                    p = predict_table(frozen, run.tables[d], run.schema)
                    run.preds.setdefault(f"{kind}@d{k}", {})[d] = p
                    _fm_quality(run, result, f"{kind}@d{k}", seed, d, p)
            del frozen


def _fm_quality(run: _Run, result: ReproduceResult, fm: str, seed: int, d: int,
                p: np.ndarray) -> None:
    """Record the FM's metrics on day index ``d`` (each task), before anything trains on it."""
    from exfm.train.metrics import all_metrics

    for t, task in enumerate(run.tasks):
        y = np.asarray(run.tables[d].column(task).to_numpy(zero_copy_only=False))
        result.fm_quality.append(dict(fm=fm, seed=seed, day=run.days[d], task=task,
                                      freshness_gap=fm_age_days(fm, d), **all_metrics(y, p[:, t])))


def plain_config(cfg: ExfmConfig) -> ExfmConfig:
    """The common one-pass recipe: dense Adam on every parameter at one lr (``models.lr``), no
    distillation. Batches, rows and the VM's architecture stay the students' own."""
    return cfg.model_copy(update={"models": cfg.models.model_copy(update={
        "embedding_optimizer": "adam", "embedding_lr": cfg.models.lr})})


def _vm_config(cell: Cell, vm_kind: str) -> VMConfig:
    name = f"{cell.table}-{vm_kind}-{cell.arm}".replace("_", "-")
    return VMConfig(name=name[:60], model=vm_kind, task=cell.task,
                    domain=None if cell.domain == ALL else cell.domain, mode=ARM_MODE[cell.arm],
                    control=False)


def _tune_key(cell: Cell, vm_kind: str) -> tuple | None:
    """Cells sharing a key share one tuning: same VM, slice, task, arm and FM (a frozen copy of
    an FM tunes with that FM's fresh predictions: the tuning day is before any freeze matters).
    AH and AH+SA tune separately, each for its own loss."""
    if cell.arm not in ("ah", "ah_sa") or cell.fm_source is None:
        return None
    return (vm_kind, cell.domain, cell.task, cell.arm, cell.fm_source.split("@")[0])


def _tune_cell(run: _Run, cell: Cell, vm_kind: str, cfg: ExfmConfig, seed: int,
               result: ReproduceResult):
    """GS/LS/LW for ``cell`` from the tuning day (never a scored day); records every trial."""
    from exfm.train.tuning import tune_amplifiers

    src = cell.fm_source.split("@")[0]
    d = run.tune_day
    train = with_fm_pred(run.tables[d], run.tasks, run.preds[src][d])
    train = thin(domain_slice(train, run.schema, cell.domain), cfg.distillation.tune_max_rows)
    valid = thin(domain_slice(run.tables[d + 1], run.schema, cell.domain),
                 cfg.distillation.tune_max_rows)
    res = tune_amplifiers(train, valid, run.schema, _vm_config(cell, vm_kind), cfg,
                          on_trial=lambda t: run.tick(
                              f"tune {cell.table} {src}->{vm_kind} gs={t.gs:g} ls={t.ls:g} "
                              f"lw={t.lw:g}"))
    for rec in res.records():
        result.tuning.append(dict(table=cell.table, fm=src, vm=vm_kind, domain=cell.domain,
                                  task=cell.task, arm=cell.arm, seed=seed, train_day=run.days[d],
                                  valid_day=run.days[d + 1], metric=res.metric, **rec))
    return res


def _run_cell(run: _Run, cell: Cell, vm_kind: str, cfg: ExfmConfig, seed: int,
              result: ReproduceResult) -> list[dict[str, Any]]:
    """Train one VM trajectory over the readings; returns one metrics row per reading."""
    from exfm.models import build_vm
    from exfm.train import evaluate, train_vm_day

    vm = _vm_config(cell, vm_kind)
    if cell.arm == PLAIN:
        cfg = plain_config(cfg)
    model, state, rows = None, None, []
    for r, d in enumerate(run.vm_days):
        train = run.tables[d]
        if cell.fm_source is not None:  # the DAS column is logged on the shared day, then sliced
            train = with_fm_pred(train, run.tasks, run.preds[cell.fm_source][d],
                                 age=fm_age_days(cell.fm_source, d))
        train = domain_slice(train, run.schema, cell.domain)
        if model is None or not run.opts.vm_warm_start:
            model, state = build_vm(vm, run.schema, cfg, sample=train), None
        res = train_vm_day(model, train, run.schema, vm, cfg, state=state)
        state = res.state
        test = domain_slice(run.tables[d + 1], run.schema, cell.domain)
        m = evaluate(model, test, run.schema, cell.task)
        rows.append(dict(seed=seed, reading=r + 1, auc=m["auc"], logloss=m["logloss"],
                         ne=m["ne"], calibration=m["calibration"]))
        result.steps.append(dict(model=f"vm:{vm_kind}", table=cell.table, arm=cell.arm,
                                 domain=cell.domain, task=cell.task, seed=seed,
                                 day=run.days[d], rows=train.num_rows, steps=res.steps,
                                 batch_size=res.metrics.get("batch_size")))
        run.tick(f"{cell.table} {cell.fm}->{vm_kind} {cell.arm} r{r + 1}")
    return rows


def plan(run: _Run) -> tuple[list[tuple[str, tuple[int, ...]]], list[tuple[Cell, str, list[str]]]]:
    """(FMs to stream with their freeze days, VM trajectories as (cell, vm kind, report-as FMs))."""
    o = run.opts
    fms: dict[str, set[int]] = {}
    cells: list[tuple[Cell, str, list[str]]] = []
    arms = [a for a in ARMS if a in o.arms]
    if "main" in o.tables:
        for kind in o.fms:
            fms.setdefault(kind, set())
        for vk in o.vms:
            for arm in ["wo"] * ("wo" in arms) + [PLAIN] * o.baseline:
                cells.append((Cell("main", "*", vk, ALL, run.task, arm, None), vk, list(o.fms)))
            for kind in o.fms:
                for arm in arms:
                    if arm != "wo":
                        cells.append((Cell("main", kind, vk, ALL, run.task, arm, kind), vk, [kind]))
    multi = [(t, dom, task) for t, dom, task in
             ([("per_domain", d, run.task) for d in domains_of(run.tables[0], run.schema)]
              if "per_domain" in o.tables else [])
             + ([("per_task", ALL, t) for t in run.tasks] if "per_task" in o.tables else [])]
    if multi:
        fms.setdefault(o.multi_fm, set())
    for table, dom, task in multi:
        for arm in arms:
            src = None if arm == "wo" else o.multi_fm
            cells.append((Cell(table, o.multi_fm, o.multi_vm, dom, task, arm, src), o.multi_vm,
                          [o.multi_fm]))
    if "freshness" in o.tables:
        fk, vk = o.fresh_pair
        ks = [k for k in o.freshness_ks if 1 <= k < run.vm_days[-1]]
        fms.setdefault(fk, set()).update(ks)
        # the baseline (wo) and the fresh FM (gap 1) come from the same trajectories as main
        base = [("wo", None, f"{fk}@fresh")] + [(a, fk, f"{fk}@fresh") for a in ("ah", "ah_sa")]
        for k in ks:
            base += [(a, f"{fk}@d{k}", f"{fk}@d{k}") for a in ("ah", "ah_sa")]
        for arm, src, name in base:
            cells.append((Cell("freshness", name, vk, ALL, run.task, arm, src), vk, [name]))
    return sorted((k, tuple(sorted(v))) for k, v in fms.items()), cells


def run_protocol(data_dir: str | Path, cfg: ExfmConfig, opts: ReproduceOptions,
                 progress: Callable[[int, str], None] | None = None,
                 on_total: Callable[[int], None] | None = None) -> ReproduceResult:
    """Run every table of ``opts`` for every seed; ``progress(n, what)`` after each unit.

    A unit is one FM day or one VM reading. Trajectories that are identical by construction
    (``wo`` under several FMs, the fresh-FM arms of the freshness study) are trained once and
    reported under each name.
    """
    from exfm.train.tuning import candidates

    t0 = time.perf_counter()
    data_dir = Path(data_dir)
    run = _Run(data_dir, opts, cfg, progress)
    fms, cells = plan(run)
    unique: dict[tuple, tuple[Cell, str]] = {}
    for cell, vk, _ in cells:
        unique.setdefault(_key(cell, vk), (cell, vk))
    tuning = cfg.distillation.tune and run.tune_day is not None
    n_tune = len({_tune_key(c, vk) for c, vk in unique.values()} - {None}) if tuning else 0
    total = opts.seeds * (len(fms) * run.vm_days[-1] + len(unique) * run.readings
                          + n_tune * len(candidates(cfg)))
    if on_total:
        on_total(total)
    result = ReproduceResult(dataset=run.schema.name, days=run.days,
                             vm_days=[d + 1 for d in run.vm_days])
    for seed in range(opts.seed_start, opts.seed_start + opts.seeds):
        scfg = _seed_cfg(cfg, seed)
        run.preds = {}
        for kind, ks in fms:
            _train_fm(run, kind, scfg, seed, ks, result)
        cache: dict[tuple, list[dict]] = {}
        tuned: dict[tuple, Any] = {}
        for key, (cell, vk) in unique.items():
            ccfg, tk = scfg, _tune_key(cell, vk)
            if tuning and tk is not None:
                if tk not in tuned:
                    tuned[tk] = _tune_cell(run, cell, vk, scfg, seed, result)
                ccfg = tuned[tk].apply(scfg)
            cache[key] = _run_cell(run, cell, vk, ccfg, seed, result)
        for cell, vk, names in cells:
            for fm_name in names:
                for r in cache[_key(cell, vk)]:
                    result.rows.append(dict(dataset=run.schema.name, table=cell.table, fm=fm_name,
                                            vm=vk, domain=cell.domain, task=cell.task,
                                            arm=cell.arm, **r))
    result.seconds = time.perf_counter() - t0
    result.day_reads, result.peak_days_in_memory = run.tables.reads, run.tables.peak_resident
    return result


def _key(cell: Cell, vm_kind: str) -> tuple:
    """Trajectories with the same key are identical (same VM, slice, task, arm and FM input)."""
    src = cell.fm_source
    if src is not None and src.endswith("@fresh"):
        src = src[: -len("@fresh")]
    return (vm_kind, cell.domain, cell.task, cell.arm, src)


# Stage-level entry points (``exfm.reproduce.stages``, the DVC stages): the very functions
# run_protocol runs, one FM stream or one VM trajectory at a time.
Run = _Run
seed_config = _seed_cfg
train_fm = _train_fm
tune_cell = _tune_cell
run_cell = _run_cell


def merge_results(results: list[ReproduceResult]) -> ReproduceResult:
    """One result from several runs of the same protocol (e.g. one process per seed)."""
    if not results:
        raise ValueError("nothing to merge")
    out = ReproduceResult(dataset=results[0].dataset, days=results[0].days,
                          vm_days=results[0].vm_days)
    for r in results:
        if r.days != out.days:
            raise ValueError(f"runs cover different days: {r.days} vs {out.days}")
        out.rows += r.rows
        out.steps += r.steps
        out.fm_quality += r.fm_quality
        out.tuning += r.tuning
        out.seconds = max(out.seconds, r.seconds)
        out.day_reads += r.day_reads
        out.peak_days_in_memory = max(out.peak_days_in_memory, r.peak_days_in_memory)
    return out


def load_result(out_dir: str | Path) -> ReproduceResult:
    """Read back what :func:`exfm.reproduce.report.write_report` wrote under ``out_dir``."""
    import json

    import pandas as pd

    out_dir = Path(out_dir)
    meta = json.loads((out_dir / "run.json").read_text())

    def records(name):
        p = out_dir / name
        if not p.exists() or p.stat().st_size == 0:
            return []
        try:
            return pd.read_csv(p, keep_default_na=False, na_values=[""]).to_dict("records")
        except pd.errors.EmptyDataError:
            return []

    return ReproduceResult(dataset=meta["dataset"], rows=records("results.csv"),
                           steps=records("steps.csv"), fm_quality=records("fm_quality.csv"),
                           days=meta["days"], vm_days=meta["vm_days"], seconds=meta["seconds"],
                           day_reads=meta.get("day_reads", 0),
                           peak_days_in_memory=meta.get("peak_days_in_memory", 0),
                           tuning=records("tuning.csv"))
