"""The lease store (the paper's Zeus): which FM snapshot DAS serves, strongly consistent.

One row per FM name: the current snapshot version and URI, a lease expiry and a generation
number. Every write is a compare-and-set on the generation (``UPDATE ... WHERE generation =
:expected``), so of two updaters racing for the same generation exactly one wins. The lease is
extended at a fixed rate while no newer snapshot exists; versions whose lease expired and that
nobody serves may be garbage-collected (:func:`collectable`), keeping the last K.

A SQL table through SQLAlchemy: SQLite embedded, PostgreSQL in production
(``exfm.db.database_url(cfg, "exfm")``).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from sqlalchemy import (BigInteger, Column, Float, Integer, MetaData, String, Table, create_engine,
                        insert, select, update)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

metadata = MetaData()

leases = Table(
    "exfm_snapshot_lease", metadata,
    Column("fm_name", String(128), primary_key=True),
    Column("version", String(64), nullable=False),
    Column("uri", String(1024), nullable=False),
    Column("generation", BigInteger, nullable=False),
    Column("lease_expiry", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# every version ever leased, for GC: served_until = the last moment its lease was valid
history = Table(
    "exfm_snapshot_history", metadata,
    Column("fm_name", String(128), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("uri", String(1024), nullable=False),
    Column("served_until", Float, nullable=False),
    Column("collected", BigInteger, nullable=False, default=0),
)

# every snapshot load by a DAS worker (observability: a version is loaded once per worker)
loads = Table(
    "exfm_snapshot_loads", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("fm_name", String(128), nullable=False),
    Column("worker", String(128), nullable=False),
    Column("version", String(64), nullable=False),
    Column("loaded_at", Float, nullable=False),
    Column("seconds", Float, nullable=False),
)


# one row per day partition (``bucket/prefix/day=D/``): the generation a writer took before
# staging and must still hold when it commits (a fence: the later writer wins, the earlier fails)
fences = Table(
    "exfm_partition_fence", metadata,
    Column("partition", String(512), primary_key=True),
    Column("generation", BigInteger, nullable=False),
    Column("holder", String(64), nullable=False),
    Column("taken_at", Float, nullable=False),
)


class FencedError(RuntimeError):
    """A writer lost its partition to a later writer; it must not commit."""


@dataclass(frozen=True)
class Lease:
    fm_name: str
    version: str
    uri: str
    generation: int
    lease_expiry: float

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.lease_expiry


def make_engine(url: str) -> Engine:
    """An engine for the lease store; SQLite waits on locks instead of failing at once."""
    if url.startswith("sqlite"):
        return create_engine(url, connect_args={"timeout": 30}, pool_pre_ping=True)
    return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)


class LeaseStore:
    """Compare-and-set access to the current snapshot of each FM.

    Example:
        >>> store = LeaseStore(make_engine("sqlite://"), ttl_s=60)
        >>> store.create_tables()
        >>> store.compare_and_set("exfm-fm", expected_generation=0, version="1", uri="models:/m-1")
        True
        >>> store.get("exfm-fm").generation
        1
    """

    def __init__(self, engine: Engine, ttl_s: float = 600.0):
        self.engine = engine
        self.ttl_s = ttl_s

    def create_tables(self) -> None:
        """Create the tables if missing; safe when several workers race to do it."""
        from sqlalchemy.exc import DBAPIError

        for attempt in range(3):
            try:
                metadata.create_all(self.engine)
                return
            except DBAPIError:  # another process created them between check and CREATE
                if attempt == 2:
                    raise
                time.sleep(0.2)

    def get(self, fm_name: str) -> Lease | None:
        with self.engine.connect() as c:
            row = c.execute(select(leases).where(leases.c.fm_name == fm_name)).mappings().first()
        return None if row is None else Lease(row["fm_name"], row["version"], row["uri"],
                                               int(row["generation"]), float(row["lease_expiry"]))

    def compare_and_set(self, fm_name: str, expected_generation: int, version: str, uri: str,
                        now: float | None = None) -> bool:
        """Set ``version`` as current iff the stored generation is ``expected_generation``
        (0 = no row yet). True iff this call won."""
        now = time.time() if now is None else now
        expiry = now + self.ttl_s
        try:
            with self.engine.begin() as c:
                if expected_generation == 0:
                    c.execute(insert(leases).values(fm_name=fm_name, version=version, uri=uri,
                                                    generation=1, lease_expiry=expiry,
                                                    updated_at=now))
                else:
                    res = c.execute(update(leases).where(
                        (leases.c.fm_name == fm_name)
                        & (leases.c.generation == expected_generation)).values(
                        version=version, uri=uri, generation=expected_generation + 1,
                        lease_expiry=expiry, updated_at=now))
                    if res.rowcount != 1:
                        return False
                self._record(c, fm_name, version, uri, expiry)
            return True
        except IntegrityError:  # another updater inserted generation 1 first
            return False

    def extend(self, fm_name: str, expected_generation: int, now: float | None = None) -> bool:
        """Extend the lease of the current version (only if nothing replaced it meanwhile)."""
        now = time.time() if now is None else now
        with self.engine.begin() as c:
            res = c.execute(update(leases).where(
                (leases.c.fm_name == fm_name) & (leases.c.generation == expected_generation)
            ).values(lease_expiry=now + self.ttl_s, updated_at=now))
            if res.rowcount == 1:
                cur = c.execute(select(leases.c.version, leases.c.uri).where(
                    leases.c.fm_name == fm_name)).first()
                self._record(c, fm_name, cur.version, cur.uri, now + self.ttl_s)
            return res.rowcount == 1

    def _record(self, c, fm_name: str, version: str, uri: str, served_until: float) -> None:
        res = c.execute(update(history).where(
            (history.c.fm_name == fm_name) & (history.c.version == version)
        ).values(served_until=served_until))
        if res.rowcount == 0:
            c.execute(insert(history).values(fm_name=fm_name, version=version, uri=uri,
                                             served_until=served_until, collected=0))

    def collectable(self, fm_name: str, keep_last: int = 2, now: float | None = None) -> list[str]:
        """Versions whose lease has expired, that are not served now, beyond the newest
        ``keep_last``: safe to garbage-collect. Never returns the leased version."""
        now = time.time() if now is None else now
        current = self.get(fm_name)
        with self.engine.connect() as c:
            rows = c.execute(select(history).where(
                (history.c.fm_name == fm_name) & (history.c.collected == 0))).mappings().all()
        rows = sorted(rows, key=lambda r: _version_key(r["version"]), reverse=True)
        keep = {r["version"] for r in rows[:keep_last]}
        if current is not None:
            keep.add(current.version)
        return [r["version"] for r in rows
                if r["version"] not in keep and float(r["served_until"]) <= now]

    def record_load(self, fm_name: str, worker: str, version: str, seconds: float) -> None:
        """Log that ``worker`` finished loading ``version`` (one row per load)."""
        with self.engine.begin() as c:
            c.execute(insert(loads).values(fm_name=fm_name, worker=worker, version=version,
                                           loaded_at=time.time(), seconds=seconds))

    def load_log(self, fm_name: str) -> list[tuple[str, str]]:
        """``(worker, version)`` of every recorded load, oldest first."""
        with self.engine.connect() as c:
            rows = c.execute(select(loads.c.worker, loads.c.version).where(
                loads.c.fm_name == fm_name).order_by(loads.c.id)).all()
        return [(r.worker, r.version) for r in rows]

    def mark_collected(self, fm_name: str, version: str) -> None:
        with self.engine.begin() as c:
            c.execute(update(history).where((history.c.fm_name == fm_name)
                                            & (history.c.version == version)).values(collected=1))


class PartitionFence:
    """Writer fencing of day partitions, on the lease store's database.

    A writer calls :meth:`take` before staging (the partition's generation goes up by one and the
    writer becomes its holder) and commits inside :meth:`committing`, which holds the row locked
    iff the writer's generation is still the current one. A writer that took the partition later
    therefore fences every earlier one: of two writers on one day, the last to take commits (or
    both do, one after the other, when they do not overlap), and a fenced writer fails cleanly.

    Example:
        >>> fence = PartitionFence(make_engine("sqlite://"))
        >>> fence.create_tables()
        >>> a = fence.take("b/raw/day=2026-01-01/", "writer-a")
        >>> b = fence.take("b/raw/day=2026-01-01/", "writer-b")
        >>> fence.holder("b/raw/day=2026-01-01/")
        (2, 'writer-b')
    """

    def __init__(self, engine: Engine):
        self.engine = engine

    def create_tables(self) -> None:
        LeaseStore(self.engine).create_tables()

    def take(self, partition: str, holder: str) -> int:
        """Become the holder of ``partition``; returns the new generation."""
        for _ in range(5):
            now = time.time()
            try:
                with self.engine.begin() as c:
                    res = c.execute(update(fences).where(fences.c.partition == partition).values(
                        generation=fences.c.generation + 1, holder=holder, taken_at=now))
                    if res.rowcount == 0:
                        c.execute(insert(fences).values(partition=partition, generation=1,
                                                        holder=holder, taken_at=now))
                    return int(c.execute(select(fences.c.generation).where(
                        fences.c.partition == partition)).scalar_one())
            except IntegrityError:  # two first writers raced on the insert: update instead
                continue
        raise FencedError(f"{partition}: could not take the writer fence")

    def holder(self, partition: str) -> tuple[int, str] | None:
        """``(generation, holder)`` of ``partition``, or None if nobody ever wrote it."""
        with self.engine.connect() as c:
            row = c.execute(select(fences.c.generation, fences.c.holder).where(
                fences.c.partition == partition)).first()
        return None if row is None else (int(row.generation), row.holder)

    @contextmanager
    def committing(self, partition: str, generation: int) -> Iterator[None]:
        """Run the body (the manifest PUT) holding ``partition``'s row locked, iff
        ``generation`` is still current; :class:`FencedError` otherwise. A :meth:`take` by
        another writer waits until the body is done."""
        with self.engine.begin() as c:
            res = c.execute(update(fences).where(
                (fences.c.partition == partition) & (fences.c.generation == generation)
            ).values(holder=fences.c.holder))
            if res.rowcount != 1:
                cur = c.execute(select(fences.c.generation, fences.c.holder).where(
                    fences.c.partition == partition)).first()
                raise FencedError(f"{partition}: fenced: another writer ({cur.holder if cur else '?'}) "
                                  f"took generation {cur.generation if cur else '?'} after this "
                                  f"writer's {generation}")
            yield


def _version_key(v: str):
    return (0, int(v), "") if v.isdigit() else (1, 0, v)
