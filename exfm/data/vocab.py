"""Categorical role columns (``domain``, ``stage``) as model inputs, with a persisted vocabulary
(and, in the same input schema, the scale each dense input is read on: ``exfm.data.dense_scale``).

A dataset declares its domain and stage columns by role (see ``schema.py``); their values may be
of any dtype (``"d0"``, ``"late"``, ``3``). A model reads each such column as one more sparse
field: :func:`input_schema` returns the schema a model is built from, where every role column the
model needs is appended to ``sparse`` and carries a :class:`Categorical` vocabulary.

Vocabulary rules (:class:`Categorical`):
    - ids live in ``[0, capacity)``; id 0 is the unknown / overflow bucket (nulls, and values that
      arrive once every slot is taken);
    - a value's id is fixed the first time it is seen and never changes; the map is part of the
      model's spec, so a snapshot (and a warm start on a later day) keeps it;
    - a new value takes the slot ``1 + sha1(value) mod (capacity - 1)``, or the next free one
      after it. The slot depends on the value, not on the order rows arrive in, so two replicas
      that meet the same new value in different shards give it the same id (unless two new
      values collide on the same slot, which the reserved capacity makes rare).
Values are compared as strings (``3`` and ``"3"`` are one value).

Example:
    >>> import pyarrow as pa
    >>> c = Categorical(column="domain")
    >>> ids = c.encode(pa.array(["d0", "d1", None, "d0"]))
    >>> bool(ids[0] == ids[3] and ids[0] != ids[1] and ids[2] == 0)
    True
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from exfm.data.dense_scale import FIT_ROWS, DenseScale, fit_scale
from exfm.data.schema import DatasetSchema, SparseField

UNKNOWN = 0
# Slots reserved per role column: room for many more domains / stages than any dataset declares
# on its first day, at a cost of ``capacity x embed_dim`` parameters.
CATEGORY_CAPACITY = 64


class Categorical(BaseModel):
    """One role column's vocabulary: value (as a string) -> id. ``ids`` grows in place."""

    model_config = ConfigDict(extra="forbid")

    column: str
    capacity: int = Field(CATEGORY_CAPACITY, ge=2)
    ids: dict[str, int] = Field(default_factory=dict)

    def _slot(self, value: str) -> int:
        used = set(self.ids.values())
        span = self.capacity - 1
        start = int(hashlib.sha1(value.encode()).hexdigest()[:12], 16) % span
        for k in range(span):
            slot = 1 + (start + k) % span
            if slot not in used:
                return slot
        return UNKNOWN

    def add(self, values) -> None:
        """Give every new value of ``values`` a slot (sorted first: deterministic)."""
        for v in sorted({str(v) for v in values if v is not None} - set(self.ids)):
            slot = self._slot(v)
            if slot == UNKNOWN:
                return  # full: the rest go to the overflow bucket
            self.ids[v] = slot

    def encode(self, arr: pa.Array | pa.ChunkedArray, grow: bool = True) -> np.ndarray:
        """Ids (N,) int64 of a column; ``grow`` first adds the values not seen yet."""
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        s = arr.cast(pa.string()) if not pa.types.is_dictionary(arr.type) else \
            arr.dictionary_decode().cast(pa.string())
        if grow:
            self.add(pc.unique(s).to_pylist())
        keys = list(self.ids)
        lut = np.array([self.ids[k] for k in keys] + [UNKNOWN], dtype=np.int64)
        if not keys:
            return np.full(len(s), UNKNOWN, dtype=np.int64)
        idx = pc.index_in(s, value_set=pa.array(keys, pa.string())).fill_null(len(keys))
        return lut[idx.to_numpy(zero_copy_only=False).astype(np.int64)]


class InputSchema(DatasetSchema):
    """The fields a model reads: a dataset schema whose role columns became sparse inputs.

    ``categorical`` holds the vocabulary of each such column (also in ``sparse``, with
    ``vocab = capacity``). The role keys (``domain``, ``stage``) are cleared here: slicing reads
    the dataset's schema, a model only its inputs.
    """

    categorical: list[Categorical] = Field(default_factory=list)
    # dense columns read on another scale than logged (exfm.data.dense_scale), the others as given;
    # None = not fitted (every column as given)
    dense_scales: list[DenseScale] | None = None

    def categories(self) -> dict[str, Categorical]:
        return {c.column: c for c in self.categorical}

    def scales(self) -> dict[str, DenseScale]:
        return {s.column: s for s in self.dense_scales or []}

    def with_dense_scales(self, sample: pa.Table) -> "InputSchema":
        """A copy whose dense columns are read on the scales fitted on ``sample``'s first
        ``FIT_ROWS`` rows (:mod:`exfm.data.dense_scale`); a schema that has scales keeps them."""
        if self.dense_scales is not None or not self.dense:
            return self
        head = sample.slice(0, FIT_ROWS)
        missing = [c for c in self.dense if c not in head.column_names]
        if missing:
            raise KeyError(f"dense columns {missing} are missing from the fit sample "
                           f"(has {head.column_names})")
        fitted = [fit_scale(c, head.column(c).to_numpy(zero_copy_only=False))
                  for c in self.dense]
        return self.model_copy(update={"dense_scales": [s for s in fitted if s is not None]})


def _single_value(want: str | None) -> bool:
    return want is not None and want != "all"


def input_schema(schema: DatasetSchema, role: str, domain: str | None = None,
                 stage: str | None = None, capacity: int = CATEGORY_CAPACITY) -> InputSchema:
    """The schema a model of ``role`` ('fm' | 'vm') is built from.

    Every declared feature (``fm_only`` too for the FM), plus the ``domain`` and ``stage`` columns
    as categorical inputs. ``domain`` / ``stage`` name a VM's slice: a column the slice holds at
    one value carries nothing and is left out.
    """
    if isinstance(schema, InputSchema):
        return schema
    base = schema.fields_for(role)
    cats = [col for col, want in ((schema.domain, domain), (schema.stage, stage))
            if col and not (role == "vm" and _single_value(want))]
    dump = base.model_dump()
    dump.update(domain=None, stage=None,
                sparse=dump["sparse"] + [SparseField(name=c, vocab=capacity).model_dump()
                                         for c in cats],
                categorical=[Categorical(column=c, capacity=capacity).model_dump() for c in cats])
    return InputSchema.model_validate(dump)


def schema_from_dump(dump: dict) -> DatasetSchema:
    """A model spec's schema back: an :class:`InputSchema` when it has vocabularies."""
    return (InputSchema if "categorical" in dump else DatasetSchema).model_validate(dump)


def encode_sparse(table: pa.Table, schema: DatasetSchema, name: str) -> np.ndarray | None:
    """Ids of a categorical input column (growing its vocabulary), or None for a plain one."""
    cats = schema.categories() if isinstance(schema, InputSchema) else {}
    if name not in cats:
        return None
    if name not in table.column_names:
        raise KeyError(f"column '{name}' is missing from the table (has {table.column_names})")
    return cats[name].encode(table.column(name))
