"""Snapshot switching: the updater (registry -> lease store) and the loader (lease -> model).

Every DAS worker owns one :class:`SnapshotLoader`; none is special. The updater may run in every
worker too: the compare-and-set makes concurrent updaters safe. The loader keeps serving the old
snapshot until the new one is fully loaded, never loads the same version twice, and never
exposes a half-loaded model (the swap is one reference assignment after the load returns).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from exfm.das.lease import Lease, LeaseStore

LoadFn = Callable[[str, str], Any]  # (version, uri) -> model


class SnapshotUpdater:
    """Polls the registry (``latest()`` -> (version, uri) | None) and CAS-sets newer versions;
    extends the current lease while nothing newer exists."""

    def __init__(self, store: LeaseStore, fm_name: str, latest: Callable[[], tuple[str, str] | None]):
        self.store, self.fm_name, self.latest = store, fm_name, latest

    def poll_once(self, now: float | None = None) -> str:
        """One poll: 'set' (this updater moved the lease), 'lost' (another updater won),
        'extended', or 'none' (nothing published yet)."""
        found = self.latest()
        cur = self.store.get(self.fm_name)
        if found is None:
            return "none"
        version, uri = found
        if cur is None or _newer(version, cur.version):
            won = self.store.compare_and_set(self.fm_name, cur.generation if cur else 0,
                                             version, uri, now=now)
            return "set" if won else "lost"
        self.store.extend(self.fm_name, cur.generation, now=now)
        return "extended"


class SnapshotLoader:
    """Holds the snapshot this worker serves. ``refresh()`` loads the leased version if it is
    new; ``current()`` returns (version, model) atomically."""

    def __init__(self, store: LeaseStore, fm_name: str, load: LoadFn, worker: str | None = None):
        self.store, self.fm_name, self._load = store, fm_name, load
        self.worker = worker
        self._current: tuple[str, Any] | None = None
        self._lock = threading.Lock()
        self.loads: list[str] = []  # versions loaded by this worker, in order (observability)

    def refresh(self) -> bool:
        """Load the leased snapshot if it differs from the served one. True if switched."""
        lease: Lease | None = self.store.get(self.fm_name)
        if lease is None:
            return False
        with self._lock:
            if self._current is not None and self._current[0] == lease.version:
                return False
            if lease.version in self.loads:  # never load a version twice (e.g. a rollback race)
                return False
            t0 = time.time()
            model = self._load(lease.version, lease.uri)  # the old one keeps serving meanwhile
            self.loads.append(lease.version)
            self._current = (lease.version, model)        # the swap: one assignment
        if self.worker is not None:
            try:
                self.store.record_load(self.fm_name, self.worker, lease.version, time.time() - t0)
            except Exception:  # noqa: BLE001 - observability must not stop serving
                pass
        return True

    def pin(self, version: str, uri: str) -> None:
        """Serve ``version`` whatever the lease says (a day's snapshot fixed by its date, e.g. a
        replay of an old day after the lease moved on); ``refresh()`` is then not called."""
        model = self._load(version, uri)
        with self._lock:
            self.loads.append(version)
            self._current = (version, model)

    def current(self) -> tuple[str, Any]:
        cur = self._current
        if cur is None:
            raise RuntimeError(f"DAS loader: no snapshot of '{self.fm_name}' leased yet "
                               "(has an FM been trained and the updater run?)")
        return cur


def _newer(a: str, b: str) -> bool:
    if a.isdigit() and b.isdigit():
        return int(a) > int(b)
    return a > b
