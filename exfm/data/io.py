"""Local reading and writing of day folders in the bring-your-own format.

A day is ``DIR/day=YYYY-MM-DD/part-00000.parquet, part-00001.parquet, ...``; rows in arrival
order across the parts in name order. :func:`write_day` writes a whole day to a staging folder
and swaps it in, so a re-run replaces the day whole and a crash never leaves half a day behind.

Example:
    >>> import pyarrow as pa, tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = write_day(d, "2026-01-01", pa.table({"ts": [1, 2, 3]}), rows_per_part=2)
    >>> read_day(d, "2026-01-01").num_rows
    3
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from exfm.data.schema import DatasetError, day_dir

PART_GLOB = "part-*.parquet"
DEFAULT_ROWS_PER_PART = 1_000_000


def thin(table: pa.Table, max_rows: int | None) -> pa.Table:
    """Every k-th row so that at most ``max_rows`` remain (arrival order kept; None = all)."""
    if not max_rows or table.num_rows <= max_rows:
        return table
    import numpy as np

    k = math.ceil(table.num_rows / max_rows)
    return table.take(pa.array(np.arange(0, table.num_rows, k)))


def part_files(directory: str | Path, day: str) -> list[Path]:
    """The part files of one day, in arrival order (name order)."""
    d = day_dir(directory, day)
    if not d.is_dir():
        raise DatasetError(d, None, "day folder is missing")
    return sorted(d.glob(PART_GLOB))


def read_day(directory: str | Path, day: str, columns: list[str] | None = None) -> pa.Table:
    """All rows of one day, parts concatenated in order.

    Args:
        directory: the dataset folder (holds ``schema.yaml``).
        day: ``YYYY-MM-DD``.
        columns: read only these (default: all).

    Raises:
        DatasetError: the day folder or its parts are missing, or a requested column is absent.
    """
    parts = part_files(directory, day)
    if not parts:
        raise DatasetError(day_dir(directory, day), None, f"no {PART_GLOB} files")
    tables = []
    for p in parts:
        if columns is not None:
            have = set(pq.read_schema(p).names)
            missing = [c for c in columns if c not in have]
            if missing:
                raise DatasetError(p, missing[0], "column is missing")
        tables.append(pq.read_table(p, columns=columns))
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="default")


def write_day(directory: str | Path, day: str, table: pa.Table,
              rows_per_part: int = DEFAULT_ROWS_PER_PART, compression: str = "zstd") -> list[Path]:
    """Write one day as ``part-%05d.parquet`` files, replacing the day if it exists.

    The parts are written into a hidden staging folder next to the day and moved in with one
    rename, so readers never see a partial day.

    Returns:
        The paths of the written parts (in their final place).
    """
    if rows_per_part < 1:
        raise ValueError("rows_per_part must be >= 1")
    final = day_dir(directory, day)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".staging-{final.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        n = table.num_rows
        starts = range(0, max(n, 1), rows_per_part)
        names = []
        for k, start in enumerate(starts):
            name = f"part-{k:05d}.parquet"
            # no statistics timestamps or writer-dependent metadata beyond the library version,
            # so the same table gives the same bytes (the generator's determinism test relies on it)
            pq.write_table(table.slice(start, rows_per_part), staging / name,
                           compression=compression)
            names.append(name)
        old = None
        if final.exists():
            old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        os.replace(staging, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [final / n for n in names]
