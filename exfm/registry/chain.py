"""Point-in-time lookups: which snapshot a day may use, fixed by its date (never "the latest").

- The FM of day d warm-starts from the FM snapshot of day d-1 (:func:`fm_warm_start`), found by
  its ``day`` tag; it refuses, naming the day to run first, when d-1's snapshot is missing and
  d is not the first day of the FM chain.
- DAS of day d infers with the newest FM snapshot trained on a day < d (:func:`das_fm_version`),
  whether the run is scheduled, backfilled, or cleared and re-run months later.
- A re-run of day d that registers a new version supersedes that day's older versions
  (:func:`supersede_day`: tag ``superseded_by``); every lookup skips superseded and archived
  versions, and "newest" means the newest *day* (then the highest version of that day).

A registry that cannot be reached raises :class:`~exfm.registry.mlflow_registry.RegistryError`
(the task retries, then fails); only "no FM before day d" is ``None``.
"""

from __future__ import annotations

from datetime import date, timedelta

from exfm.config import ExfmConfig
from exfm.registry.mlflow_registry import (RegistryError, connect, fm_model_name,
                                           live_versions)

__all__ = ["ChainError", "fm_version_of_day", "fm_warm_start", "das_fm_version", "supersede_day",
           "previous_day"]


class ChainError(RuntimeError):
    """Day d cannot run yet: the day it depends on has not run (the message names it)."""


def previous_day(day: str) -> str:
    return (date.fromisoformat(day) - timedelta(days=1)).isoformat()


def _best(versions, cfg: ExfmConfig | None = None) -> str | None:
    """The newest (day, then version) of ``versions``; ChainError if it was garbage-collected
    (a day's inputs cannot be reproduced without it: never fall back to an older snapshot)."""
    if not versions:
        return None
    v = max(versions, key=lambda v: ((v.tags.get("day") or ""), int(v.version)))
    if v.tags.get("archived") == "true":
        raise ChainError(f"{fm_model_name(cfg) if cfg else 'FM'} v{v.version} (day "
                         f"{v.tags.get('day')}) was garbage-collected (das.keep_last, "
                         "das.lease_ttl_s): its artifacts are gone, so this day's inputs cannot "
                         "be reproduced")
    return str(v.version)


def _fm_versions(cfg: ExfmConfig) -> list:
    """The FM's versions, superseded ones left out, archived ones kept (so that a collected
    snapshot is an error, never a silent fall-back to an older one)."""
    return live_versions(cfg, fm_model_name(cfg), include_archived=True)


def fm_version_of_day(cfg: ExfmConfig, day: str) -> str | None:
    """The live FM version trained on ``day`` (highest if several), or None."""
    return _best([v for v in _fm_versions(cfg) if v.tags.get("day") == day], cfg)


def das_fm_version(cfg: ExfmConfig, day: str, blessed_only: bool = True,
                   skip: str | None = None) -> str | None:
    """The newest live FM version trained on a day < ``day``: what DAS of ``day`` infers with.
    ``blessed_only``: leave out versions FM blessing refused (tag ``blessed=false``,
    :mod:`exfm.das.blessing`); ``skip``: a version left out (the one being judged)."""
    return _best([v for v in _fm_versions(cfg)
                  if (v.tags.get("day") or "9999") < day and str(v.version) != skip
                  and not (blessed_only and v.tags.get("blessed") == "false")], cfg)


def fm_warm_start(cfg: ExfmConfig, day: str) -> str | None:
    """The FM version day ``day`` warm-starts from: day d-1's. None on the chain's first day
    (no FM trained before ``day`` at all). Raises :class:`ChainError` naming the day to run
    first when an older FM exists but d-1's does not."""
    prev = previous_day(day)
    own = fm_version_of_day(cfg, prev)
    if own is not None:
        return own
    older = das_fm_version(cfg, day, blessed_only=False)
    if older is not None:
        raise ChainError(f"FM of {day} warm-starts from the FM of {prev}, which is not in the "
                         f"registry (newest before {day}: {fm_model_name(cfg)} v{older}); "
                         f"run {prev} first")
    return None


def supersede_day(cfg: ExfmConfig, name: str, day: str, keep: str) -> list[str]:
    """Tag every other live version of ``name`` trained on ``day`` ``superseded_by=keep``
    (lookups skip them); returns the versions tagged."""
    client = connect(cfg)
    done = []
    for v in live_versions(cfg, name):
        if v.tags.get("day") == day and str(v.version) != str(keep):
            try:
                client.set_model_version_tag(name, str(v.version), "superseded_by", str(keep))
            except Exception as e:  # noqa: BLE001
                raise RegistryError(f"registry {cfg.tracking_uri}: cannot tag {name} "
                                    f"v{v.version} superseded_by={keep}: {e}") from e
            done.append(str(v.version))
    return done
