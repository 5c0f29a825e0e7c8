"""Day partitions on the object store, committed by a manifest written last.

Layout (DESIGN.md "Contracts")::

    <prefix>/day=YYYY-MM-DD/_manifest.json              # the commit: names the parts below
    <prefix>/day=YYYY-MM-DD/_v=<write id>/part-00000.parquet

S3 cannot rename a folder, so a writer puts its parts under a fresh ``_v=<id>/`` staging prefix
and commits by writing one small object, the manifest, last (a single PUT is atomic). Readers
follow the manifest, never a listing: a crash at any point leaves either the old day or the new
day visible, never a mix.

Two writers on one day (a manual run beside the DAG, a zombie attempt) are fenced: a writer takes
the day's generation in the lease store's database before staging and commits only if it still
holds it (:class:`~exfm.das.lease.PartitionFence`); a fenced writer deletes its own staged parts
and fails with :class:`WriterFenced`. After a commit the holder collects: parts no manifest names
(crashed or fenced writers), except the current holder's staging, go at once; the replaced
version's parts stay listed under the manifest's ``retired`` for ``storage.superseded_grace_s``
(a reader holding the old manifest still finds them) and are collected by a later commit or
:meth:`PartitionStore.collect`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from exfm.config import ExfmConfig
from exfm.storage.layout import MANIFEST, RAW, SCHEMA_KEY, partition_prefix
from exfm.storage.s3 import StorageError, arrow_fs, s3_client, s3_uri, unreachable

DEFAULT_ROWS_PER_PART = 250_000


class DayNotFound(StorageError):
    """No committed partition for that day."""


class WriterFenced(StorageError):
    """Another writer took the day after this one started; this write committed nothing."""


@dataclass(frozen=True)
class Manifest:
    """What a committed day holds. ``digest`` depends on the content only (not on the write id),
    so a re-run over the same rows gives the same digest."""

    prefix: str
    day: str
    write_id: str
    parts: list[str]
    rows: int
    schema_hash: str
    digest: str
    producer: str = ""
    fm_version: str | None = None
    created_at: float = field(default_factory=time.time)
    extra: dict = field(default_factory=dict)
    # replaced versions still kept for readers: [{"parts": [...], "at": commit time}]
    retired: list = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        return cls(**json.loads(text))


def arrow_schema_hash(schema: pa.Schema) -> str:
    blob = "|".join(f"{f.name}:{f.type}" for f in schema).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    # No statistics timestamps or writer ids that vary between runs: bytes depend on content.
    pq.write_table(table, buf, compression="zstd", write_statistics=True)
    return buf.getvalue()


class PartitionStore:
    """Committed day partitions under ``prefix`` (``raw``, ``augmented``, ...) of the bucket.

    Example:
        >>> store = PartitionStore(cfg, "raw")                    # doctest: +SKIP
        >>> store.write_day("2026-01-01", table, producer="ingest")  # doctest: +SKIP
        >>> store.read_day("2026-01-01", columns=["click"], filter=pc.field("domain") == "d0")
    """

    def __init__(self, cfg: ExfmConfig, prefix: str):
        self.cfg = cfg
        self.prefix = prefix.strip("/")
        self.bucket = cfg.storage.bucket

    # -- keys -------------------------------------------------------------------------------
    def day_prefix(self, day: str) -> str:
        return partition_prefix(self.prefix, day)

    def manifest_key(self, day: str) -> str:
        return self.day_prefix(day) + MANIFEST

    def uri(self, day: str) -> str:
        return s3_uri(self.cfg, self.day_prefix(day))

    # -- read -------------------------------------------------------------------------------
    def manifest(self, day: str) -> Manifest | None:
        """The committed manifest of ``day``, or None if the day was never committed."""
        from botocore.exceptions import ClientError

        try:
            obj = s3_client(self.cfg).get_object(Bucket=self.bucket, Key=self.manifest_key(day))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise StorageError(f"{s3_uri(self.cfg, self.manifest_key(day))}: {e}") from e
        except Exception as e:  # noqa: BLE001
            raise unreachable(self.cfg, e) from e
        return Manifest.from_json(obj["Body"].read().decode())

    def list_days(self) -> list[str]:
        """Sorted days that have a committed manifest (a listing finds candidates only)."""
        client = s3_client(self.cfg)
        days = []
        try:
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}/day=", Delimiter="/")
            for page in pages:
                for cp in page.get("CommonPrefixes", []):
                    day = cp["Prefix"].rstrip("/").rsplit("day=", 1)[-1]
                    days.append(day)
        except Exception as e:  # noqa: BLE001
            if "NoSuchBucket" in str(e):
                return []
            raise unreachable(self.cfg, e) from e
        return sorted(d for d in days if self.manifest(d) is not None)

    def read_day(self, day: str, columns: list[str] | None = None, filter=None) -> pa.Table:
        """The committed rows of ``day`` (in write order), optionally a column selection and a
        row filter (a ``pyarrow.compute`` expression, e.g. a VM's domain slice)."""
        import pyarrow.dataset as ds

        m = self.manifest(day)
        if m is None:
            raise DayNotFound(f"{self.uri(day)}: no committed partition (no {MANIFEST})")
        if not m.parts:
            return pa.table({})
        paths = [f"{self.bucket}/{k}" for k in m.parts]
        try:
            dataset = ds.dataset(paths, format="parquet", filesystem=arrow_fs(self.cfg))
            missing = [c for c in (columns or []) if c not in dataset.schema.names]
            if missing:
                raise StorageError(f"{self.uri(day)}: columns {missing} not in the partition "
                                   f"(has {dataset.schema.names})")
            return dataset.to_table(columns=columns, filter=filter)
        except StorageError:
            raise
        except (pa.ArrowInvalid, OSError) as e:
            bad = self._find_corrupt_part(m)
            where = s3_uri(self.cfg, bad) if bad else self.uri(day)
            raise StorageError(f"{where}: cannot read Parquet: {e}") from e

    def stream_day(self, day: str, filter=None, columns: list[str] | None = None):
        """The committed rows of ``day`` as a :class:`~exfm.data.stream.DayStream` (chunks read
        one row group at a time, in write order), optionally filtered (e.g. a VM's slice): what
        a job reads instead of :meth:`read_day` so its memory does not grow with the day.

        Raises:
            DayNotFound: the day has no committed manifest (at once).
            StorageError: a part cannot be read (when the stream is read), naming the object.
        """
        from exfm.data.stream import DayStream

        m = self.manifest(day)
        if m is None:
            raise DayNotFound(f"{self.uri(day)}: no committed partition (no {MANIFEST})")

        def on_error(path: str, exc: Exception):
            key = path.split("/", 1)[-1] if path.startswith(f"{self.bucket}/") else None
            where = s3_uri(self.cfg, key) if key else self.uri(day)
            raise StorageError(f"{where}: cannot read Parquet: {exc}") from exc

        return DayStream([f"{self.bucket}/{k}" for k in m.parts], filesystem=arrow_fs(self.cfg),
                         filter=filter, columns=columns, on_error=on_error, name=self.uri(day))

    def check_parts(self, m: Manifest) -> None:
        """Read every part's Parquet footer: a missing or corrupt part raises a
        :class:`StorageError` naming it (cheap: footers only, no data)."""
        bad = self._find_corrupt_part(m)
        if bad is not None:
            raise StorageError(f"{s3_uri(self.cfg, bad)}: missing or not a readable Parquet file "
                               f"(named by {s3_uri(self.cfg, self.manifest_key(m.day))})")

    def _find_corrupt_part(self, m: Manifest) -> str | None:
        fs = arrow_fs(self.cfg)
        for key in m.parts:
            try:
                pq.read_metadata(f"{self.bucket}/{key}", filesystem=fs)
            except Exception:  # noqa: BLE001
                return key
        return None

    # -- write ------------------------------------------------------------------------------
    def write_day(self, day: str, table: pa.Table, producer: str = "", fm_version: str | None = None,
                  required_columns: Iterable[str] = (), rows_per_part: int = DEFAULT_ROWS_PER_PART,
                  extra: dict | None = None,
                  _before_commit: Callable[[int], None] | None = None) -> Manifest:
        """Write ``table`` as day ``day`` and commit it; replaces a committed day whole.

        Raises:
            StorageError: a required column is missing (nothing is written), or the store fails
                (the previous day stays visible).
        """
        missing = [c for c in required_columns if c not in table.column_names]
        if missing:
            raise StorageError(f"{self.uri(day)}: refusing to write: required columns {missing} "
                               f"missing from the table (has {table.column_names})")
        from exfm.das.store import partition_fence

        client = s3_client(self.cfg)
        write_id = uuid.uuid4().hex[:12]
        staging = f"{self.day_prefix(day)}_v={write_id}/"
        fence, fence_key = partition_fence(self.cfg), self._fence_key(day)
        generation = fence.take(fence_key, write_id)
        digest = hashlib.sha256(arrow_schema_hash(table.schema).encode())
        parts = []
        n = table.num_rows
        starts = range(0, max(n, 1), max(rows_per_part, 1))
        try:
            for i, start in enumerate(starts):
                body = _parquet_bytes(table.slice(start, rows_per_part))
                digest.update(hashlib.sha256(body).digest())
                key = f"{staging}part-{i:05d}.parquet"
                client.put_object(Bucket=self.bucket, Key=key, Body=body)
                parts.append(key)
                if _before_commit is not None:  # test hook: crash injection between parts
                    _before_commit(i)
        except StorageError:
            raise
        except Exception as e:  # noqa: BLE001
            raise StorageError(f"{self.uri(day)}: writing parts failed, day left as it was: {e}") from e
        from exfm.das.lease import FencedError

        try:
            # The commit: one PUT of a small object, under the fence. Before it, readers see the
            # old day; a writer that took the day after us makes this raise instead.
            with fence.committing(fence_key, generation):
                now = time.time()
                m = Manifest(prefix=self.prefix, day=day, write_id=write_id, parts=parts, rows=n,
                             schema_hash=arrow_schema_hash(table.schema), digest=digest.hexdigest(),
                             producer=producer, fm_version=fm_version, extra=extra or {},
                             created_at=now, retired=self._retired(self.manifest(day), now))
                client.put_object(Bucket=self.bucket, Key=self.manifest_key(day),
                                  Body=m.to_json().encode())
        except FencedError as e:
            self._delete(parts)  # only our own staging; the holder collects the rest
            raise WriterFenced(f"{self.uri(day)}: {e}; this write ({write_id}) committed nothing "
                               "and its parts were deleted") from None
        self.collect(day)
        return m

    def _fence_key(self, day: str) -> str:
        return f"{self.bucket}/{self.day_prefix(day)}"

    def _retired(self, prev: Manifest | None, now: float) -> list:
        """The new manifest's ``retired``: the replaced version now, plus earlier ones still in
        their grace period."""
        grace = self.cfg.storage.superseded_grace_s
        out = [r for r in (prev.retired if prev else []) if now - r["at"] < grace]
        if prev is not None and prev.parts:
            out.append({"parts": list(prev.parts), "at": now})
        return out

    def collect(self, day: str, now: float | None = None) -> int:
        """Delete the parts under ``day`` that no reader can need: not named by the committed
        manifest, not a replaced version within ``storage.superseded_grace_s``, not the
        staging of the writer that holds the day now. Returns how many were deleted."""
        from exfm.das.store import partition_fence

        now = time.time() if now is None else now
        m = self.manifest(day)
        keep = set(m.parts) if m else set()
        for r in (m.retired if m else []):
            if now - r["at"] < self.cfg.storage.superseded_grace_s:
                keep |= set(r["parts"])
        client = s3_client(self.cfg)
        listed = []
        for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.day_prefix(day) + "_v="):
            listed += [o["Key"] for o in page.get("Contents", [])]
        # read after listing: a part listed was staged by a writer that took the day before
        held = partition_fence(self.cfg).holder(self._fence_key(day))
        holding = f"{self.day_prefix(day)}_v={held[1]}/" if held else None
        doomed = [k for k in listed if k not in keep and not (holding and k.startswith(holding))]
        self._delete(doomed)
        return len(doomed)

    def _delete(self, keys: list[str]) -> None:
        client = s3_client(self.cfg)
        doomed = list(keys)
        for i in range(0, len(doomed), 1000):
            client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": k} for k in doomed[i:i + 1000]], "Quiet": True})


