"""The offline protocol: the plan (what trains on what), fairness between arms, the report."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner

from exfm.config import GeneratorConfig, load_config
from exfm.data.generator import generate
from exfm.reproduce import RESULT_COLUMNS, ReproduceOptions, ordering, run_protocol, summarize
from exfm.reproduce.protocol import (DayTables, _key, _Run, domain_slice, load_result,
                                     merge_results, plan, thin, with_fm_pred)

TINY_MODELS = ["models.fm_hidden=[16]", "models.fm_embed_dim=8", "models.vm_hidden=[8]",
               "models.embed_dim=4", "models.min_steps_per_day=4", "models.torch_threads=1",
               "models.fm_tower_hidden=[8]"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("repro")
    generate(GeneratorConfig(days=8, rows_per_day=400, n_users=120, n_items=60), d)
    return d


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, TINY_MODELS)


def test_thin_keeps_order_and_cap():
    t = pa.table({"ts": np.arange(10)})
    assert thin(t, 4).column("ts").to_pylist() == [0, 3, 6, 9]
    assert thin(t, None).num_rows == 10


def test_fm_pred_columns_and_domain_slice(data):
    from exfm.data.io import read_day
    from exfm.data.schema import load_schema

    s = load_schema(data)
    t = read_day(data, "2026-01-05")
    p = np.random.default_rng(0).random((t.num_rows, 2))
    t2 = with_fm_pred(t, ["click", "like"], p)
    assert np.allclose(t2.column("fm_pred_like").to_numpy(), p[:, 1].astype(np.float32))
    d0 = domain_slice(t2, s, "d0")
    assert set(d0.column("domain").to_pylist()) == {"d0"} and 0 < d0.num_rows < t.num_rows
    assert domain_slice(t2, s, "all").num_rows == t.num_rows


def test_plan_readings_and_sharing(data, cfg):
    run = _Run(data, ReproduceOptions(seeds=1), cfg, None)
    assert run.readings == 3 and run.vm_days == [4, 5, 6]  # VM days 5, 6, 7; tests 6, 7, 8
    fms, cells = plan(run)
    assert dict(fms) == {"dcn": (), "dcnv2": (2, 3), "dmin": (), "mtl": ()}
    main = [c for c, _, _ in cells if c.table == "main"]
    # one shared w/o and one shared plain baseline per VM + FM x VM x 3 distilled arms
    assert len(main) == 2 * 3 + 3 * 3 * 3
    for arm in ("wo", "plain"):
        shared = [(c, names) for c, _, names in cells if c.table == "main" and c.arm == arm]
        assert len(shared) == 3 and all(names == ["dcn", "dcnv2", "dmin"] for _, names in shared)
        assert all(c.fm_source is None for c, _ in shared)
    # the freshness study's fresh arms and baseline are the main grid's trajectories
    fresh = {_key(c, vk) for c, vk, _ in cells if c.table == "freshness" and "@d" not in c.fm}
    main_keys = {_key(c, vk) for c, vk, _ in cells if c.table == "main"}
    assert fresh <= main_keys
    per_domain = [c for c, _, _ in cells if c.table == "per_domain"]
    assert {c.domain for c in per_domain} == {"d0", "d1", "d2"}


def test_too_few_days_is_an_error(tmp_path, cfg):
    generate(GeneratorConfig(days=5, rows_per_day=50, n_users=40, n_items=20), tmp_path)
    with pytest.raises(ValueError, match="needs at least 6"):
        _Run(tmp_path, ReproduceOptions(), cfg, None)


def test_day_tables_hold_the_last_two_days_asked_for(data):
    from exfm.data.io import read_day
    from exfm.data.schema import list_days

    days = list_days(data)
    tables = DayTables(data, days, max_rows=150)
    assert len(tables) == 8
    first = tables[4]
    assert first.equals(thin(read_day(data, days[4]), 150)) and first.num_rows <= 150
    tables[5]
    assert tables.resident() == [4, 5] and tables.reads == 2
    tables[4]  # held: no read, becomes the most recent
    assert tables.reads == 2 and tables.resident() == [5, 4]
    tables[6]  # lets day 5 (least recently used) go
    assert tables.resident() == [4, 6] and tables.reads == 3
    again = tables[5]  # read again: the same rows
    assert again.equals(thin(read_day(data, days[5]), 150)) and tables.reads == 4
    assert tables.peak_resident == 2 and tables[-1].equals(tables[7])
    with pytest.raises(IndexError, match="out of range"):
        tables[8]
    with pytest.raises(ValueError, match="keep"):
        DayTables(data, days, None, keep=0)


@pytest.fixture(scope="module")
def small_run(data, cfg):
    opts = ReproduceOptions(seeds=1, fms=("dcnv2",), vms=("fam",), tables=("main", "freshness"),
                            freshness_ks=(3,), fresh_pair=("dcnv2", "fam"))
    seen = []
    res = run_protocol(data, cfg, opts, progress=lambda n, what: seen.append(what))
    return res, seen


def test_protocol_rows_and_columns(small_run):
    res, seen = small_run
    df = pd.DataFrame(res.rows, columns=RESULT_COLUMNS)
    main = df[df.table == "main"]
    assert set(main.arm) == {"wo", "vanilla", "ah", "ah_sa", "plain"}
    assert sorted(main.reading.unique()) == [1, 2, 3]
    assert len(main) == 5 * 3
    assert df[["auc", "logloss", "ne", "calibration"]].notna().all().all()
    assert set(df.table) == {"main", "freshness"}
    # the fresh-FM arms of the freshness study are the main grid's numbers, not a re-run
    fresh_ah = df[(df.table == "freshness") & (df.fm == "dcnv2@fresh") & (df.arm == "ah")]
    main_ah = main[main.arm == "ah"]
    assert np.allclose(fresh_ah.auc.values, main_ah.auc.values)
    # one unit per FM day (6), per VM reading of each distinct trajectory (4 main + 2 frozen) and
    # per tuning trial (dcnv2 -> fam, one tuning for AH and one for AH+SA, each shared with
    # the frozen copies of that arm)
    assert len(seen) == 6 + 7 * 3 + 2 * 14
    assert sum(w.startswith("tune ") for w in seen) == 2 * 14
    vm_steps = [s for s in res.steps if s["model"].startswith("vm:")]
    assert all(s["steps"] >= 4 for s in vm_steps)
    # the run holds two of its eight days at a time, reading a day again when it comes back
    assert res.peak_days_in_memory == 2 and res.day_reads > 8
    # the frozen snapshot's own quality on each day it taught, with its freshness gap
    q = pd.DataFrame(res.fm_quality)
    frozen = q[q.fm == "dcnv2@d3"]
    fresh_days = sorted(q[q.fm == "dcnv2"].day.unique())  # the days the VM readings train on
    later = [d for d in fresh_days if d > res.days[3]]  # after the 4th day: the FM's gap > 1
    assert later and sorted(frozen.day.unique()) == later and frozen.auc.notna().all()
    gaps = frozen.drop_duplicates("day").sort_values("day").freshness_gap.tolist()
    assert gaps == [res.days.index(d) - 3 + 1 for d in later] and min(gaps) > 1
    assert set(q[q.fm == "dcnv2"].freshness_gap) == {1}


def test_arms_share_init_and_data(data, cfg):
    """Two runs of the same arm give the same numbers: differences between arms are the loss's."""
    opts = ReproduceOptions(seeds=1, fms=("dcn",), vms=("fam",), tables=("main",),
                            arms=("wo", "ah"))
    a = pd.DataFrame(run_protocol(data, cfg, opts).rows)
    b = pd.DataFrame(run_protocol(data, cfg, opts).rows)
    assert np.allclose(a.auc.values, b.auc.values)


