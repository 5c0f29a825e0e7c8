"""When the daily DAG runs and what it may hold at once (``schedule`` and ``fm`` in ``params.yaml``):
its first and last day, how long a day without data is waited for, the Airflow pools that keep
a wide fan-out from flooding Ray, and how often the FM trains.

:func:`dag_settings` is what the DAG file reads when it is parsed (``$EXFM_SCHEDULE``, written by
``exfm stack up``: the DAG file imports no exfm module); :func:`pools` is what ``stack up``
creates in Airflow (``airflow pools import``).
"""

from __future__ import annotations

import math

from pydantic import Field, field_validator

from exfm.config.base import StrictModel

DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
# the Airflow pools of exfm_daily (created by `exfm stack up`)
RAY_POOL = "exfm_ray"
FM_CHAIN_POOL = "exfm_fm_chain"


class ScheduleConfig(StrictModel):
    """``exfm_daily``'s calendar. ``start_date: null`` = the data's first day (the first day folder
    under ``data.dir``, else ``data.generator.start_date``); ``end_date: null`` = open-ended, except
    for generated data (its last generated day), so unpausing never schedules days without data."""

    start_date: str | None = Field(None, pattern=DATE_PATTERN,
                                   description="the DAG's first logical day (YYYY-MM-DD)")
    end_date: str | None = Field(None, pattern=DATE_PATTERN,
                                 description="the DAG's last logical day (YYYY-MM-DD)")
    data_wait_s: int = Field(
        3600, ge=0, description="a day whose data has not arrived is waited for this long "
        "(sensor in reschedule mode: no worker slot held), then fails once")
    poke_s: int = Field(60, ge=5, description="seconds between two looks for a day's data")
    ray_pool_slots: int | None = Field(
        None, ge=1, description="slots of the Airflow pool exfm_ray that the Ray-bound tasks "
        "(augment, train_vm) share, one slot per Ray CPU a task's job asks for; null = the CPUs "
        "the embedded Ray head advertises (ray.head_num_cpus, else the machine's cores). Set it "
        "to the cluster's CPUs for a remote Ray (ray.address)")

    @field_validator("start_date", "end_date", mode="before")
    @classmethod
    def _date_to_str(cls, v):
        return v.isoformat() if hasattr(v, "isoformat") else v


class FMConfig(StrictModel):
    """The FM's own period: it need not train every day."""

    every_days: int = Field(
        1, ge=1, description="the FM trains on a day when its newest snapshot is at least this "
        "many days old (the chain's first day always trains); on the other days train_fm is "
        "skipped with the reason, the DAS keeps the newest snapshot before the day and the "
        "freshness gap shows its age")


def pools(cfg, ray_cpus: int) -> dict[str, dict]:
    """``cfg``: an :class:`~exfm.config.ExfmConfig`. The pools of ``exfm_daily`` as ``airflow pools import`` reads them: ``exfm_ray`` sized from
    the Ray cluster (``schedule.ray_pool_slots``, else ``ray_cpus``), ``exfm_fm_chain`` with one
    slot (one FM training at a time, whatever a backfill's ``--max-active-runs``)."""
    slots = cfg.schedule.ray_pool_slots or max(1, int(ray_cpus))
    return {
        RAY_POOL: {"slots": slots, "include_deferred": False,
                   "description": f"exfm: Ray-bound tasks (augment, train_vm), one slot per Ray "
                                  f"CPU their job asks for ({slots} CPUs)"},
        FM_CHAIN_POOL: {"slots": 1, "include_deferred": False,
                        "description": "exfm: the FM chain (train_fm), one day at a time"},
    }


def dag_settings(cfg, start: str, end: str | None, ray_cpus: int) -> dict:
    """``cfg``: an :class:`~exfm.config.ExfmConfig`. ``$EXFM_SCHEDULE``: what ``dags/exfm_daily.py`` reads at parse time (calendar, pools and
    each Ray-bound task's slots, the deadline, the asset URIs)."""
    pool = pools(cfg, ray_cpus)
    ray_slots = pool[RAY_POOL]["slots"]
    per_vm = math.ceil(cfg.ray.cpus_per_worker)  # a VM job is one Ray task of one worker's CPUs
    return {
        "start_date": start, "end_date": end,
        "data_wait_s": cfg.schedule.data_wait_s, "poke_s": cfg.schedule.poke_s,
        "pools": {"ray": RAY_POOL, "fm": FM_CHAIN_POOL,
                  # a task asking for more slots than its pool has would never run
                  "slots": {"augment": min(cfg.das.max_actors, ray_slots),
                            "train_vm": min(per_vm, ray_slots)}},
        "deadline": ({"minutes": cfg.deadline.minutes, "reference": cfg.deadline.reference}
                     if cfg.deadline.enabled else None),
        "assets": {"bucket": cfg.storage.bucket, "fm_model": cfg.das.fm_model},
    }
