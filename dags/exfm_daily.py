"""exfm_daily: one day of ExFM, external distillation from one FM to many VMs.

    wait_for_data ──> land ──> gate_raw ──> bless_fm ──> augment (DAS: FM of a day < d)
                                  │   ──> gate_augmented ──> vm_names ──> train_vm[vm] (mapped)
                                  │   ──> promote (each VM's challenger vs @champion) ──> report
                                  └────> train_fm (Ray Train, warm-started from FM of d-1)

gate_raw / gate_augmented are the data gates (docs/validation.md): a failed gate fails its task
with the failed rules and the Data Docs link, and nothing downstream runs. bless_fm judges the
newest FM before DAS uses it; promote moves a VM's @champion alias when its challenger passes
(docs/oncall.md); report logs the day's MLflow run ``report/<day>`` in ``exfm-pipeline`` with
the gates' Data Docs links. Every task's failure alerts on-call (``ExfmFailureNotifier``).

A day's inputs are fixed by its date: the day is the run's data interval start (a scheduled,
triggered, backfilled or cleared run of day d reads and writes the partitions of d), the FM of d
warm-starts from the FM of d-1, DAS of d infers with the newest FM trained before d.

Days run one at a time in date order, whatever a backfill's --max-active-runs: every task
depends_on_past, and `land` of day d also waits for day d-1's `train_fm` and `augment`
(wait_for_downstream: both also take land's result directly), so day d starts once d-1's FM snapshot
is registered. train_fm stays off the VMs' critical path within a day, in the one-slot pool
`exfm_fm_chain`; it trains when the newest FM snapshot is `fm.every_days` old and is skipped, with
the reason, on the other days. The Ray-bound tasks (augment, train_vm) share the pool `exfm_ray`,
one slot per Ray CPU their job asks for, so a wide VM fan-out queues in Airflow instead of flooding
Ray (pools created by `exfm stack up`). A day without data waits (`wait_for_data`, reschedule
mode: no worker slot held) up to schedule.data_wait_s, then fails once. A gate that refuses its day
fails at once (no retry: the data will not change); an outage retries.

On call: every task's failure alerts (`ExfmFailureNotifier`, beside this file); the daily run has a
DeadlineAlert (`deadline.*`). Each committed partition and registered snapshot is an asset event
with {day, uri, rows, digest, mlflow_run_id} (`exfm_raw`, `exfm_augmented`, `exfm_fm`, `exfm_vm`).

Heavy work runs as Ray jobs with deterministic submission ids (a retry re-attaches). XCom
carries ids and URIs only. The config comes from $EXFM_CONFIG (set by `exfm stack up`); the
calendar, pools, deadline and asset names from $EXFM_SCHEDULE (written by `exfm stack up`:
exfm.config.schedule.dag_settings). Parsing imports no exfm module but the stdlib-only
exfm.oncall, named by the deadline's callback.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pendulum
from airflow.sdk import (Asset, AssetAlias, AsyncCallback, DeadlineAlert, DeadlineReference, dag,
                         get_current_context, task)
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from exfm_notify import ExfmFailureNotifier  # beside this file: the DAGs folder is on sys.path

SCHEDULE = {"start_date": "2026-01-01", "end_date": None, "data_wait_s": 3600, "poke_s": 60,
            "pools": None, "deadline": None, "assets": {},
            **json.loads(os.environ.get("EXFM_SCHEDULE") or "{}")}
POOLS = SCHEDULE["pools"] or {}  # none: every task in default_pool (a stack without exfm's pools)
# Assets by name (an s3:// URI would load the Amazon provider's normalizer, boto3, at every
# parse); where each lives is their static extra, each event's extra has the day's own URI.
_BUCKET = SCHEDULE["assets"].get("bucket", "exfm")
RAW = Asset(name="exfm_raw", extra={"location": f"s3://{_BUCKET}/raw"})
AUGMENTED = Asset(name="exfm_augmented", extra={"location": f"s3://{_BUCKET}/augmented"})
AUGMENTED_DAYS = AssetAlias(name="exfm_augmented_days")  # an event only when DAS committed a day
FM = Asset(name="exfm_fm", extra={
    "location": f"models:/{SCHEDULE['assets'].get('fm_model', 'exfm-fm')}"})
VM = Asset(name="exfm_vm", extra={"location": "models:/exfm-vm-<vm>"})

DEFAULT_ARGS = {
    "owner": "exfm",
    "depends_on_past": True,  # day d's task waits for day d-1's: days run in date order
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(hours=2),
    "on_failure_callback": ExfmFailureNotifier(),  # one alert per failed try (docs/oncall.md)
}


def _date(s: str | None):
    return pendulum.parse(s, tz="UTC") if s else None


def _deadline():
    """The daily run's DeadlineAlert (``deadline.*``): the on-call alert from the triggerer."""
    d = SCHEDULE["deadline"]
    if not d:
        return None
    ref = (DeadlineReference.DAGRUN_LOGICAL_DATE if d.get("reference") == "logical_date"
           else DeadlineReference.DAGRUN_QUEUED_AT)
    return DeadlineAlert(reference=ref, interval=timedelta(minutes=d["minutes"]),
                         callback=AsyncCallback("exfm.oncall.deadline_missed", kwargs={
                             "dag_id": "exfm_daily", "minutes": d["minutes"],
                             "reference": d.get("reference", "queued_at")}))


