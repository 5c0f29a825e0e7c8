"""The synthetic stream: deterministic, valid, rare positives, measurable drift."""

import numpy as np
import pytest

from exfm.config import GeneratorConfig
from exfm.data.generator import generate, iter_days
from exfm.data.io import read_day
from exfm.data.schema import list_days, load_schema
from exfm.data.validate import validate_dataset

SMALL = dict(days=8, rows_per_day=6000, n_users=800, n_items=400)


@pytest.fixture(scope="module")
def stream():
    return list(iter_days(GeneratorConfig(**SMALL)))


def test_deterministic_per_seed(stream):
    again = list(iter_days(GeneratorConfig(**SMALL)))
    for (d1, t1), (d2, t2) in zip(stream, again):
        assert d1 == d2 and t1.equals(t2)
    other = next(iter_days(GeneratorConfig(**{**SMALL, "seed": 1})))[1]
    assert not other.equals(stream[0][1])


def test_written_dataset_is_valid(tmp_path):
    g = GeneratorConfig(days=2, rows_per_day=3000, n_users=300, n_items=200)
    schema = generate(g, tmp_path, rows_per_part=1000)
    validate_dataset(tmp_path)
    assert load_schema(tmp_path) == schema
    assert list_days(tmp_path) == ["2026-01-01", "2026-01-02"]
    assert len(list((tmp_path / "day=2026-01-01").glob("part-*.parquet"))) == 3
    t = read_day(tmp_path, "2026-01-02")
    assert t.num_rows == 3000
    assert set(schema.fm_only) <= set(t.column_names)
    assert set(t.column("stage").to_pylist()) == {"retrieval", "early", "late"}


def test_positive_rates_are_rare_and_tasks_correlated(stream):
    for _, t in stream:
        df = t.to_pandas()
        assert 0.01 <= df.click.mean() <= 0.05
        assert 0.002 <= df.like.mean() <= df.click.mean()
        rates = df.groupby("domain").click.mean()
        assert set(rates.index) == {"d0", "d1", "d2"}
    df = stream[0][1].to_pandas()
    # correlated tasks: a like is likelier on a row that was clicked
    assert df.like[df.click == 1].mean() > 1.5 * df.like[df.click == 0].mean()
    # later stages show better-matched items
    by_stage = df.groupby("stage").click.mean()
    assert by_stage["late"] > by_stage["retrieval"]


def test_drift_is_measurable(stream):
    first, last = stream[0][1].to_pandas(), stream[-1][1].to_pandas()
    new_users = ~last.user_id.isin(set(first.user_id))
    new_items = ~last.item_id.isin(set(first.item_id))
    assert new_users.mean() > 0.2 and new_items.mean() > 0.2
    # item popularity moved: total variation distance between the item distributions
    p1 = first.item_id.value_counts(normalize=True)
    p8 = last.item_id.value_counts(normalize=True)
    tv = 0.5 * p1.subtract(p8, fill_value=0).abs().sum()
    assert tv > 0.3
    # no drift: the same populations day after day
    still = list(iter_days(GeneratorConfig(**{**SMALL, "drift": 0.0})))
    f0, l0 = still[0][1].to_pandas(), still[-1][1].to_pandas()
    assert (l0.user_id < SMALL["n_users"]).all() and (l0.item_id < SMALL["n_items"]).all()
    assert 0.5 * f0.item_id.value_counts(normalize=True).subtract(
        l0.item_id.value_counts(normalize=True), fill_value=0).abs().sum() < tv


def test_sequences_hold_strictly_earlier_engagements(stream):
    t = stream[1][1].to_pandas()
    lens = t.hist_item.map(len)
    assert lens.max() <= 20 and lens.mean() > 3
    # a user's history only grows (or stays full) through the day
    u = t.user_id.value_counts().index[0]
    rows = t[t.user_id == u]
    assert all(a <= b or b == 20 for a, b in zip(rows.hist_item.map(len), rows.hist_item.map(len)[1:]))


def test_fm_only_features_carry_signal(stream):
    df = stream[0][1].to_pandas()
    hi = df.xsvc_affinity > df.xsvc_affinity.quantile(0.8)
    lo = df.xsvc_affinity < df.xsvc_affinity.quantile(0.2)
    assert df.click[hi].mean() > 2 * df.click[lo].mean()


def test_generate_into_a_folder_keeps_its_stream(tmp_path, capsys, monkeypatch):
    """`exfm data generate` into a folder of the same stream rewrites it (an altered day comes
    back); with another --days (the id space, so every day, changes) it refuses and leaves the
    folder as it was, unless --replace."""
    import pyarrow.parquet as pq

    from exfm.cli import main

    monkeypatch.chdir(tmp_path)  # the defaults, not a params.yaml of the checkout
    out = tmp_path / "syn"
    small = ["--set", "data.generator.n_users=300", "--set", "data.generator.n_items=200"]
    base = ["data", "generate", "--out", str(out), "--rows-per-day", "500", *small]
    assert main([*base, "--days", "2"]) == 0
    day2 = out / "day=2026-01-02" / "part-00000.parquet"
    kept = read_day(out, "2026-01-02")
    pq.write_table(kept.slice(0, 10), day2)  # a broken day
    assert main([*base, "--days", "2"]) == 0
    assert read_day(out, "2026-01-02").equals(kept)
    capsys.readouterr()

    assert main([*base, "--days", "3"]) != 0
    err = capsys.readouterr().err
    assert f"{out} already holds another generated stream (2 days" in err
    assert "day 2026-01-01 differs in" in err and "--replace" in err
    assert list_days(out) == ["2026-01-01", "2026-01-02"] and read_day(out, "2026-01-02").equals(kept)

    assert main([*base, "--days", "3", "--replace"]) == 0
    assert list_days(out) == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert not read_day(out, "2026-01-01").equals(next(iter_days(GeneratorConfig(
        days=2, rows_per_day=500, n_users=300, n_items=200)))[1])