# -- the dataset's schema.yaml beside raw/ -----------------------------------------------------
def put_remote_schema(cfg: ExfmConfig, schema_yaml: str) -> str:
    s3_client(cfg).put_object(Bucket=cfg.storage.bucket, Key=SCHEMA_KEY, Body=schema_yaml.encode())
    return s3_uri(cfg, SCHEMA_KEY)


def load_remote_schema(cfg: ExfmConfig):
    """The :class:`DatasetSchema` that ``ingest_dataset`` stored beside ``raw/``."""
    import yaml

    from exfm.data.schema import DatasetSchema

    from botocore.exceptions import ClientError

    try:
        body = s3_client(cfg).get_object(Bucket=cfg.storage.bucket, Key=SCHEMA_KEY)["Body"].read()
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            raise StorageError(f"{s3_uri(cfg, SCHEMA_KEY)}: no dataset schema in the bucket "
                               f"(run `exfm data ingest DIR` first)") from e
        raise StorageError(f"{s3_uri(cfg, SCHEMA_KEY)}: S3 refused or failed the read (an outage, "
                           f"not a missing schema): {e}") from e
    except Exception as e:  # noqa: BLE001 - connection errors: the endpoint is down
        raise StorageError(f"{s3_uri(cfg, SCHEMA_KEY)}: S3 unreachable at "
                           f"{cfg.s3_endpoint}: {e}") from e
    return DatasetSchema.model_validate(yaml.safe_load(body))


