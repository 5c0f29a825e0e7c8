"""The lease store of a config: :class:`~exfm.das.lease.LeaseStore` on ``database_url(cfg,
"exfm")`` with ``das.lease_ttl_s``. Kept apart from ``lease.py`` (which knows no config) so that
the updater (``augment``) and the garbage collector (``gc``) both import it, not each other."""

from __future__ import annotations

from exfm.config import ExfmConfig
from exfm.das.lease import LeaseStore, make_engine
from exfm.db import database_url


def lease_store(cfg: ExfmConfig) -> LeaseStore:
    """The configured lease store, its tables created if missing."""
    store = LeaseStore(make_engine(database_url(cfg, "exfm")), ttl_s=cfg.das.lease_ttl_s)
    store.create_tables()
    return store
