"""Columnar tensors of one day, converted once, and the dict batches sliced from them.

A day arrives as a ``pyarrow.Table`` (bring-your-own format, see ``schema.py``). Converting it row
by row per batch would dominate a CPU epoch, so :class:`TableTensors` turns every column the
schema names into one tensor up front; :meth:`TableTensors.batches` only slices.

Batch layout (the seam every model reads, see docs/CONTRACTS.md):
    sparse  (B, Fs) int64    raw ids, schema order (-1 where the value is null); a model's
                             categorical role columns (domain, stage: see ``vocab.py``) come
                             last, as vocabulary ids (0 = unknown)
    dense   (B, Fd) float32  schema order (0.0 where null), on the model's scale for the
                             columns its input schema rescales (``dense_scale.py``)
    seq     {name: (B, L) int64}  the most recent ``max_len`` ids, oldest first, padded with -1
    labels  (B, T) float32   when the table has every task's label column
    fm_pred (B, T) float32   when the table has every ``fm_pred_<task>`` column
    fm_age  (B,) float32     when the table has ``fm_age_days``: days between the FM's last
                             training day and the row's day (the SA's freshness gap)

Example:
    >>> tt = TableTensors.from_table(table, schema, tasks=["click"])   # doctest: +SKIP
    >>> for batch in tt.batches(512): ...                              # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import torch

from exfm.data.dense_scale import apply_scale
from exfm.data.schema import DatasetSchema
from exfm.data.vocab import encode_sparse
from exfm.storage.layout import FM_PRED_PREFIX, fm_pred_column  # noqa: F401 - re-exported

FM_AGE_COLUMN = "fm_age_days"


def _column(table: pa.Table, name: str) -> pa.Array:
    if name not in table.column_names:
        raise KeyError(f"column '{name}' is missing from the table (has {table.column_names})")
    col = table.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _ints(table: pa.Table, name: str) -> np.ndarray:
    arr = _column(table, name)
    return arr.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _sparse(table: pa.Table, schema: DatasetSchema, name: str) -> np.ndarray:
    ids = encode_sparse(table, schema, name)  # a role column (domain, stage) through its vocab
    return _ints(table, name) if ids is None else ids


def _floats(table: pa.Table, name: str, fill: float = 0.0) -> np.ndarray:
    arr = _column(table, name)
    return arr.cast(pa.float64()).fill_null(fill).to_numpy(zero_copy_only=False).astype(np.float32)


def _dense(table: pa.Table, name: str, scale=None) -> np.ndarray:
    """A dense input as the model reads it (``scale``: its ``DenseScale``, None = as logged)."""
    x = _floats(table, name)
    return x if scale is None else apply_scale(x, scale)


def pad_sequences(arr: pa.Array, max_len: int) -> np.ndarray:
    """A list<int> column -> (N, max_len) int64: the last ``max_len`` ids of each list, padded -1.

    Lists are taken to be in arrival order (most recent last); a null list is empty.
    """
    n = len(arr)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if n == 0:
        return np.full((0, max_len), -1, dtype=np.int64)
    offsets = arr.offsets.to_numpy().astype(np.int64)
    values = arr.values.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    # A sliced list array keeps its parent's offsets; values are indexed through them as is.
    lengths = offsets[1:] - offsets[:-1]
    if arr.null_count:
        lengths = np.where(arr.is_null().to_numpy(zero_copy_only=False), 0, lengths)
    keep = np.minimum(lengths, max_len)
    start = offsets[1:] - keep
    pos = np.arange(max_len, dtype=np.int64)
    idx = start[:, None] + pos[None, :]
    valid = pos[None, :] < keep[:, None]
    out = np.full((n, max_len), -1, dtype=np.int64)
    if values.size:
        out[valid] = values[np.clip(idx, 0, values.size - 1)][valid]
    return out


class TableTensors:
    """One day's columns as tensors; ``batches()`` yields dict batches sliced from them.

    Args:
        sparse: (N, Fs) int64. dense: (N, Fd) float32. seq: name -> (N, L) int64.
        labels: (N, T) float32 or None. fm_pred: (N, T) float32 or None. tasks: label names.
    """

    def __init__(self, sparse: torch.Tensor, dense: torch.Tensor, seq: dict[str, torch.Tensor],
                 labels: torch.Tensor | None, fm_pred: torch.Tensor | None, tasks: list[str],
                 fm_age: torch.Tensor | None = None):
        self.sparse, self.dense, self.seq = sparse, dense, seq
        self.labels, self.fm_pred, self.tasks = labels, fm_pred, list(tasks)
        self.fm_age = fm_age

    @classmethod
    def from_table(cls, table: pa.Table, schema: DatasetSchema,
                   tasks: list[str] | None = None) -> "TableTensors":
        """Convert the columns ``schema`` names (and ``tasks``' labels, default all) once."""
        tasks = list(schema.labels if tasks is None else tasks)
        n = table.num_rows
        sparse = (np.stack([_sparse(table, schema, f.name) for f in schema.sparse], axis=1)
                  if schema.sparse else np.zeros((n, 0), dtype=np.int64))
        scales = schema.scales() if hasattr(schema, "scales") else {}
        dense = (np.stack([_dense(table, c, scales.get(c)) for c in schema.dense], axis=1)
                 if schema.dense else np.zeros((n, 0), dtype=np.float32))
        seq = {q.name: torch.from_numpy(pad_sequences(_column(table, q.name), q.max_len))
               for q in schema.sequences}
        names = set(table.column_names)
        labels = fm_pred = None
        if tasks and all(t in names for t in tasks):
            labels = torch.from_numpy(np.stack([_floats(table, t) for t in tasks], axis=1))
        if tasks and all(fm_pred_column(t) in names for t in tasks):
            fm_pred = torch.from_numpy(
                np.stack([_floats(table, fm_pred_column(t)) for t in tasks], axis=1))
        fm_age = (torch.from_numpy(_floats(table, FM_AGE_COLUMN, fill=1.0))
                  if FM_AGE_COLUMN in names else None)
        return cls(torch.from_numpy(np.ascontiguousarray(sparse)),
                   torch.from_numpy(np.ascontiguousarray(dense)), seq, labels, fm_pred, tasks,
                   fm_age)

    def __len__(self) -> int:
        return int(self.sparse.shape[0])

    def to(self, device: torch.device | str) -> "TableTensors":
        """The same tensors on ``device`` (one copy of the day; batches then slice on device)."""
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return TableTensors(mv(self.sparse), mv(self.dense),
                            {k: mv(v) for k, v in self.seq.items()},
                            mv(self.labels), mv(self.fm_pred), self.tasks, mv(self.fm_age))

    def take(self, index: torch.Tensor | slice) -> dict[str, torch.Tensor | dict]:
        """The batch dict for rows ``index`` (a slice is a view, an index tensor a gather)."""
        batch: dict = {"sparse": self.sparse[index], "dense": self.dense[index],
                       "seq": {k: v[index] for k, v in self.seq.items()}}
        if self.labels is not None:
            batch["labels"] = self.labels[index]
        if self.fm_pred is not None:
            batch["fm_pred"] = self.fm_pred[index]
        if self.fm_age is not None:
            batch["fm_age"] = self.fm_age[index]
        return batch

    def batches(self, batch_size: int, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[dict]:
        """Yield batches of ``batch_size`` rows (the last one may be short).

        ``shuffle=False`` keeps arrival order, which is what one-pass streaming training wants.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        if shuffle:
            perm = torch.randperm(n, generator=generator).to(self.sparse.device)
            for i in range(0, n, batch_size):
                yield self.take(perm[i:i + batch_size])
        else:
            for i in range(0, n, batch_size):
                yield self.take(slice(i, i + batch_size))

    def num_batches(self, batch_size: int) -> int:
        return (len(self) + batch_size - 1) // batch_size