def _ray(task_id: str) -> dict:
    """Pool arguments of a Ray-bound task: ``exfm_ray``, one slot per Ray CPU its job asks for."""
    if not POOLS:
        return {}
    return {"pool": POOLS["ray"], "pool_slots": POOLS["slots"][task_id]}


def _day() -> str:
    """The day this run processes: its logical date (else its data interval's start, else
    run_after). Scheduled and backfilled runs have the two equal; a run triggered with
    ``--logical-date D`` gets the data interval of the trigger's wall-clock time from Airflow 3,
    so only the logical date names D."""
    ctx = get_current_context()
    when = (ctx.get("logical_date") or ctx.get("data_interval_start")
            or ctx["dag_run"].run_after)
    return when.strftime("%Y-%m-%d")


def _submission_id(step: str, suffix: str | None = None) -> str:
    """The Ray job id of this task's step: the same for every try of one run of the day (a retry
    re-attaches to its job, or takes its result if it succeeded), a new one each time the day is
    cleared (``airflow tasks clear`` bumps the run's ``clear_number``), so a cleared day runs its
    jobs again instead of returning the results of the run it replaces."""
    ctx = get_current_context()
    ti = ctx["ti"]
    from exfm.pipeline import safe_submission_id

    run = ctx["dag_run"]
    cleared = getattr(run, "clear_number", 0) or 0
    return safe_submission_id("exfm", ti.dag_id, run.run_id, f"c{cleared}" if cleared else None,
                              step, suffix)


def _cfg():
    from exfm.pipeline import pipeline_config

    return pipeline_config()


def _gate(run):
    """Run a data gate; a refusal fails the task without retries (the data will not change)."""
    from exfm.pipeline import GateFailed

    try:
        return run()
    except GateFailed as e:
        raise AirflowFailException(str(e)) from e


def _emit(asset, extra: dict) -> None:
    """The asset event of what this task produced, with ``extra`` (exfm.pipeline.asset_extra)."""
    get_current_context()["outlet_events"][asset].extra = extra


