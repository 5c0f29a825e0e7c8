"""The lease store of a config: :class:`~exfm.das.lease.LeaseStore` on ``database_url(cfg,
"exfm")`` with ``das.lease_ttl_s``. Kept apart from ``lease.py`` (which knows no config) so that
the updater (``augment``) and the garbage collector (``gc``) both import it, not each other."""

from __future__ import annotations

from exfm.config import ExfmConfig
from exfm.das.lease import LeaseStore, PartitionFence, make_engine
from exfm.db import database_url


def lease_store(cfg: ExfmConfig) -> LeaseStore:
    """The configured lease store, its tables created if missing."""
    store = LeaseStore(make_engine(database_url(cfg, "exfm")), ttl_s=cfg.das.lease_ttl_s)
    store.create_tables()
    return store


_FENCES: dict[str, PartitionFence] = {}


def partition_fence(cfg: ExfmConfig) -> PartitionFence:
    """The writer fence of day partitions, on the lease store's database (one engine per URL)."""
    url = database_url(cfg, "exfm")
    fence = _FENCES.get(url)
    if fence is None:
        fence = _FENCES[url] = PartitionFence(make_engine(url))
        fence.create_tables()
    return fence
