"""Garbage collection of FM snapshots whose lease expired and that no DAS worker serves.

The lease store says which versions are collectable (expired, not the leased one, beyond the
newest ``cfg.das.keep_last``); the registry archives them (tag ``archived=true``, artifacts
deleted; the version and its lineage tags stay browsable).
"""

from __future__ import annotations

from typing import Callable

from exfm.config import ExfmConfig
from exfm.das.store import lease_store
from exfm.registry.mlflow_registry import archive_version, fm_model_name


def collect_snapshots(cfg: ExfmConfig, now: float | None = None,
                      log: Callable[[str], None] = print) -> list[str]:
    """Archive every collectable version of the FM (``cfg.das.fm_model``); returns them."""
    store = lease_store(cfg)
    fm_name = fm_model_name(cfg)
    done = []
    for version in store.collectable(fm_name, keep_last=cfg.das.keep_last, now=now):
        archive_version(cfg, fm_name, version)
        store.mark_collected(fm_name, version)
        log(f"DAS gc: {fm_name} v{version}: lease expired and not served; archived")
        done.append(version)
    return done
