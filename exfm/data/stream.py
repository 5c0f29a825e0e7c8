"""A day's rows as a stream of chunks: what the VM jobs and the promotion gate read instead of the
whole day, so their memory holds about one chunk whatever the day's size (issue: memory flat with
day size).

:class:`DayStream` is a day's Parquet files (object-store parts in manifest order, or local files)
and an optional row filter (a VM's domain / stage slice). It is cheap to make and can be read more
than once (a VM day reads it to score yesterday's model, then to train):

- :meth:`DayStream.chunks` yields ``pa.Table`` chunks of exactly ``chunk_rows`` filtered rows (the
  last one shorter), in file and row order, reading one row group at a time;
- :meth:`DayStream.count` counts the filtered rows (reads the filter's columns only);
- :meth:`DayStream.head` / :meth:`DayStream.thin` take the first rows / every k-th row, the same
  rows as :func:`exfm.data.io.thin` on the whole day.

>>> import pyarrow as pa, pyarrow.parquet as pq, tempfile, os, pyarrow.compute as pc
>>> d = tempfile.mkdtemp(); p = os.path.join(d, "part-0.parquet")
>>> pq.write_table(pa.table({"x": list(range(10)), "dom": ["a", "b"] * 5}), p, row_group_size=3)
>>> s = DayStream([p], filter=pc.field("dom") == "a")
>>> [t.column("x").to_pylist() for t in s.chunks(2)]
[[0, 2], [4, 6], [8]]
>>> s.count(), s.thin(2).column("x").to_pylist()
(5, [0, 6])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq


def rechunk(batches: Iterable[pa.RecordBatch | pa.Table], chunk_rows: int) -> Iterator[pa.Table]:
    """Record batches (or tables) as tables of exactly ``chunk_rows`` rows (the last shorter),
    in order; holds at most one chunk plus one batch."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    pending: list[pa.RecordBatch] = []
    n = 0
    for b in batches:
        if b.num_rows == 0:
            continue
        pending.extend(b.to_batches() if isinstance(b, pa.Table) else [b])
        n += b.num_rows
        while n >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_rows).combine_chunks()
            rest = table.slice(chunk_rows)
            pending, n = rest.to_batches(), rest.num_rows
    if n:
        yield pa.Table.from_batches(pending).combine_chunks()


class DayStream:
    """The rows of a day's Parquet ``paths`` (read through ``filesystem``, None = local) that pass
    ``filter`` (a ``pyarrow.compute`` expression, None = every row), as chunks.

    ``on_error(path, exc)`` turns a read failure into the caller's error (e.g. a ``StorageError``
    naming the object); by default the pyarrow error is raised as it is.
    """

    def __init__(self, paths: list[str], filesystem=None, filter=None, columns: list[str] | None
                 = None, on_error=None, name: str = ""):
        self.paths = list(paths)
        self.filesystem = filesystem
        self.filter = filter
        self.columns = columns
        self.on_error = on_error
        self.name = name or (self.paths[0] if self.paths else "empty day")
        self._count: int | None = None

    def _open(self, path: str) -> pq.ParquetFile:
        if self.filesystem is None:
            return pq.ParquetFile(path)
        return pq.ParquetFile(self.filesystem.open_input_file(path))

    def _batches(self) -> Iterator[pa.RecordBatch]:
        """Filtered record batches, one row group at a time, each row group by a reader of its own
        (one reader over a whole file caches what it read: see ``exfm.compute.ingest``)."""
        for path in self.paths:
            try:
                groups = range(self._open(path).num_row_groups)
            except (pa.ArrowInvalid, OSError) as e:
                self._fail(path, e)
            for g in groups:
                try:
                    table = self._open(path).read_row_group(g)
                except (pa.ArrowInvalid, OSError) as e:
                    self._fail(path, e)
                if self.filter is not None:
                    table = table.filter(self.filter)
                if self.columns is not None:
                    table = table.select(self.columns)
                yield from table.to_batches()

    def _fail(self, path: str, exc: Exception):
        if self.on_error is not None:
            self.on_error(path, exc)
        raise exc

    def chunks(self, chunk_rows: int) -> Iterator[pa.Table]:
        """The filtered rows in order, ``chunk_rows`` at a time (the last chunk shorter)."""
        yield from rechunk(self._batches(), chunk_rows)

    def count(self) -> int:
        """How many rows pass the filter (a dataset scan that reads the filter's columns only;
        cached)."""
        if self._count is None:
            import pyarrow.dataset as ds

            if not self.paths:
                return 0
            try:
                dataset = ds.dataset(self.paths, format="parquet", filesystem=self.filesystem)
                self._count = int(dataset.count_rows(filter=self.filter))
            except (pa.ArrowInvalid, OSError) as e:
                self._fail(self.name, e)
        return self._count

    def head(self, n: int) -> pa.Table:
        """The first ``n`` filtered rows (fewer if the day has fewer)."""
        for t in self.chunks(max(1, n)):
            return t.slice(0, n)
        return self._empty()

    def thin(self, max_rows: int | None) -> pa.Table:
        """Every k-th filtered row so that at most ``max_rows`` remain, k = ceil(rows / max_rows):
        the rows :func:`exfm.data.io.thin` keeps of the whole day; None = every row (in memory)."""
        rows = self.count()
        k = 1 if not max_rows or rows <= max_rows else math.ceil(rows / max_rows)
        out, offset = [], 0
        for t in self.chunks(65_536):
            first = (-offset) % k  # the first index in this chunk that is a multiple of k
            if first < t.num_rows:
                out.append(t.take(pa.array(range(first, t.num_rows, k))))
            offset += t.num_rows
        return pa.concat_tables(out) if out else self._empty()

    def _empty(self) -> pa.Table:
        if not self.paths:
            return pa.table({})
        schema = self._open(self.paths[0]).schema_arrow
        if self.columns is not None:
            schema = pa.schema([schema.field(c) for c in self.columns])
        return schema.empty_table()

