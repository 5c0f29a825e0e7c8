"""A day's statistics the gates compare against (rows, label rates, the FM's mean predictions),
and the band a value must fall in given the trailing days.

>>> band([{"rows": 100}, {"rows": 300}], "rows", (0.5, 2.0))
(100.0, 400.0)
>>> band([], "rows", (0.5, 2.0)) is None
True
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from exfm.data.schema import DatasetSchema
from exfm.storage.layout import FM_PRED_PREFIX


def _mean(table: pa.Table, col: str) -> float | None:
    if col not in table.column_names or table.num_rows == 0:
        return None
    a = table.column(col)
    if not (pa.types.is_integer(a.type) or pa.types.is_floating(a.type)):
        return None
    m = pc.mean(a).as_py()
    return None if m is None or m != m else float(m)


def day_stats(table: pa.Table, schema: DatasetSchema) -> dict:
    """``{"rows", "label_rate": {label: rate}, "fm_pred_mean": {column: mean}}`` of one day."""
    return {
        "rows": table.num_rows,
        "label_rate": {c: _mean(table, c) for c in schema.labels},
        "fm_pred_mean": {c: _mean(table, c) for c in table.column_names
                         if c.startswith(FM_PRED_PREFIX)},
    }


def _lookup(stats: dict, path: str):
    node = stats
    for part in path.split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def band(trailing: list[dict], path: str, ratio: tuple[float, float]) -> tuple[float, float] | None:
    """``(lo, hi)`` = ``ratio`` x the mean of ``path`` (``rows``, ``label_rate/click``, ...) over
    the trailing days that have it; None when none has it."""
    vals = [v for v in (_lookup(s, path) for s in trailing) if isinstance(v, (int, float))]
    if not vals:
        return None
    mean = sum(vals) / len(vals)
    return ratio[0] * mean, ratio[1] * mean