def ingest_dataset(cfg: ExfmConfig, data_dir: str | Path, days: list[str] | None = None,
                   progress: Callable[[str], None] = print) -> list[Manifest]:
    """Upload a local bring-your-own-format folder's days into ``raw/`` (validated first)."""
    from exfm.data.schema import day_dir, list_days, load_schema

    schema = load_schema(data_dir)
    available = list_days(data_dir)
    days = available if days is None else days
    unknown = [d for d in days if d not in available]
    if unknown:
        raise StorageError(f"{data_dir}: no day folders for {unknown} (has {available[:3]}...)")
    try:
        from exfm.data.validate import validate_dataset
    except ImportError:  # pragma: no cover - validation lands with the data module
        validate_dataset = None
    if validate_dataset is not None:
        validate_dataset(data_dir, days=days)
    put_remote_schema(cfg, schema.to_yaml())
    store = PartitionStore(cfg, RAW)
    out = []
    for d in days:
        files = sorted(day_dir(data_dir, d).glob("part-*.parquet"))
        table = pa.concat_tables([pq.read_table(f) for f in files]) if files else None
        if table is None:
            raise StorageError(f"{day_dir(data_dir, d)}: no part-*.parquet files")
        t0 = time.time()
        m = store.write_day(d, table, producer="exfm data ingest", required_columns=schema.columns,
                            extra={"schema_digest": schema.digest()})
        progress(f"ingested {d}: {m.rows} rows -> {store.uri(d)} ({time.time() - t0:.1f}s)")
        out.append(m)
    return out
