"""Garbage collection of FM snapshots whose lease expired and that no DAS worker serves.

The lease store says which versions are collectable (expired, not the leased one, beyond the
newest ``cfg.das.keep_last``); the registry archives them (tag ``archived=true``, artifacts
deleted; the version and its lineage tags stay browsable).
"""

from __future__ import annotations

from typing import Callable

from exfm.config import ExfmConfig
from exfm.registry.mlflow_registry import FM_MODEL, archive_version


def collect_snapshots(cfg: ExfmConfig, fm_name: str = FM_MODEL, now: float | None = None,
                      log: Callable[[str], None] = print) -> list[str]:
    """Archive every collectable version of ``fm_name``; returns the versions collected."""
    from exfm.das.augment import lease_store

    store = lease_store(cfg)
    done = []
    for version in store.collectable(fm_name, keep_last=cfg.das.keep_last, now=now):
        archive_version(cfg, fm_name, version)
        store.mark_collected(fm_name, version)
        log(f"DAS gc: {fm_name} v{version}: lease expired and not served; archived")
        done.append(version)
    return done
