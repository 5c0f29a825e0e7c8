"""exfm_daily: one day of ExFM, external distillation from one FM to many VMs.

    land ──> augment (DAS: FM_{d-1} -> augmented/day=d) ──> vm_names ──> train_vm[vm] (mapped)
      └────> train_fm (Ray Train, one pass over raw/day=d -> exfm-fm vN)

Every task reads and writes the partition of its own logical date (never "the latest"), so
retries and backfills are idempotent; heavy work runs as Ray jobs with deterministic submission
ids (a retry re-attaches). XCom carries ids and URIs only. The config comes from $EXFM_CONFIG
(set by `exfm stack up`), the day from the run's logical date (or its run_after for a manual run
without one).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, get_current_context, task

DEFAULT_ARGS = {
    "owner": "exfm",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(hours=2),
}


def _day() -> str:
    ctx = get_current_context()
    when = ctx.get("logical_date") or ctx["dag_run"].run_after
    return when.strftime("%Y-%m-%d")


def _submission_id(step: str, suffix: str | None = None) -> str:
    ctx = get_current_context()
    ti = ctx["ti"]
    from exfm.pipeline import safe_submission_id

    return safe_submission_id("exfm", ti.dag_id, ctx["dag_run"].run_id, step, suffix)


def _cfg():
    from exfm.pipeline import pipeline_config

    return pipeline_config()


@dag(
    dag_id="exfm_daily",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # a day needs the previous day's snapshots
    default_args=DEFAULT_ARGS,
    tags=["exfm"],
    doc_md=__doc__,
)
def exfm_daily():
    @task
    def land() -> dict:
        """Validate the day's rows and commit raw/day=d."""
        from exfm.pipeline import land as land_day

        return land_day(_cfg(), _day())

    @task
    def train_fm(landed: dict) -> dict:
        """Train the FM one pass on raw/day=d on the Ray cluster; register exfm-fm vN."""
        from exfm.pipeline import train_fm as train

        return train(_cfg(), landed["day"], submission_id=_submission_id("train_fm"))

    @task
    def augment(landed: dict) -> dict:
        """DAS: infer the leased FM (trained before d) on raw/day=d into augmented/day=d."""
        from exfm.pipeline import augment as das

        return das(_cfg(), landed["day"], submission_id=_submission_id("augment"))

    @task
    def vm_names(augmented: dict) -> list[str]:
        """The configured VMs: one mapped training task each."""
        return [v.name for v in _cfg().vms]

    @task(map_index_template="{{ vm }}", max_active_tis_per_dagrun=2)
    def train_vm(vm: str) -> dict:
        """Score the VM on day d with yesterday's snapshot, train it one pass, register it."""
        from exfm.pipeline import train_vm as train

        ctx = get_current_context()
        ctx["vm"] = vm
        return train(_cfg(), _day(), vm, submission_id=_submission_id("train_vm", vm))

    landed = land()
    train_fm(landed)
    train_vm.expand(vm=vm_names(augment(landed)))


exfm_daily()
