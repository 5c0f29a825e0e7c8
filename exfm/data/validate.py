"""Check a dataset folder against every rule of the bring-your-own format (DESIGN.md).

:func:`validate_dataset` reads every part of every day and collects *all* violations before it
raises, so a user fixing their export sees the whole list at once. Each violation is a
:class:`~exfm.data.schema.DatasetError` naming the file, the column and the rule; the raised
:class:`DatasetErrors` carries them in ``.errors`` and prints them one per line.

Rules (per part file unless noted):
  - ``schema.yaml`` parses and is consistent; at least one ``day=YYYY-MM-DD`` folder, each a real
    calendar date; each day has at least one ``part-*.parquet`` and at least one row;
  - every schema column is present, with no nulls; columns the schema does not name are allowed
    and reported once (:attr:`ValidationReport.ignored`), never read;
  - timestamp: int64 epoch seconds inside the day folder's UTC day; sorted (non-decreasing)
    within a day, across its parts in order;
  - request id: integer or string; unique across the dataset;
  - domain: string or integer; stage: string in ``retrieval|early|late``;
  - labels: an integer type, values 0 or 1;
  - sparse: int64, ids in ``[0, vocab)``;
  - dense: float32/float64, finite;
  - sequences: ``list<int64>``, ids in the ``of`` field's vocab, length <= ``max_len``
    (longer lists are rejected, not truncated: the reader would have to guess which end to keep;
    lists are oldest first, most recent last).

Example:
    >>> validate_dataset("data/synthetic")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from exfm.config.kinds import STAGES
from exfm.data.io import PART_GLOB
from exfm.data.schema import DatasetError, DatasetSchema, day_dir, list_days, load_schema

MAX_REPORTED = 200
DAY_S = 86400


@dataclass
class ValidationReport:
    """What a passing :func:`validate_dataset` saw: days, rows, and the columns it ignored
    (column -> the first file holding it)."""

    days: list[str] = field(default_factory=list)
    rows: int = 0
    ignored: dict[str, str] = field(default_factory=dict)
    dense_max: dict[str, float] = field(default_factory=dict)  # dense column -> largest |value|

    def ignored_line(self) -> str | None:
        if not self.ignored:
            return None
        return (f"ignored {len(self.ignored)} column(s) not in schema.yaml: "
                + ", ".join(sorted(self.ignored)))

    def rescaled_line(self) -> str | None:
        """The dense columns in raw units, which models read on a rescaled, log-compressed
        scale (:mod:`exfm.data.dense_scale`), or None."""
        from exfm.data.dense_scale import IN_SCALE

        big = {c: m for c, m in self.dense_max.items() if m > IN_SCALE}
        if not big:
            return None
        return (f"note: {len(big)} dense column(s) reach beyond +-{IN_SCALE:g}; models read them "
                "as sign(x) log1p(|x|), standardized on their first day (docs/models.md, 'Dense "
                "inputs in raw units'): "
                + ", ".join(f"{c} (max |x| {m:.6g})" for c, m in sorted(big.items())))


def day_bounds(day: str) -> tuple[int, int] | None:
    """``[start, end)`` epoch seconds of the UTC day ``YYYY-MM-DD``; None if no such date."""
    try:
        d = _dt.date.fromisoformat(day)
    except ValueError:
        return None
    start = int(_dt.datetime(d.year, d.month, d.day, tzinfo=_dt.timezone.utc).timestamp())
    return start, start + DAY_S


class DatasetErrors(DatasetError):
    """Several violations at once; ``.errors`` is the list, ``str()`` lists them all."""

    def __init__(self, directory: str | Path, errors: list[DatasetError]):
        self.errors = list(errors)
        shown = [str(e) for e in self.errors[:MAX_REPORTED]]
        more = len(self.errors) - len(shown)
        body = "\n  ".join(shown + ([f"... and {more} more"] if more > 0 else []))
        super().__init__(directory, None,
                         f"{len(self.errors)} format violation(s):\n  {body}")


def _is_int(t: pa.DataType) -> bool:
    return pa.types.is_integer(t)


def _is_list_int64(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_int64(t.value_type)


def _check_ids(err, col: str, values: pa.Array, vocab: int, what: str = "id") -> None:
    if len(values) == 0:
        return
    lo, hi = pc.min_max(values).values()
    if lo.as_py() is not None and (lo.as_py() < 0 or hi.as_py() >= vocab):
        bad = pc.sum(pc.or_(pc.less(values, 0), pc.greater_equal(values, vocab))).as_py()
        err(col, f"{bad} {what}(s) outside [0, {vocab}) (min {lo.as_py()}, max {hi.as_py()})")


def _check_file(path: Path, schema: DatasetSchema, err_at,
                ignored: dict[str, str] | None = None,
                dense_max: dict[str, float] | None = None) -> pa.Table | None:
    """Check one part; returns the timestamp + request id columns for the day-level checks."""
    def err(col, rule):
        err_at(path, col, rule)

    try:
        pf = pq.ParquetFile(path)
        have = pf.schema_arrow
    except Exception as e:  # noqa: BLE001 - any unreadable file is a violation, reported
        err(None, f"not a readable Parquet file: {e}")
        return None
    present = [c for c in schema.columns if c in have.names]
    if ignored is not None:
        for c in have.names:
            if c not in schema.columns and c not in ignored:
                ignored[c] = str(path)
    for c in schema.columns:
        if c not in have.names:
            err(c, "column is missing")
    table = pf.read(columns=present)
    for c in present:
        if table.column(c).null_count:
            err(c, f"{table.column(c).null_count} null value(s)")
    vocab = schema.vocab

    def col(c) -> pa.Array:
        return table.column(c).combine_chunks()

    ts = schema.timestamp
    if ts in present and not pa.types.is_int64(table.schema.field(ts).type):
        err(ts, f"timestamp must be int64 epoch seconds, got {table.schema.field(ts).type}")
    rid = schema.request_id
    if rid and rid in present:
        t = table.schema.field(rid).type
        if not (_is_int(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
            err(rid, f"request id must be an integer or a string, got {t}")
    dom = schema.domain
    if dom and dom in present:
        t = table.schema.field(dom).type
        if not (_is_int(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
                or pa.types.is_dictionary(t)):
            err(dom, f"domain must be a string or integer category, got {t}")
    st = schema.stage
    if st and st in present:
        t = table.schema.field(st).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            err(st, f"stage must be a string, got {t}")
        else:
            bad = pc.unique(pc.filter(col(st), pc.invert(pc.is_in(col(st),
                                                                  pa.array(STAGES)))))
            bad = [b for b in bad.to_pylist() if b is not None]
            if bad:
                err(st, f"stage values must be in {'|'.join(STAGES)}, got {bad[:5]}")
    for c in schema.labels:
        if c not in present:
            continue
        t = table.schema.field(c).type
        if not _is_int(t):
            err(c, f"label must be an integer 0/1 column, got {t}")
            continue
        a = col(c)
        n_bad = pc.sum(pc.invert(pc.is_in(a, pa.array([0, 1], type=t)))).as_py() or 0
        if n_bad:
            err(c, f"label must be 0 or 1: {n_bad} value(s) are not")
    for f in schema.sparse:
        if f.name not in present:
            continue
        t = table.schema.field(f.name).type
        if not pa.types.is_int64(t):
            err(f.name, f"sparse id must be int64, got {t}")
            continue
        _check_ids(err, f.name, col(f.name), f.vocab)
    for c in schema.dense:
        if c not in present:
            continue
        t = table.schema.field(c).type
        if not pa.types.is_floating(t):
            err(c, f"dense feature must be float32/float64, got {t}")
            continue
        a = col(c).to_numpy(zero_copy_only=False)
        n_bad = int((~np.isfinite(a)).sum())
        if n_bad:
            err(c, f"dense values must be finite: {n_bad} NaN/inf value(s)")
        elif dense_max is not None and len(a):
            dense_max[c] = max(dense_max.get(c, 0.0), float(np.abs(a).max()))
    for q in schema.sequences:
        if q.name not in present:
            continue
        t = table.schema.field(q.name).type
        if not _is_list_int64(t):
            err(q.name, f"sequence must be list<int64>, got {t}")
            continue
        a = col(q.name)
        lengths = pc.list_value_length(a)
        longest = pc.max(lengths).as_py() or 0
        if longest > q.max_len:
            n_long = pc.sum(pc.greater(lengths, q.max_len)).as_py()
            err(q.name, f"{n_long} sequence(s) longer than max_len={q.max_len} (longest {longest})")
        flat = pc.list_flatten(a)
        if flat.null_count:
            err(q.name, f"{flat.null_count} null id(s) inside sequences")
        _check_ids(err, q.name, pc.drop_null(flat), vocab[q.of], what=f"'{q.of}' id")
    keep = [c for c in (ts, rid) if c and c in present]
    return table.select(keep)


def validate_dataset(directory: str | Path, days: list[str] | None = None) -> ValidationReport:
    """Check ``directory`` (all days, or ``days``) against the format; raise on any violation.

    Returns the :class:`ValidationReport` of a passing dataset (days, rows, ignored columns).

    Raises:
        DatasetError: the schema itself is invalid or missing (one error).
        DatasetErrors: every violation found in the day files (a subclass of DatasetError).
    """
    directory = Path(directory)
    schema = load_schema(directory)
    errors: list[DatasetError] = []

    def err_at(file, col, rule):
        errors.append(DatasetError(file, col, rule))

    all_days = list_days(directory)
    for p in sorted(directory.glob("day=*")):
        if p.is_dir() and p.name.removeprefix("day=") not in all_days:
            err_at(p, None, "day folder must be named day=YYYY-MM-DD")
    if days is None:
        days = all_days
        if not days:
            err_at(directory, None, "no day=YYYY-MM-DD folders")
    report = ValidationReport(days=list(days))
    seen_rids: set = set()
    rid_type = None
    for day in days:
        d = day_dir(directory, day)
        if day not in all_days:
            err_at(d, None, "day folder is missing")
            continue
        bounds = day_bounds(day)
        if bounds is None:
            err_at(d, None, f"day folder date {day} is not a calendar date")
            continue
        parts = sorted(d.glob(PART_GLOB))
        if not parts:
            err_at(d, None, f"no {PART_GLOB} files")
            continue
        prev_last = None
        day_rows = 0
        for p in parts:
            small = _check_file(p, schema, err_at, report.ignored, report.dense_max)
            if small is None:
                continue
            day_rows += small.num_rows
            ts = schema.timestamp
            if ts in small.column_names and pa.types.is_integer(small.schema.field(ts).type):
                t = small.column(ts).to_numpy()
                if len(t):
                    outside = (t < bounds[0]) | (t >= bounds[1])
                    if outside.any():
                        err_at(p, ts, f"{int(outside.sum())} timestamp(s) outside the folder's "
                                      f"day {day} UTC [{bounds[0]}, {bounds[1]}) (min "
                                      f"{_iso(t.min())}, max {_iso(t.max())})")
                    n_down = int((np.diff(t) < 0).sum())
                    if prev_last is not None and t[0] < prev_last:
                        n_down += 1
                    if n_down:
                        err_at(p, ts, f"rows of a day must be sorted by timestamp: "
                                      f"{n_down} decrease(s)")
                    prev_last = t[-1]
            rid = schema.request_id
            if rid and rid in small.column_names:
                vals = small.column(rid).to_pylist()
                rid_type = rid_type or small.schema.field(rid).type
                uniq = set(vals)
                n_dup = (len(vals) - len(uniq)) + len(uniq & seen_rids)
                if n_dup:
                    err_at(p, rid, f"request ids must be unique: {n_dup} duplicate(s)")
                seen_rids |= uniq
        if day_rows == 0:
            err_at(d, None, "day has 0 rows (an empty day cannot be trained on or validated)")
        report.rows += day_rows
    if errors:
        raise DatasetErrors(directory, errors)
    return report


def _iso(t) -> str:
    return _dt.datetime.fromtimestamp(int(t), _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
