"""Write a reproduce run: ``results.csv`` (one row per cell, seed and reading), ``tuning.csv``
(every tuning trial), ``results.md``
(mean +/- std per cell in the paper's table layout, steps per day, FM quality), PNG plots.

Mean +/- std: each seed's readings are averaged first, then mean and std are taken over seeds
(with one seed, over readings, and the table says so).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from exfm.reproduce.protocol import ARMS, PLAIN, RESULT_COLUMNS, ReproduceResult

ARM_LABEL = {"wo": "w/o distill", "vanilla": "vanilla KD", "ah": "AH", "ah_sa": "AH + SA",
             PLAIN: "plain baseline"}
GRID_ARMS = (PLAIN,) + ARMS


def summarize(df: pd.DataFrame, by: list[str], metric: str = "auc") -> pd.DataFrame:
    """mean, std over seeds (of per-seed means over readings), n seeds; one row per ``by``."""
    per_seed = df.groupby(by + ["seed"], dropna=False)[metric].mean().reset_index()
    n_seeds = per_seed["seed"].nunique()
    if n_seeds > 1:
        g = per_seed.groupby(by, dropna=False)[metric]
    else:
        g = df.groupby(by, dropna=False)[metric]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def ordering(df: pd.DataFrame, metric: str = "auc", tol: float = 0.0) -> pd.DataFrame:
    """Per (fm, vm) of the main table: the arms' mean AUC, whether AH+SA >= AH >= vanilla >= wo
    (``holds``, within ``tol``) and whether it holds strictly, and ``ah_share``: the part of the
    full method's lift over w/o that the AH arm already gets, (AH - w/o) / (AH+SA - w/o) (NaN when
    AH+SA does not beat w/o); ``ah_most`` is ``ah_share >= 0.5``."""
    main = df[df.table == "main"]
    means = main.groupby(["fm", "vm", "arm"])[metric].mean().unstack("arm")
    rows = []
    for (fm, vm), r in means.iterrows():
        vals = [r.get(a, float("nan")) for a in ARMS]
        ok = all(b >= a - tol for a, b in zip(vals, vals[1:]))
        strict = all(b > a for a, b in zip(vals, vals[1:]))
        top = vals[-1] - vals[0]
        share = (vals[2] - vals[0]) / top if top > 0 else float("nan")
        rows.append(dict(fm=fm, vm=vm, **{a: v for a, v in zip(ARMS, vals)}, holds=ok,
                         strict=strict, ah_share=share, ah_most=bool(share >= 0.5)))
    return pd.DataFrame(rows)


STEPS = (("vanilla", "wo"), ("ah", "vanilla"), ("ah_sa", "ah"))  # the ordering's three steps
NOISE_SE = 2.0  # a step is ahead / behind when its mean is more than this many SE from 0


def paired_verdict(diffs, mean: float | None = None, k: float = NOISE_SE
                   ) -> tuple[float, str | None]:
    """(standard error, verdict) of per-seed paired ``diffs``: ``ahead`` when ``mean`` (default
    the diffs' mean) is more than k SE above 0, ``behind`` when more than k SE below, else
    ``noise``; (NaN, None) with fewer than 2 seeds."""
    d = pd.Series(diffs, dtype=float).dropna()
    if len(d) < 2:
        return float("nan"), None
    m = float(d.mean()) if mean is None else mean
    se = float(d.std(ddof=1)) / math.sqrt(len(d))
    return se, "ahead" if m - k * se > 0 else "behind" if m + k * se < 0 else "noise"


def paired_steps(df: pd.DataFrame, metric: str = "auc", k: float = NOISE_SE) -> pd.DataFrame:
    """Each step of the ordering (vanilla vs w/o, AH vs vanilla, AH+SA vs AH) per (fm, vm) of the
    main table, paired by seed: the per-seed difference of the two arms' means over readings
    (same init, same rows), its mean, its standard error over seeds, and a verdict: ``ahead``
    (mean - k SE > 0), ``behind`` (mean + k SE < 0) or ``noise``. Pairing takes the seed's
    share out of the noise (init, data order) that both arms have. Empty with fewer than 2
    seeds: one seed has no spread to judge by."""
    cols = ["fm", "vm", "arm", "versus", "diff", "se", "seeds", "verdict"]
    main = df[df.table == "main"]
    if main.empty or main.seed.nunique() < 2:
        return pd.DataFrame(columns=cols)
    per_seed = main.groupby(["fm", "vm", "arm", "seed"])[metric].mean().unstack("arm")
    rows = []
    for (fm, vm), g in per_seed.groupby(level=["fm", "vm"]):
        for a, b in STEPS:
            if a not in g or b not in g:
                continue
            d = (g[a] - g[b]).dropna()
            if len(d) < 2:
                continue
            mean = float(d.mean())
            se, verdict = paired_verdict(d, mean, k)
            rows.append(dict(fm=fm, vm=vm, arm=a, versus=b, diff=mean, se=se, seeds=len(d),
                             verdict=verdict))
    return pd.DataFrame(rows, columns=cols)


def versus_plain(df: pd.DataFrame, metric: str = "auc") -> pd.DataFrame:
    """Per (fm, vm, student arm) of the main table: the student's mean ``metric`` minus the plain
    baseline's (same VM kind, same rows, same readings and seeds) and whether it beats it; with
    2 or more seeds also the standard error of the per-seed difference and a verdict as in
    :func:`paired_steps` (``ahead``, ``behind``, ``noise``; None with one seed)."""
    main = df[df.table == "main"]
    means = main.groupby(["fm", "vm", "arm"])[metric].mean().unstack("arm")
    if PLAIN not in means.columns:
        return pd.DataFrame(columns=["fm", "vm", "arm", "student", "plain", "diff", "beats", "se",
                                     "verdict"])
    per_seed = main.groupby(["fm", "vm", "arm", "seed"])[metric].mean().unstack("arm")
    rows = []
    for (fm, vm), r in means.iterrows():
        for a in ARMS:
            if a in r and not math.isnan(r[a]):
                d = r[a] - r[PLAIN]
                se, verdict = paired_verdict(per_seed.loc[(fm, vm)][a]
                                             - per_seed.loc[(fm, vm)][PLAIN], d)
                rows.append(dict(fm=fm, vm=vm, arm=a, student=r[a], plain=r[PLAIN], diff=d,
                                 beats=bool(d > 0), se=se, verdict=verdict))
    return pd.DataFrame(rows)


def teacher_margin(result: ReproduceResult) -> pd.DataFrame:
    """Per (fm, vm, task) of the main table: mean AUC of the FM and of the w/o student over the
    (seed, day) pairs where both were scored on the same day (reading r's test day is the next
    reading's VM day, which the FM infers). Empty when no day is shared."""
    q, df = pd.DataFrame(result.fm_quality), pd.DataFrame(result.rows, columns=RESULT_COLUMNS)
    wo = df[(df.table == "main") & (df.arm == "wo")].copy()
    if q.empty or wo.empty or not result.vm_days:
        return pd.DataFrame()
    # reading r trains on (1-based) day vm_days[r-1] and is scored on the next day, whose
    # 0-based index is vm_days[r-1]
    test_day = {r + 1: result.days[d] for r, d in enumerate(result.vm_days) if d < len(result.days)}
    q = q[q.fm.isin(set(df[df.table == "main"].fm))]
    wo["day"] = wo.reading.astype(int).map(test_day)
    wo = (wo.drop(columns="fm").drop_duplicates(["vm", "task", "seed", "day"])
          .rename(columns={"auc": "wo_auc"}))
    j = q.rename(columns={"auc": "fm_auc"}).merge(wo[["vm", "task", "seed", "day", "wo_auc"]],
                                                  on=["task", "seed", "day"])
    if j.empty:
        return pd.DataFrame()
    g = j.groupby(["fm", "vm", "task"]).agg(fm_auc=("fm_auc", "mean"), wo_auc=("wo_auc", "mean"),
                                            days=("day", "nunique"))
    return g.reset_index()


def _fmt(mean: float, std: float, digits: int = 4) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _points(diff: float, se: float, verdict: str | None) -> str:
    """A difference in AUC points (x100), with "± SE verdict" when there is a verdict."""
    return f"{1e2 * diff:+.2f}" + ("" if verdict is None else f" ± {1e2 * se:.2f} {verdict}")


def _step_cell(ps: pd.DataFrame, fm: str, vm: str, arm: str) -> str:
    r = ps[(ps.fm == fm) & (ps.vm == vm) & (ps.arm == arm)]
    if r.empty:
        return "n/a"
    r = r.iloc[0]
    return _points(r["diff"], r.se, r.verdict)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _arm_grid(df: pd.DataFrame, keys: list[str], metric: str, digits: int = 4) -> str:
    s = summarize(df, keys + ["arm"], metric)
    arms = [a for a in GRID_ARMS if a in set(s.arm)]
    rows = []
    for k, g in s.groupby(keys, sort=True):
        k = k if isinstance(k, tuple) else (k,)
        cells = {r.arm: _fmt(r["mean"], r["std"], digits) for _, r in g.iterrows()}
        rows.append(list(k) + [cells.get(a, "") for a in arms])
    return _md_table(keys + [ARM_LABEL[a] for a in arms], rows)


def freshness_recovery(df: pd.DataFrame, fm_quality: pd.DataFrame | None = None
                       ) -> pd.DataFrame:
    """Per frozen FM snapshot of the freshness table: how much of the AH's lift over w/o the
    staleness costs, and how much of that AH+SA gets back (AUC, means over seeds and readings).

    ``lost`` = AH gain with the fresh FM - AH gain with the frozen one; ``recovered`` = AH+SA gain
    - AH gain, both with the frozen FM; ``share`` = recovered / lost (NaN when nothing was lost).
    ``recovered_se``, ``verdict``: the standard error of ``recovered`` over seeds (each seed's
    mean over readings, paired) and ahead / behind / noise as in :func:`paired_steps` (NaN and
    None with one seed). ``fm_auc_fresh``, ``fm_auc``: the teachers themselves, the fresh FM's
    and the frozen snapshot's mean AUC on the days (and seeds) the snapshot taught, from
    ``fm_quality`` (NaN without it): how much of the loss is the teacher's own.
    """
    cols = ["snapshot", "ah_fresh", "ah", "ah_sa", "lost", "recovered", "share", "recovered_se",
            "verdict", "fm_auc_fresh", "fm_auc"]
    f = df[df.table == "freshness"]
    if f.empty:
        return pd.DataFrame(columns=cols)
    base = f[f.arm == "wo"].groupby(["seed", "reading"]).auc.mean()

    def gain(fm: str, arm: str) -> float:
        g = f[(f.fm == fm) & (f.arm == arm)].set_index(["seed", "reading"]).auc
        return float((g - base).dropna().mean()) if not g.empty else float("nan")

    fresh = next((fm for fm in f.fm.unique() if fm.endswith("@fresh")), None)
    rows = []
    for fm in sorted(f.fm.unique()):
        if "@d" not in fm:
            continue
        ah_fresh = gain(fresh, "ah") if fresh else float("nan")
        ah, ah_sa = gain(fm, "ah"), gain(fm, "ah_sa")
        lost, rec = ah_fresh - ah, ah_sa - ah
        arms = f[(f.fm == fm) & f.arm.isin(["ah", "ah_sa"])]
        per_seed = arms.groupby(["seed", "arm"]).auc.mean().unstack("arm")
        se, verdict = paired_verdict(per_seed["ah_sa"] - per_seed["ah"]
                                     if per_seed.shape[1] == 2 else [], rec)
        fm_fresh, fm_frozen = _teacher_auc(fm_quality, fresh, fm,
                                           f.task.iloc[0] if "task" in f else None)
        rows.append(dict(snapshot=fm, ah_fresh=ah_fresh, ah=ah, ah_sa=ah_sa, lost=lost,
                         recovered=rec, share=rec / lost if lost > 0 else float("nan"),
                         recovered_se=se, verdict=verdict, fm_auc_fresh=fm_fresh,
                         fm_auc=fm_frozen))
    return pd.DataFrame(rows, columns=cols)


def _teacher_auc(q: pd.DataFrame | None, fresh: str | None, frozen: str,
                 task: str | None) -> tuple[float, float]:
    """Mean AUC of the fresh FM and of the ``frozen`` snapshot over the (seed, day) pairs both
    were scored on, for ``task`` (None: every task); NaN, NaN when there are none."""
    nan = (float("nan"), float("nan"))
    if q is None or q.empty or fresh is None or "fm" not in q:
        return nan
    if task is not None and "task" in q:
        q = q[q.task == task]
    a = q[q.fm == fresh.split("@")[0]].set_index(["seed", "day"]).auc
    b = q[q.fm == frozen].set_index(["seed", "day"]).auc
    both = pd.concat([a.rename("fresh"), b.rename("frozen")], axis=1, join="inner")
    if both.empty:
        return nan
    return float(both.fresh.mean()), float(both.frozen.mean())


def _pair(a: float, b: float) -> str:
    return "n/a" if math.isnan(a) or math.isnan(b) else f"{a:.4f} / {b:.4f}"


def _freshness(df: pd.DataFrame, vm_days: list[int]) -> str:
    f = df[df.table == "freshness"]
    if f.empty:
        return ""
    base = f[f.arm == "wo"].groupby(["seed", "reading"]).auc.mean()
    rows = []
    for (fm, arm), g in f[f.arm != "wo"].groupby(["fm", "arm"]):
        cells = []
        for r, gr in g.groupby("reading"):
            gain = (gr.set_index("seed").auc - base.xs(r, level="reading")).dropna()
            k = fm.split("@")[1]
            gap = 1 if k == "fresh" else vm_days[int(r) - 1] - int(k[1:])
            cells.append(f"{1e2 * gain.mean():+.2f} (gap {gap})")
        rows.append([fm, ARM_LABEL[arm]] + cells)
    n = int(f.reading.max())
    return _md_table(["FM snapshot", "arm"] + [f"reading {r}" for r in range(1, n + 1)], rows)


def _tuning(result: ReproduceResult) -> str:
    """The (gs, ls, lw) each tuned VM (and arm) chose, per seed, and the tuning-day score of the winner vs
    the configured triple (the first trial)."""
    t = pd.DataFrame(result.tuning)
    if t.empty:
        return ""
    rows = []
    keys = ["table", "fm", "vm", "domain", "task", "arm"]
    for k, g in t.groupby(keys, sort=True):
        chosen, lifts = [], []
        for _, gs in g.groupby("seed"):
            first, win = gs.iloc[0], gs[gs.chosen.astype(bool)].iloc[0]
            chosen.append(f"({win.gs:g}, {win.ls:g}, {win.lw:g})")
            m = win.metric
            lifts.append((win[m] - first[m]) * 1e2)
        rows.append(list(k) + [" ".join(chosen), f"{sum(lifts) / len(lifts):+.2f}",
                               f"{g.train_day.iloc[0]} -> {g.valid_day.iloc[0]}"])
    metric = t.metric.iloc[0]
    return _md_table(keys + ["chosen (gs, ls, lw) per seed",
                             f"tuning-day {metric} of the winner - configured (x100)",
                             "tuning days (train -> valid)"], rows)


SMOKE_NOTE = ("**A smoke run (`--quick`)**: days thinned to {rows} rows, one seed, "
              "smaller models. It checks that every step runs, not the method: on so few rows "
              "the earlier-day tuning often turns the AH's pull off (AH = w/o) and the orderings "
              "below mean nothing. For the paper's tables run without `--quick` "
              "(`--seeds 3`).")


def write_markdown(result: ReproduceResult, out: Path, meta: dict[str, Any]) -> str:
    df = pd.DataFrame(result.rows, columns=RESULT_COLUMNS)
    parts = [f"# ExFM offline protocol: `{result.dataset}`", ""]
    parts.append(f"Days: {result.days[0]} .. {result.days[-1]} ({len(result.days)}); "
                 f"seeds: {df.seed.nunique()}; readings per seed: {df.reading.nunique()}; "
                 f"run time: {result.seconds / 60:.1f} min.")
    parts.append("")
    parts.append("Options: `" + json.dumps(meta, default=str) + "`")
    parts.append("")
    if meta.get("quick"):
        parts += [SMOKE_NOTE.format(rows=meta.get("max_rows_per_day") or "a few thousand"), ""]
    one_seed = df.seed.nunique() <= 1
    parts.append("Cells: mean ± std of " + ("readings (one seed)." if one_seed else
                 "per-seed means over readings, across seeds."))
    main = df[df.table == "main"]
    if not main.empty:
        parts += ["", "## Main table: FM x VM, AUC", "", _arm_grid(main, ["fm", "vm"], "auc")]
        o = ordering(df)
        n, held, strict = len(o), int(o.holds.sum()), int(o.strict.sum())
        gains = o[["vanilla", "ah", "ah_sa"]].sub(o["wo"], axis=0) * 1e2
        most = int(o.ah_most.sum())
        parts += ["", f"Ordering AH+SA >= AH >= vanilla >= w/o in mean AUC: **{held} of {n}** "
                  f"pairs ({strict} strictly). AH gets at least half of AH+SA's lift over w/o on "
                  f"**{most} of {n}** pairs.", "",
                  _md_table(["FM", "VM", "vanilla - w/o", "AH - w/o", "AH+SA - w/o",
                             "AH share of the lift", "holds"],
                            [[r.fm, r.vm, f"{g.vanilla:+.2f}", f"{g.ah:+.2f}", f"{g.ah_sa:+.2f}",
                              "n/a" if math.isnan(r.ah_share) else f"{r.ah_share:.0%}",
                              "yes" if r.holds else "no"]
                             for (_, r), (_, g) in zip(o.iterrows(), gains.iterrows())]),
                  "", "(gains in AUC points, x100; AH share = (AH - w/o) / (AH+SA - w/o))"]
        ps = paired_steps(df)
        if not ps.empty:
            piv = ps.pivot_table(index=["fm", "vm"], columns="arm", values="verdict",
                                 aggfunc="first")
            none_behind = int((piv != "behind").all(axis=1).sum())
            ah = ps[ps.arm == "ah"]
            parts += ["", "### The ordering's steps against the noise between seeds", "",
                      f"Each step paired by seed (same init, same rows): the mean per-seed "
                      f"difference ± its standard error, **ahead** / **behind** when the mean is "
                      f"more than {NOISE_SE:g} SE from 0, else noise. No step behind beyond the "
                      f"noise: **{none_behind} of {len(piv)}** pairs; AH behind vanilla beyond "
                      f"the noise: **{int((ah.verdict == 'behind').sum())} of {len(ah)}**.", "",
                      _md_table(["FM", "VM", "vanilla - w/o", "AH - vanilla", "AH+SA - AH"],
                                [[fm, vm] + [_step_cell(ps, fm, vm, a) for a, _ in STEPS]
                                 for fm, vm in piv.index]),
                      "", "(AUC points x100)"]
        vp = versus_plain(df)
        if not vp.empty:
            won = int(vp.beats.sum())
            parts += ["", "### Students vs the plain baseline", "",
                      "The plain baseline is the same VM on the same rows with the common recipe "
                      "(dense Adam on every parameter at one lr, no distillation). A student "
                      f"beats it when its mean AUC is higher: **{won} of {len(vp)}** students "
                      "do" + ("." if vp.verdict.isna().all() else
                              f"; behind it beyond the noise between seeds (paired by seed, "
                              f"{NOISE_SE:g} SE): **{int((vp.verdict == 'behind').sum())} of "
                              f"{len(vp)}**."), "",
                      _md_table(["FM", "VM", "student", "student AUC", "plain AUC",
                                 "student - plain (x100)", "beats plain"],
                                [[r.fm, r.vm, ARM_LABEL[r.arm], f"{r.student:.4f}",
                                  f"{r.plain:.4f}", _points(r["diff"], r.se, r.verdict),
                                  "yes" if r.beats else "no"] for _, r in vp.iterrows()])]
        for metric, title, d in (("ne", "NE (lower is better)", 4),
                                 ("logloss", "LogLoss", 5),
                                 ("calibration", "calibration (1.0 is perfect)", 3)):
            parts += ["", f"### Main table: {title}", "", _arm_grid(main, ["fm", "vm"], metric, d)]
    for table, key, title in (("per_domain", "domain", "One FM, one VM per domain"),
                              ("per_task", "task", "One FM, one VM per task")):
        t = df[df.table == table]
        if not t.empty:
            parts += ["", f"## {title} ({t.fm.iloc[0]} -> {t.vm.iloc[0]}), AUC", "",
                      _arm_grid(t, [key], "auc"), "", "NE:", "", _arm_grid(t, [key], "ne")]
    fr = _freshness(df, result.vm_days)
    if fr:
        parts += ["", "## Freshness: AUC gain over w/o (x100) with the FM frozen after day k", "",
                  fr, "", "gap = VM training day - the last day the FM trained on."]
        rec = freshness_recovery(df, pd.DataFrame(result.fm_quality))
        if not rec.empty:
            parts += ["", "Staleness lost and recovered (AUC points x100, mean over readings): "
                      "lost = AH gain with the fresh FM - with the frozen one; recovered = AH+SA "
                      "- AH, both with the frozen FM. Teacher AUC: the fresh FM's and the frozen "
                      "snapshot's own AUC on the days the snapshot taught.", "",
                      _md_table(["FM snapshot", "teacher AUC, fresh / frozen",
                                 "AH gain, fresh FM", "AH gain", "AH+SA gain",
                                 "lost to staleness", "recovered by SA", "share recovered"],
                                [[r.snapshot, _pair(r.fm_auc_fresh, r.fm_auc),
                                  f"{1e2 * r.ah_fresh:+.2f}", f"{1e2 * r.ah:+.2f}",
                                  f"{1e2 * r.ah_sa:+.2f}", f"{1e2 * r.lost:+.2f}",
                                  _points(r.recovered, r.recovered_se, r.verdict),
                                  "n/a" if math.isnan(r.share) else f"{r.share:.0%}"]
                                 for _, r in rec.iterrows()])]
    tu = _tuning(result)
    if tu:
        parts += ["", "## Self-tuned AH amplifiers (GS, LS, LW), chosen on earlier days", "",
                  "Every AH / AH+SA trajectory uses the triple its (FM, VM, slice) chose on the "
                  "tuning days below, which precede every scored day (`tuning.csv` has every "
                  "trial).", "", tu]
    if result.fm_quality:
        q = pd.DataFrame(result.fm_quality)
        s = summarize(q.rename(columns={"day": "reading"}), ["fm", "task"], "auc")
        parts += ["", "## FM quality on the VM's training day (AUC, before training on it)", "",
                  _md_table(["FM", "task", "AUC"],
                            [[r.fm, r.task, _fmt(r["mean"], r["std"])] for _, r in s.iterrows()])]
        margin = teacher_margin(result)
        if not margin.empty:
            parts += ["", "Teacher margin: the FM and the main table's w/o students scored on the "
                      "same days (the days that are both a VM test day and an FM inference day). "
                      "The smaller it is, the less the FM knows that the student does not "
                      "(docs/data.md discusses what that does to the arms' ordering).", "",
                      _md_table(["FM", "VM", "task", "days", "FM AUC", "w/o VM AUC",
                                 "FM - w/o (x100)"],
                                [[r.fm, r.vm, r.task, r.days, f"{r.fm_auc:.4f}", f"{r.wo_auc:.4f}",
                                  f"{1e2 * (r.fm_auc - r.wo_auc):+.2f}"]
                                 for _, r in margin.iterrows()])]
    if result.steps:
        st = pd.DataFrame(result.steps)
        g = st.groupby("model").agg(rows=("rows", "mean"), steps=("steps", "mean"),
                                    batch=("batch_size", "mean"), n=("steps", "size"))
        parts += ["", "## Steps per day (one pass)", "",
                  _md_table(["model", "rows / day", "optimizer steps / day", "batch", "days trained"],
                            [[m, f"{r.rows:.0f}", f"{r.steps:.0f}", f"{r.batch:.0f}", int(r.n)]
                             for m, r in g.iterrows()])]
    text = "\n".join(parts) + "\n"
    (out / "results.md").write_text(text)
    return text


def write_plots(result: ReproduceResult, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.DataFrame(result.rows, columns=RESULT_COLUMNS)
    paths = []
    main = df[df.table == "main"]
    if not main.empty:
        s = summarize(main, ["fm", "vm", "arm"], "auc")
        pairs = sorted({(r.fm, r.vm) for _, r in s.iterrows()})
        arms = [a for a in ARMS if a in set(s.arm)]
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(pairs)), 4))
        w = 0.8 / len(arms)
        for j, arm in enumerate(arms):
            m = [s[(s.fm == f) & (s.vm == v) & (s.arm == arm)]["mean"].mean() for f, v in pairs]
            e = [s[(s.fm == f) & (s.vm == v) & (s.arm == arm)]["std"].mean() for f, v in pairs]
            ax.bar([i + j * w for i in range(len(pairs))], m, w, yerr=e, label=ARM_LABEL[arm])
        ax.set_xticks([i + 0.4 - w / 2 for i in range(len(pairs))])
        ax.set_xticklabels([f"{f}\n-> {v}" for f, v in pairs], fontsize=8)
        lo = s["mean"].min() - 2 * s["std"].max() - 0.005
        ax.set_ylim(max(0.0, lo), min(1.0, s["mean"].max() + 2 * s["std"].max() + 0.005))
        ax.set_ylabel("AUC on the next day")
        ax.set_title(f"{result.dataset}: FM x VM")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / "main_auc.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(6, 4))
        for arm in arms:
            r = main[main.arm == arm].groupby("reading").auc.mean()
            ax.plot(r.index, r.values, marker="o", label=ARM_LABEL[arm])
        ax.set_xlabel("reading")
        ax.set_ylabel("mean AUC over FM x VM")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / "main_by_reading.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    f = df[df.table == "freshness"]
    if not f.empty:
        base = f[f.arm == "wo"].groupby("reading").auc.mean()
        fig, ax = plt.subplots(figsize=(6, 4))
        for (fm, arm), g in f[f.arm != "wo"].groupby(["fm", "arm"]):
            gain = (g.groupby("reading").auc.mean() - base) * 1e2
            ax.plot(gain.index, gain.values, marker="o", label=f"{fm} {ARM_LABEL[arm]}",
                    linestyle="-" if arm == "ah_sa" else "--")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("reading (the frozen FM grows staler)")
        ax.set_ylabel("AUC gain over w/o (x100)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(out / "freshness.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    for table, key in (("per_domain", "domain"), ("per_task", "task")):
        t = df[df.table == table]
        if t.empty:
            continue
        base = t[t.arm == "wo"].groupby(key).auc.mean()
        fig, ax = plt.subplots(figsize=(6, 4))
        arms = [a for a in ARMS if a != "wo" and a in set(t.arm)]
        keys = list(base.index)
        w = 0.8 / max(len(arms), 1)
        for j, arm in enumerate(arms):
            gain = (t[t.arm == arm].groupby(key).auc.mean() - base).reindex(keys) * 1e2
            ax.bar([i + j * w for i in range(len(keys))], gain.values, w, label=ARM_LABEL[arm])
        ax.set_xticks([i + 0.4 - w / 2 for i in range(len(keys))])
        ax.set_xticklabels(keys)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_ylabel("AUC gain over w/o (x100)")
        ax.set_title(table)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / f"{table}.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def write_report(result: ReproduceResult, out: str | Path, meta: dict[str, Any]) -> dict[str, Path]:
    """Write results.csv, steps.csv, fm_quality.csv, results.md and the plots under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(result.rows, columns=RESULT_COLUMNS).to_csv(out / "results.csv", index=False)
    pd.DataFrame(result.steps).to_csv(out / "steps.csv", index=False)
    pd.DataFrame(result.fm_quality).to_csv(out / "fm_quality.csv", index=False)
    pd.DataFrame(result.tuning).to_csv(out / "tuning.csv", index=False)
    (out / "run.json").write_text(json.dumps(
        {"dataset": result.dataset, "days": result.days, "vm_days": result.vm_days,
         "seconds": result.seconds, "day_reads": result.day_reads,
         "peak_days_in_memory": result.peak_days_in_memory, "options": meta}, indent=2, default=str))
    write_markdown(result, out, meta)
    plots = write_plots(result, out)
    return {"csv": out / "results.csv", "md": out / "results.md",
            **{p.stem: p for p in plots}}
