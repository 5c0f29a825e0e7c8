"""The bring-your-own dataset format: ``DIR/schema.yaml`` + ``DIR/day=YYYY-MM-DD/part-*.parquet``.

:class:`DatasetSchema` is the parsed ``schema.yaml`` (see DESIGN.md "Dataset format"). Models
declare which fields they read through :meth:`DatasetSchema.fields_for`: a VM reads the shared
fields, the FM also reads ``fm_only``.

Example:
    >>> s = DatasetSchema(name="x", timestamp="ts", labels=["click"],
    ...                   sparse=[SparseField(name="user_id", vocab=10)])
    >>> s.sparse_names
    ['user_id']
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SCHEMA_FILE = "schema.yaml"
DAY_DIR_RE = re.compile(r"^day=(\d{4}-\d{2}-\d{2})$")


class DatasetError(ValueError):
    """A dataset broke a rule. ``str()`` names the file, the column and the rule."""

    def __init__(self, file: str | Path, column: str | None, rule: str, what: str = "column"):
        self.file, self.column, self.rule = str(file), column, rule
        where = f"{self.file}" + (f": {what} '{column}'" if column else "")
        super().__init__(f"{where}: {rule}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SparseField(_Strict):
    name: str
    vocab: int = Field(ge=1)


class SequenceField(_Strict):
    name: str
    of: str = Field(description="the sparse field whose ids the list holds")
    max_len: int = Field(ge=1)


class DatasetSchema(_Strict):
    """One dataset's columns and their roles."""

    name: str
    timestamp: str
    request_id: str | None = None
    domain: str | None = None
    stage: str | None = None
    labels: list[str] = Field(min_length=1)
    sparse: list[SparseField] = Field(default_factory=list)
    dense: list[str] = Field(default_factory=list)
    sequences: list[SequenceField] = Field(default_factory=list)
    fm_only: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _fm_only_is_dense(cls, raw):
        """A column named only under ``fm_only`` is a dense float the FM alone reads."""
        if not isinstance(raw, dict) or not isinstance(raw.get("fm_only"), list):
            return raw
        def names(key, attr=None):
            items = raw.get(key) or []
            return [(i.get("name") if isinstance(i, dict) else getattr(i, "name", i))
                    for i in items] if isinstance(items, list) else []
        known = set(names("sparse")) | set(names("dense")) | set(names("sequences"))
        known |= set(names("labels")) | {raw.get(k) for k in
                                         ("timestamp", "request_id", "domain", "stage")}
        extra = [c for c in raw["fm_only"] if isinstance(c, str) and c not in known]
        if not extra:
            return raw
        return {**raw, "dense": list(raw.get("dense") or []) + extra}

    @model_validator(mode="after")
    def _consistent(self) -> "DatasetSchema":
        names = ([self.timestamp] + self.labels + self.sparse_names + self.dense
                 + [q.name for q in self.sequences]
                 + [c for c in (self.request_id, self.domain, self.stage) if c])
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"columns named twice: {dup}")
        for q in self.sequences:
            if q.of not in self.sparse_names:
                raise ValueError(f"sequence '{q.name}': of='{q.of}' is not a sparse field")
        feature_cols = set(self.sparse_names) | set(self.dense) | {q.name for q in self.sequences}
        for c in self.fm_only:
            if c not in feature_cols:
                raise ValueError(f"fm_only '{c}' is not a sparse, dense or sequence field")
        return self

    # -- views -----------------------------------------------------------------------------
    @property
    def sparse_names(self) -> list[str]:
        return [f.name for f in self.sparse]

    @property
    def vocab(self) -> dict[str, int]:
        return {f.name: f.vocab for f in self.sparse}

    @property
    def columns(self) -> list[str]:
        """Every column a day file must hold, in schema order."""
        cols = [self.timestamp]
        cols += [c for c in (self.request_id, self.domain, self.stage) if c]
        cols += self.labels + self.sparse_names + self.dense + [q.name for q in self.sequences]
        return cols

    def fields_for(self, role: str) -> "DatasetSchema":
        """The schema a model of ``role`` ('fm' or 'vm') reads: a VM loses the ``fm_only`` fields."""
        if role == "fm":
            return self
        if role != "vm":
            raise ValueError(f"role must be 'fm' or 'vm', got {role!r}")
        drop = set(self.fm_only)
        return self.model_copy(update=dict(
            sparse=[f for f in self.sparse if f.name not in drop],
            dense=[c for c in self.dense if c not in drop],
            sequences=[q for q in self.sequences if q.name not in drop],
            fm_only=[],
        ))

    def digest(self) -> str:
        """Stable hash of the schema (goes into partition manifests)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    # -- io --------------------------------------------------------------------------------
    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)

    def write(self, directory: str | Path) -> Path:
        path = Path(directory) / SCHEMA_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml())
        return path


def load_schema(directory: str | Path) -> DatasetSchema:
    """Parse ``DIR/schema.yaml``; errors name the file and the key."""
    path = Path(directory) / SCHEMA_FILE
    if not path.exists():
        raise DatasetError(path, None, "schema.yaml is missing (see DESIGN.md 'Dataset format')")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise DatasetError(path, None, f"not valid YAML: {e}") from e
    if raw is None:
        raise DatasetError(path, None, "schema.yaml is empty: it needs at least name, timestamp "
                                       "and labels (see DESIGN.md 'Dataset format')")
    if not isinstance(raw, dict):
        raise DatasetError(path, None, f"schema.yaml must be a mapping of keys (name, timestamp, "
                                       f"labels, ...), got a {type(raw).__name__}")
    try:
        return DatasetSchema.model_validate(raw)
    except ValidationError as e:
        errors = e.errors()
        # a misspelt key also makes the key it meant "required": name the misspelling
        first = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
        loc = _readable_loc(raw, first["loc"])
        msg = "required key is missing" if first["type"] == "missing" else first["msg"]
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
            missing = [str(x["loc"][-1]) for x in errors
                       if x["type"] == "missing" and x["loc"][:-1] == first["loc"][:-1]]
            close = difflib.get_close_matches(str(first["loc"][-1]), missing, n=1)
            if close:
                msg += f" (did you mean '{close[0]}'?)"
        raise DatasetError(path, loc, msg, what="key") from None


def _readable_loc(raw: dict, loc: tuple) -> str | None:
    """``sparse.0.vocab`` -> ``sparse[user_id].vocab``: name a list entry by its ``name``."""
    out = ""
    node = raw
    for x in loc:
        if isinstance(x, int) and isinstance(node, list) and x < len(node):
            node = node[x]
            name = node.get("name") if isinstance(node, dict) else None
            out += f"[{name or x}]"
            continue
        out += f".{x}" if out else str(x)
        node = node.get(x) if isinstance(node, dict) else None
    return out or None


def list_days(directory: str | Path) -> list[str]:
    """Sorted ``YYYY-MM-DD`` of the day folders under ``DIR``."""
    out = []
    for p in Path(directory).iterdir():
        m = DAY_DIR_RE.match(p.name)
        if m and p.is_dir():
            out.append(m.group(1))
    return sorted(out)


def day_dir(directory: str | Path, day: str) -> Path:
    return Path(directory) / f"day={day}"