def test_report_and_merge(small_run, tmp_path):
    from exfm.reproduce import write_report

    res, _ = small_run
    paths = write_report(res, tmp_path / "a", {"test": True})
    md = paths["md"].read_text()
    assert "Main table: FM x VM, AUC" in md and "Steps per day" in md and "Freshness" in md
    assert (tmp_path / "a" / "main_auc.png").stat().st_size > 0
    df = pd.read_csv(paths["csv"])
    assert list(df.columns) == RESULT_COLUMNS
    back = load_result(tmp_path / "a")
    shifted = [{**r, "seed": 1} for r in back.rows]
    both = merge_results([back, type(back)(dataset=back.dataset, rows=shifted, days=back.days,
                                           vm_days=back.vm_days)])
    s = summarize(pd.DataFrame(both.rows), ["fm", "vm", "arm"])
    assert (s["count"] == 2).all()  # two seeds per cell
    o = ordering(pd.DataFrame(both.rows))
    assert list(o.columns[:2]) == ["fm", "vm"] and len(o) == 1


def test_cli_quick_subset(data, tmp_path):
    from exfm.commands.reproduce import reproduce

    r = CliRunner().invoke(reproduce, ["--data", str(data), "--out", str(tmp_path / "o"),
                                       "--quick", "--fms", "dcn", "--vms", "fam",
                                       "--tables", "main", "--max-rows-per-day", "200"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o" / "results.csv").exists()
    assert "A smoke run (`--quick`)" in (tmp_path / "o" / "results.md").read_text()
    bad = CliRunner().invoke(reproduce, ["--data", str(data), "--tables", "nope"])
    assert bad.exit_code != 0 and "unknown table" in bad.output


def test_ordering_counts_the_paper_ordering_and_the_ah_share_of_the_lift():
    cells = {("dcn", "fam"): (0.60, 0.61, 0.63, 0.64),      # strict, AH has 3/4 of the lift
             ("dcn", "deepfam"): (0.60, 0.62, 0.61, 0.64),  # vanilla beats AH: no
             ("dmin", "fam"): (0.60, 0.59, 0.595, 0.58)}    # AH+SA below w/o: share undefined
    rows = [dict(table="main", fm=fm, vm=vm, arm=arm, seed=s, reading=1, auc=v + 1e-3 * (s - 1))
            for (fm, vm), vals in cells.items() for arm, v in zip(("wo", "vanilla", "ah", "ah_sa"), vals)
            for s in (0, 1, 2)]
    o = ordering(pd.DataFrame(rows)).set_index(["fm", "vm"])
    assert o.loc[("dcn", "fam")].holds and o.loc[("dcn", "fam")].strict
    assert o.loc[("dcn", "fam")].ah_share == pytest.approx(0.75)
    assert o.loc[("dcn", "fam")].ah_most
    assert not o.loc[("dcn", "deepfam")].holds
    assert o.loc[("dcn", "deepfam")].ah_share == pytest.approx(0.25)
    assert not o.loc[("dcn", "deepfam")].ah_most
    assert np.isnan(o.loc[("dmin", "fam")].ah_share) and not o.loc[("dmin", "fam")].ah_most
    # a tolerance lets a near-tie (vanilla 0.01 above AH) count as held
    assert ordering(pd.DataFrame(rows), tol=0.011).set_index(["fm", "vm"]).loc[("dcn", "deepfam")].holds


def test_teacher_margin_compares_the_fm_and_the_wo_student_on_the_same_days():
    from exfm.reproduce.protocol import ReproduceResult
    from exfm.reproduce.report import teacher_margin

    days = [f"2026-01-0{i}" for i in range(1, 9)]
    # readings train on days 5, 6, 7 and are scored on days 6, 7, 8; the FM infers days 5, 6, 7
    rows = [dict(dataset="t", table="main", fm=fm, vm="fam", domain="all", task="click", arm="wo",
                 seed=0, reading=r, auc=auc, logloss=0.1, ne=0.9, calibration=1.0)
            for fm in ("dcn", "dmin") for r, auc in ((1, 0.60), (2, 0.62), (3, 0.99))]
    fmq = [dict(fm="dcn", seed=0, day=days[d], task="click", auc=auc)
           for d, auc in ((4, 0.10), (5, 0.70), (6, 0.72))]
    fmq.append(dict(fm="mtl", seed=0, day=days[5], task="click", auc=0.5))  # not in main: left out
    res = ReproduceResult(dataset="t", rows=rows, fm_quality=fmq, days=days, vm_days=[5, 6, 7])
    m = teacher_margin(res)
    assert list(m.fm) == ["dcn"]
    r = m.iloc[0]
    assert r.days == 2  # days 6 and 7 only: day 5 has no w/o score, day 8 no FM score
    assert r.fm_auc == pytest.approx(0.71) and r.wo_auc == pytest.approx(0.61)
    assert teacher_margin(ReproduceResult(dataset="t", rows=rows, days=days, vm_days=[5, 6, 7])).empty


def test_plain_baseline_recipe_and_the_students_vs_plain_table(cfg):
    from exfm.reproduce.protocol import plain_config
    from exfm.reproduce.report import versus_plain

    p = plain_config(cfg)
    assert p.models.embedding_optimizer == "adam" and p.models.embedding_lr == p.models.lr
    assert p.models.batch_size == cfg.models.batch_size  # the same rows in the same batches
    rows = [dict(table="main", fm="dcn", vm="fam", arm=arm, seed=0, reading=1, auc=v)
            for arm, v in (("plain", 0.70), ("wo", 0.69), ("vanilla", 0.71), ("ah", 0.72),
                           ("ah_sa", 0.73))]
    vp = versus_plain(pd.DataFrame(rows)).set_index("arm")
    assert list(vp.beats) == [False, True, True, True]
    assert vp.loc["wo", "diff"] == pytest.approx(-0.01)
    assert versus_plain(pd.DataFrame([r for r in rows if r["arm"] != "plain"])).empty
    assert vp.verdict.isna().all()  # one seed: no verdict against the noise
    # two seeds: w/o is behind plain on both (paired), AH ahead on one and level on the other
    two = rows + [dict(r, seed=1, auc=r["auc"] + (0.05 if r["arm"] != "ah" else 0.03))
                  for r in rows]
    v2 = versus_plain(pd.DataFrame(two)).set_index("arm")
    assert v2.loc["wo", "verdict"] == "behind" and v2.loc["wo", "se"] == pytest.approx(0.0)
    assert v2.loc["ah", "diff"] == pytest.approx(0.01) and v2.loc["ah", "verdict"] == "noise"
    assert v2.loc["vanilla", "verdict"] == "ahead"


def test_freshness_recovery_is_the_share_of_the_stale_loss_the_sa_gets_back():
    from exfm.reproduce.report import freshness_recovery

    gains = {("dcnv2@fresh", "ah"): 0.03, ("dcnv2@fresh", "ah_sa"): 0.031,
             ("dcnv2@d2", "ah"): 0.01, ("dcnv2@d2", "ah_sa"): 0.015,   # lost 2, back 0.5 of it
             ("dcnv2@d3", "ah"): 0.035, ("dcnv2@d3", "ah_sa"): 0.03}   # nothing lost
    rows = [dict(table="freshness", fm="dcnv2@fresh", arm="wo", seed=s, reading=r, auc=0.6 + 0.01 * r)
            for s in (0, 1) for r in (1, 2, 3)]
    rows += [dict(table="freshness", fm=fm, arm=arm, seed=s, reading=r, auc=0.6 + 0.01 * r + g)
             for (fm, arm), g in gains.items() for s in (0, 1) for r in (1, 2, 3)]
    rows.append(dict(table="main", fm="dcnv2", arm="ah", seed=0, reading=1, auc=0.1))  # ignored
    rec = freshness_recovery(pd.DataFrame(rows)).set_index("snapshot")
    assert list(rec.index) == ["dcnv2@d2", "dcnv2@d3"]
    assert rec.loc["dcnv2@d2", "lost"] == pytest.approx(0.02)
    assert rec.loc["dcnv2@d2", "recovered"] == pytest.approx(0.005)
    assert rec.loc["dcnv2@d2", "share"] == pytest.approx(0.25)
    assert np.isnan(rec.loc["dcnv2@d3", "share"])  # the frozen FM lost nothing: no share
    # both seeds got back the same 0.005: no spread, so it stands out of the noise
    assert rec.loc["dcnv2@d2", "recovered_se"] == pytest.approx(0.0)
    assert rec.loc["dcnv2@d2", "verdict"] == "ahead"
    assert rec.loc["dcnv2@d3", "verdict"] == "behind"  # -0.005 on both seeds
    assert freshness_recovery(pd.DataFrame([r for r in rows if r["table"] == "main"])).empty
    assert rec.fm_auc.isna().all()  # no FM quality given: the teachers' columns are NaN
    # the teachers on the days each snapshot taught: the fresh FM is matched on those days only
    q = [dict(fm="dcnv2", seed=s, day=d, task="click", auc=a)
         for s in (0, 1) for d, a in (("d5", 0.70), ("d6", 0.72), ("d7", 0.74))]
    q += [dict(fm="dcnv2@d2", seed=s, day=d, task="click", auc=a)
          for s in (0, 1) for d, a in (("d5", 0.66), ("d6", 0.64), ("d7", 0.62))]
    q += [dict(fm="dcnv2@d3", seed=0, day="d7", task="click", auc=0.70),
          dict(fm="dcnv2@d3", seed=0, day="d7", task="like", auc=0.10)]  # another task: left out
    rec = freshness_recovery(pd.DataFrame([dict(r, task="click") for r in rows]),
                             pd.DataFrame(q)).set_index("snapshot")
    assert rec.loc["dcnv2@d2", "fm_auc_fresh"] == pytest.approx(0.72)
    assert rec.loc["dcnv2@d2", "fm_auc"] == pytest.approx(0.64)
    assert rec.loc["dcnv2@d3", "fm_auc_fresh"] == pytest.approx(0.74)
    assert rec.loc["dcnv2@d3", "fm_auc"] == pytest.approx(0.70)


def test_paired_steps_judge_each_step_against_the_spread_between_seeds():
    from exfm.reproduce.report import paired_steps

    # per seed (0, 1, 2): w/o, vanilla, AH, AH+SA. Seeds move every arm together (init, order),
    # so a paired step is sharp even where the arms' own spread across seeds is wide.
    seeds = {0: (0.60, 0.61, 0.630, 0.631), 1: (0.66, 0.67, 0.688, 0.689),
             2: (0.63, 0.64, 0.661, 0.625)}
    rows = [dict(table="main", fm="dcn", vm="fam", arm=arm, seed=s, reading=r, auc=v)
            for s, vals in seeds.items() for arm, v in zip(("wo", "vanilla", "ah", "ah_sa"), vals)
            for r in (1, 2)]
    ps = paired_steps(pd.DataFrame(rows)).set_index("arm")
    assert ps.loc["vanilla", "diff"] == pytest.approx(0.01)
    assert ps.loc["vanilla", "verdict"] == "ahead"  # +0.01 on every seed: no spread
    assert ps.loc["ah", "verdict"] == "ahead"  # +0.020, +0.018, +0.021
    # AH+SA - AH: +0.001, +0.001, -0.036: mean -0.011, SE 0.0123 -> within the noise
    assert ps.loc["ah_sa", "diff"] == pytest.approx(-0.034 / 3)
    assert ps.loc["ah_sa", "verdict"] == "noise"
    assert (ps.versus.tolist(), ps.seeds.tolist()) == (["wo", "vanilla", "ah"], [3, 3, 3])
    # AH clearly below vanilla on every seed is behind
    behind = [dict(r, auc=r["auc"] - 0.03) if r["arm"] == "ah" else r for r in rows]
    assert paired_steps(pd.DataFrame(behind)).set_index("arm").loc["ah", "verdict"] == "behind"
    # one seed: no spread to judge by
    assert paired_steps(pd.DataFrame([r for r in rows if r["seed"] == 0])).empty
