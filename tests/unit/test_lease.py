"""Lease store (Zeus): compare-and-set under races, lease expiry, GC, and the loader's swap.

Runs on SQLite and on the local PostgreSQL (127.0.0.1:5432); the PostgreSQL cases need the
server (CI has it) and fail, not skip, when it is missing.
"""

import multiprocessing as mp
import threading
import time
import uuid

import pytest
from sqlalchemy import create_engine, text

from exfm.das.lease import LeaseStore, make_engine
from exfm.das.snapshots import SnapshotLoader, SnapshotUpdater

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/lease.db"
        return
    name = f"exfm_lease_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _store(url, ttl=60.0):
    s = LeaseStore(make_engine(url), ttl_s=ttl)
    s.create_tables()
    return s


def test_two_updaters_racing_exactly_one_wins(db_url):
    store = _store(db_url)
    assert store.compare_and_set("fm", 0, "1", "u1")
    # both read generation 1, both try to publish
    assert store.compare_and_set("fm", 1, "2", "u2") is True
    assert store.compare_and_set("fm", 1, "3", "u3") is False
    lease = store.get("fm")
    assert (lease.version, lease.generation) == ("2", 2)


def _racer(url, n, worker, out):
    store = LeaseStore(make_engine(url), ttl_s=60)
    wins = []
    for i in range(n):
        while True:
            cur = store.get("fm")
            gen = cur.generation if cur else 0
            if store.compare_and_set("fm", gen, f"w{worker}-{i}", "uri"):
                wins.append(gen + 1)
                break
    out.put((worker, wins))


def test_stress_1000_racing_cas_from_processes(db_url):
    _store(db_url)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(db_url, 250, w, out)) for w in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    generations = [g for _, wins in results for g in wins]
    # 1,000 successful CAS in total, and every generation was won exactly once
    assert len(generations) == 1000
    assert sorted(generations) == list(range(1, 1001))
    assert LeaseStore(make_engine(db_url)).get("fm").generation == 1000


def test_expired_leases_are_collectable_but_never_the_served_one(db_url):
    store = _store(db_url, ttl=10)
    for v in range(1, 6):
        cur = store.get("fm")
        assert store.compare_and_set("fm", cur.generation if cur else 0, str(v), f"u{v}", now=100.0 + v)
    # at t=105 every lease written so far is still valid until >= 111
    assert store.collectable("fm", keep_last=1, now=105.0) == []
    # much later: all expired; the served version 5 and the newest kept one stay
    later = store.collectable("fm", keep_last=2, now=1000.0)
    assert set(later) == {"1", "2", "3"}
    assert "5" not in store.collectable("fm", keep_last=0, now=1000.0)
    store.mark_collected("fm", "1")
    assert "1" not in store.collectable("fm", keep_last=0, now=1000.0)


def test_updater_extends_while_nothing_newer(db_url):
    store = _store(db_url, ttl=10)
    published = {"v": ("1", "u1")}
    up = SnapshotUpdater(store, "fm", lambda: published["v"])
    assert up.poll_once(now=0.0) == "set"
    assert store.get("fm").lease_expiry == 10.0
    assert up.poll_once(now=5.0) == "extended"
    assert store.get("fm").lease_expiry == 15.0
    published["v"] = ("2", "u2")
    assert up.poll_once(now=6.0) == "set"
    assert store.get("fm").version == "2"


def test_loader_keeps_old_until_new_loaded_and_loads_once(tmp_path):
    store = _store(f"sqlite:///{tmp_path}/l.db")
    store.compare_and_set("fm", 0, "1", "u1")
    gate = threading.Event()
    loads = []

    def load(version, uri):
        loads.append(version)
        if version == "2":
            gate.wait(5)  # a slow load of the new snapshot
        return f"model-{version}"

    loader = SnapshotLoader(store, "fm", load)
    assert loader.refresh() is True
    assert loader.current() == ("1", "model-1")
    store.compare_and_set("fm", 1, "2", "u2")
    t = threading.Thread(target=loader.refresh)
    t.start()
    # while v2 loads, v1 is still what is served
    for _ in range(20):
        assert loader.current() == ("1", "model-1")
    gate.set()
    t.join(5)
    assert loader.current() == ("2", "model-2")
    assert loader.refresh() is False  # same version: no second load
    assert loads == ["1", "2"]


# --- writer fence of day partitions ------------------------------------------------------------
def test_fence_later_writer_wins_earlier_is_fenced(tmp_path):
    import pytest

    from exfm.das.lease import FencedError, PartitionFence, make_engine

    fence = PartitionFence(make_engine(f"sqlite:///{tmp_path}/f.db"))
    fence.create_tables()
    key = "b/raw/day=2026-01-01/"
    a = fence.take(key, "a")
    b = fence.take(key, "b")
    assert (a, b) == (1, 2) and fence.holder(key) == (2, "b")
    with pytest.raises(FencedError, match="another writer"):
        with fence.committing(key, a):
            raise AssertionError("a fenced writer's commit body must not run")
    ran = []
    with fence.committing(key, b):
        ran.append(True)
    assert ran == [True]
    assert fence.holder("b/raw/day=2026-01-02/") is None


def test_fence_take_waits_for_a_commit_in_progress(tmp_path):
    """A writer that takes the day while another commits gets it only after that commit: the
    check and the manifest PUT are one step for everyone else."""
    import threading

    from exfm.das.lease import PartitionFence, make_engine

    fence = PartitionFence(make_engine(f"sqlite:///{tmp_path}/f.db"))
    fence.create_tables()
    key = "b/raw/day=2026-01-01/"
    g = fence.take(key, "a")
    events: list[str] = []
    inside = threading.Event()

    def taker():
        inside.wait(10)
        fence.take(key, "b")
        events.append("b took")

    t = threading.Thread(target=taker)
    t.start()
    with fence.committing(key, g):
        inside.set()
        time.sleep(0.5)
        events.append("a committed")
    t.join(30)
    assert events == ["a committed", "b took"]
    assert fence.holder(key) == (2, "b")
