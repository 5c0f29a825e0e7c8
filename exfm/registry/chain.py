"""Point-in-time lookups: which snapshot a day may use, fixed by its date (never "the latest").

- The FM trains on its own period (``fm.every_days``, :func:`fm_training_day`): on day d when
  the newest snapshot before d is at least ``every_days`` old, or when none exists (the chain's
  first day); the other days skip it.
- The FM of day d warm-starts from the newest snapshot before d (:func:`fm_warm_start`), found by
  its ``day`` tag: d-1's when the FM trains every day. It refuses, naming the day to run first,
  when the training day before d (the newest snapshot's day + ``every_days``) has no snapshot.
- DAS of day d infers with the newest FM snapshot trained on a day < d (:func:`das_fm_version`),
  whether the run is scheduled, backfilled, or cleared and re-run months later.
- A re-run of day d that registers a new version supersedes that day's older versions
  (:func:`supersede_day`: tag ``superseded_by``); every lookup skips superseded and archived
  versions, and "newest" means the newest *day* (then the highest version of that day).

A registry that cannot be reached raises :class:`~exfm.registry.mlflow_registry.RegistryError`
(the task retries, then fails); only "no FM before day d" is ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from exfm.config import ExfmConfig
from exfm.registry.mlflow_registry import (RegistryError, connect, fm_model_name,
                                           live_versions)

__all__ = ["ChainError", "FMTrainingDay", "fm_version_of_day", "fm_day_of", "fm_training_day",
           "fm_warm_start", "das_fm_version", "skipped_fm_versions", "supersede_day",
           "previous_day"]


class ChainError(RuntimeError):
    """Day d cannot run yet: the day it depends on has not run (the message names it)."""


def previous_day(day: str) -> str:
    return (date.fromisoformat(day) - timedelta(days=1)).isoformat()


def _plus(day: str, days: int) -> str:
    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()


@dataclass(frozen=True)
class FMTrainingDay:
    """Whether the FM trains on ``day``: ``trains``, the newest snapshot before the day
    (``newest``, trained on ``newest_day``; None on the chain's first day) and why."""

    day: str
    trains: bool
    newest: str | None
    newest_day: str | None
    reason: str

    def as_dict(self) -> dict:
        return {"day": self.day, "trains": self.trains, "newest": self.newest,
                "newest_day": self.newest_day, "reason": self.reason}


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


def fm_day_of(cfg: ExfmConfig, fm_version: str | None) -> str | None:
    """The training day of FM version ``fm_version`` (its ``day`` tag, whether the version is
    live, superseded or archived), None for no FM (None or "none")."""
    if fm_version in (None, "none"):
        return None
    return connect(cfg).get_model_version(fm_model_name(cfg), str(fm_version)).tags.get("day")


def skipped_fm_versions(cfg: ExfmConfig, day: str, served: str) -> list[dict]:
    """Why DAS of ``day`` served ``served`` and not something fresher: the live FM versions
    trained after ``served``'s day and before ``day``, oldest first, each as ``{"version", "day",
    "blessed", "reason"}`` (the blessing's tags; ``blessed`` "false" = refused). Empty when no FM
    trained in between (``fm.every_days``, or a day whose ``train_fm`` has not run)."""
    try:  # the served version itself may since have been superseded or archived
        served_day = fm_day_of(cfg, served)
    except Exception as e:  # noqa: BLE001 - MLflow raises its own and connection errors
        raise RegistryError(f"registry {cfg.tracking_uri}: cannot read {fm_model_name(cfg)} "
                            f"v{served}: {type(e).__name__}: {e}") from e
    if served_day is None:
        return []
    between = [v for v in _fm_versions(cfg) if served_day < (v.tags.get("day") or "9999") < day]
    return [{"version": str(v.version), "day": v.tags.get("day"),
             "blessed": v.tags.get("blessed"), "reason": v.tags.get("blessing.reason")}
            for v in sorted(between, key=lambda v: (v.tags.get("day"), int(v.version)))]


def _newest_before(cfg: ExfmConfig, day: str) -> tuple[str | None, str | None]:
    """(version, its day) of the newest live FM snapshot trained before ``day``, blessed or not
    (the chain and its period count every snapshot trained; blessing only decides what serves)."""
    before = [v for v in _fm_versions(cfg) if (v.tags.get("day") or "9999") < day]
    version = _best(before, cfg)
    if version is None:
        return None, None
    return version, next(v.tags.get("day") for v in before if str(v.version) == version)


def fm_training_day(cfg: ExfmConfig, day: str) -> FMTrainingDay:
    """Does the FM train on ``day``? Yes on the chain's first day (no snapshot before it) and
    when the newest snapshot before ``day`` is at least ``fm.every_days`` old; fixed by the
    registry's history before ``day``, so a re-run of the day decides the same.

    Example (``fm.every_days: 3``, snapshots of 01-01 only): 01-02 and 01-03 skip ("the newest
    snapshot, of 2026-01-01, is 1 day(s) old; next FM day 2026-01-04"), 01-04 trains."""
    every = cfg.fm.every_days
    newest, newest_day = _newest_before(cfg, day)
    if newest is None:
        return FMTrainingDay(day, True, None, None, f"no FM snapshot before {day}: the chain "
                             "starts here")
    age = (date.fromisoformat(day) - date.fromisoformat(newest_day)).days
    if age >= every:
        return FMTrainingDay(day, True, newest, newest_day,
                             f"the newest snapshot ({fm_model_name(cfg)} v{newest}, of "
                             f"{newest_day}) is {age} day(s) old >= fm.every_days {every}")
    return FMTrainingDay(day, False, newest, newest_day,
                         f"fm.every_days {every}: the newest snapshot ({fm_model_name(cfg)} "
                         f"v{newest}, of {newest_day}) is {age} day(s) old; next FM day "
                         f"{_plus(newest_day, every)}; DAS keeps serving v{newest}")


def fm_warm_start(cfg: ExfmConfig, day: str) -> str | None:
    """The FM version day ``day`` warm-starts from: the newest snapshot before ``day`` (day d-1's
    when ``fm.every_days`` is 1). None on the chain's first day (no FM trained before ``day`` at
    all). Raises :class:`ChainError` naming the day to run first when the FM's training day
    before ``day`` (the newest snapshot's day + ``fm.every_days``) has no snapshot."""
    newest, newest_day = _newest_before(cfg, day)
    if newest is None:
        return None
    due = _plus(newest_day, cfg.fm.every_days)  # the FM's first training day after newest_day
    if due < day:
        raise ChainError(f"FM of {day} warm-starts from the FM of {due} (fm.every_days "
                         f"{cfg.fm.every_days}), which is not in the registry (newest before "
                         f"{day}: {fm_model_name(cfg)} v{newest} of {newest_day}); run {due} first")
    return newest


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
