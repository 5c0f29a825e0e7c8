"""A VM's slice of a day: the rows of its domain and stage, in one place.

Two forms of the same rule: :func:`slice_filter` (a pyarrow expression, pushed down into a
Parquet read) and :func:`slice_table` (applied to a table in memory). ``None`` (or ``all``) for a
key keeps every row.

>>> import pyarrow as pa
>>> from exfm.data.schema import DatasetSchema, SparseField
>>> s = DatasetSchema(name="t", timestamp="ts", domain="domain", labels=["click"],
...                   sparse=[SparseField(name="u", vocab=3)])
>>> slice_table(pa.table({"domain": ["d0", "d1", "d0"]}), s, domain="d0").num_rows
2
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from exfm.data.schema import DatasetSchema

ALL = "all"


def slice_filter(schema: DatasetSchema, domain: str | None = None, stage: str | None = None,
                 who: str = "the slice"):
    """The pyarrow expression selecting ``domain`` / ``stage`` (None = every row).

    Raises:
        ValueError: a key is asked for but the schema has no such column (``who`` names the
            caller, e.g. ``VM 'd0-click'``).
    """
    expr = None
    for col, want in ((schema.domain, domain), (schema.stage, stage)):
        if want is None or want == ALL:
            continue
        if col is None:
            raise ValueError(f"{who} filters on {want!r} but the schema has no such column")
        term = pc.field(col).cast(pa.string()) == want
        expr = term if expr is None else expr & term
    return expr


def slice_table(table: pa.Table, schema: DatasetSchema, domain: str | None = None,
                stage: str | None = None) -> pa.Table:
    """The rows of ``table`` in ``domain`` / ``stage`` (the same rule as :func:`slice_filter`)."""
    expr = slice_filter(schema, domain, stage)
    return table if expr is None else table.filter(expr)


def vm_slice_filter(vm, schema: DatasetSchema):
    """The pyarrow filter of a VM's rows (``vm``: a ``VMConfig``; None = every row)."""
    return slice_filter(schema, vm.domain, vm.stage, who=f"VM '{vm.name}'")