@dag(
    dag_id="exfm_daily",
    schedule="@daily",
    start_date=_date(SCHEDULE["start_date"]),
    end_date=_date(SCHEDULE["end_date"]),
    catchup=False,
    max_active_runs=1,  # a backfill's own --max-active-runs may exceed it: depends_on_past holds
    default_args=DEFAULT_ARGS,
    deadline=_deadline(),
    tags=["exfm"],
    doc_md=__doc__,
)
def exfm_daily():
    @task.sensor(poke_interval=SCHEDULE["poke_s"], timeout=SCHEDULE["data_wait_s"],
                 mode="reschedule", retries=0)
    def wait_for_data() -> bool:
        """True once day d's data can be landed; fails once after schedule.data_wait_s."""
        from exfm.pipeline import day_has_data

        return day_has_data(_cfg(), _day())

    @task(wait_for_downstream=True, outlets=[RAW])
    def land() -> dict:
        """Validate the day's rows and commit raw/day=d (after d-1's FM and DAS are done). A
        format violation fails the task without retries, as a refused gate does: a retry would
        read the same file (fix the data, then clear the day)."""
        from exfm.pipeline import DatasetError, asset_extra, land as land_day

        cfg = _cfg()
        try:
            out = land_day(cfg, _day())
        except DatasetError as e:
            raise AirflowFailException(str(e)) from e
        _emit(RAW, asset_extra(cfg, "land", out))
        return out

    @task
    def gate_raw(landed: dict) -> dict:
        """The raw data gate on raw/day=d: fails with the failed rules and the Data Docs link."""
        from exfm.pipeline import gate_raw as gate

        return _gate(lambda: gate(_cfg(), landed["day"]))

    @task
    def bless_fm(raw_ok: dict) -> dict:
        """Judge the newest FM trained before d on day d's rows before DAS uses it."""
        from exfm.pipeline import bless_fm as bless

        return bless(_cfg(), raw_ok["day"])

    @task(outlets=[FM], pool=POOLS.get("fm", "default_pool"))
    def train_fm(landed: dict) -> dict:
        """Train the FM one pass on raw/day=d, warm-started from the newest FM before d; register
        exfm-fm vN. Skipped (with the reason) on a day that is not an FM day (fm.every_days)."""
        from exfm.pipeline import asset_extra, train_fm as train

        cfg = _cfg()
        out = train(cfg, landed["day"], submission_id=_submission_id("train_fm"))
        if out.get("skipped"):
            raise AirflowSkipException(f"FM not trained on {landed['day']}: {out['reason']}")
        _emit(FM, asset_extra(cfg, "train_fm", out, data_digest=landed.get("digest")))
        return out

    @task(outlets=[AUGMENTED_DAYS], **_ray("augment"))
    def augment(landed: dict) -> dict:
        """DAS: infer the newest FM trained before d on raw/day=d into augmented/day=d."""
        from exfm.pipeline import asset_extra, augment as das

        cfg = _cfg()
        out = das(cfg, landed["day"], submission_id=_submission_id("augment"))
        if not out.get("skipped") and out.get("status", "committed") == "committed":
            get_current_context()["outlet_events"][AUGMENTED_DAYS].add(
                AUGMENTED, extra=asset_extra(cfg, "augment", out))
        return out

    @task(inlets=[AUGMENTED])
    def gate_augmented(augmented: dict) -> dict:
        """The augmented data gate on augmented/day=d (skipped when DAS was: no FM before d)."""
        from exfm.pipeline import gate_augmented as gate

        return _gate(lambda: gate(_cfg(), augmented["day"], augmented=augmented))

    @task
    def vm_names(augmented_ok: dict) -> list[str]:
        """The configured VMs: one mapped training task each."""
        return [v.name for v in _cfg().vms]

    @task(map_index_template="{{ vm }}", max_active_tis_per_dagrun=2, outlets=[VM],
          **_ray("train_vm"))
    def train_vm(vm: str) -> dict:
        """Score the VM on day d with yesterday's snapshot, train it one pass, register it."""
        from exfm.pipeline import asset_extra, train_vm as train

        ctx = get_current_context()
        ctx["vm"] = vm
        cfg = _cfg()
        out = train(cfg, _day(), vm, submission_id=_submission_id("train_vm", vm))
        _emit(VM, asset_extra(cfg, "train_vm", out, day=_day()))
        return out

    @task
    def promote() -> dict:
        """The promotion gate: each VM's challenger against @champion on day d's slice."""
        from exfm.pipeline import promote as gate_day

        return gate_day(_cfg(), _day())

    @task
    def report(raw_ok: dict, augmented_ok: dict) -> dict:
        """Log the day report run report/<day> (with the gates' Data Docs links)."""
        from exfm.pipeline import docs_links, report as day_report

        return day_report(_cfg(), _day(), docs_links(raw_ok, augmented_ok))

    landed = wait_for_data() >> land()
    raw_ok = gate_raw(landed)
    raw_ok >> train_fm(landed)  # land feeds train_fm and augment directly: wait_for_downstream
    blessed = bless_fm(raw_ok)
    augmented = augment(landed)
    blessed >> augmented
    augmented_ok = gate_augmented(augmented)
    vms = train_vm.expand(vm=vm_names(augmented_ok))
    vms >> promote() >> report(raw_ok, augmented_ok)


exfm_daily()
