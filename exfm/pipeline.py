"""One day of the pipeline as plain functions: what the Airflow tasks and ``exfm run-day`` call.

Each step reads and writes the partition of its own day (never "the latest"), is idempotent for
that day, and returns a small dict (ids, URIs, counts) fit for XCom. Heavy work runs as Ray jobs
submitted through the Jobs API; this module only wires config, storage and submission.

    land(d) -> gate_raw(d) -> train_fm(d) (Ray Train)
                           -> bless_fm(d) -> augment(d) (DAS, FM_{d-1}) -> gate_augmented(d)
                           -> train_vm(d, vm) for each VM (fan-out) -> promote(d) -> report(d)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import yaml

from exfm.compute.submit import safe_submission_id
from exfm.config import ExfmConfig, load_config
from exfm.data.schema import DatasetError  # what land raises on a format violation (re-exported)
from exfm.validation.result import GateFailed  # what a refusing gate raises (cheap to import)

__all__ = ["pipeline_config", "write_resolved_config", "data_dir", "land", "gate_raw", "bless_fm",
           "train_fm", "augment", "gate_augmented", "train_vm", "promote", "report", "run_day",
           "safe_submission_id", "step_submission_id", "schedule_window", "day_has_data",
           "docs_links", "DAY_FORMAT",
           "GateFailed", "asset_extra"]
DAY_FORMAT = "%Y-%m-%d"

log_ = logging.getLogger("exfm.pipeline")
RESOLVED_CONFIG = "params.resolved.yaml"


def pipeline_config(path: str | None = None, overrides: tuple[str, ...] = ()) -> ExfmConfig:
    """The config a task uses: an explicit path, else $EXFM_CONFIG, else ./params.yaml."""
    return load_config(path, overrides)


def write_resolved_config(cfg: ExfmConfig) -> Path:
    """Dump ``cfg`` (no secrets: those travel in env vars) for Ray jobs to load by path."""
    path = cfg.state_path / RESOLVED_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    data = cfg.dump_for_children(exclude={"storage": {"access_key", "secret_key"},
                                          "database": {"url"}})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def data_dir(cfg: ExfmConfig) -> Path:
    """The local bring-your-own-format folder days are landed from; created on first use for
    the built-in sources (generator, MovieLens)."""
    d = Path(cfg.data.dir)
    if (d / "schema.yaml").exists():
        return d
    if cfg.data.source == "generate":
        from exfm.data.generator import generate

        generate(cfg.data.generator, d)
    elif cfg.data.source == "movielens":
        from exfm.data.movielens import write_movielens

        write_movielens(d)
    else:
        raise FileNotFoundError(f"data.dir {d}: no schema.yaml (data.source: dir expects a folder "
                                "in the bring-your-own format, see DESIGN.md)")
    return d


def schedule_window(cfg: ExfmConfig) -> tuple[str, str | None]:
    """``(start_date, end_date)`` of the daily DAG: ``schedule.*`` if set, else the data's days
    (the first day folder under ``data.dir``, else ``data.generator.start_date``; the end only for
    the built-in sources, whose days are all known: the last generated day, MovieLens' last
    split; a ``dir`` source is open-ended, its days keep landing). Never generates data (the DAG
    file calls this when it is parsed)."""
    from datetime import date, timedelta

    from exfm.data.schema import list_days

    sch = cfg.schedule
    d = Path(cfg.data.dir)
    days = list_days(d) if d.is_dir() else []
    gen = cfg.data.generator
    start = sch.start_date or (days[0] if days else gen.start_date)
    end = sch.end_date
    if end is None and cfg.data.source == "generate":
        end = (date.fromisoformat(gen.start_date) + timedelta(days=gen.days - 1)).isoformat()
    elif end is None and cfg.data.source == "movielens" and days:
        end = days[-1]
    if end is not None and end < start:
        raise ValueError(f"schedule: end_date {end} is before start_date {start}")
    return start, end


def day_has_data(cfg: ExfmConfig, day: str) -> bool:
    """Whether day ``day`` can be landed: its folder under ``data.dir`` exists (built-in sources are
    generated on first use), or ``raw/day=d`` is already committed."""
    from exfm.data.schema import day_dir
    from exfm.storage.layout import RAW
    from exfm.storage.partitions import PartitionStore

    if day_dir(data_dir(cfg), day).is_dir():
        return True
    return PartitionStore(cfg, RAW).manifest(day) is not None


def land(cfg: ExfmConfig, day: str, log: Callable[[str], None] = print) -> dict:
    """Validate day ``day`` of the local dataset and commit it to ``raw/day=day``."""
    from exfm.storage.layout import RAW
    from exfm.storage.partitions import PartitionStore, ingest_dataset
    from exfm.storage.s3 import ensure_bucket

    ensure_bucket(cfg)
    [m] = ingest_dataset(cfg, data_dir(cfg), [day], progress=log)
    return {"day": day, "rows": m.rows, "uri": PartitionStore(cfg, RAW).uri(day), "digest": m.digest}


def gate_raw(cfg: ExfmConfig, day: str, log: Callable[[str], None] = print) -> dict:
    """The raw data gate on ``raw/day=day``; raises :class:`~exfm.validation.GateFailed` (its
    reason names each failed rule and the Data Docs link) when it fails."""
    from exfm.validation import gate_raw as gate

    return json_safe(gate(cfg, day, log=log).raise_if_failed().as_dict())


def gate_augmented(cfg: ExfmConfig, day: str, log: Callable[[str], None] = print,
                   augmented: dict | None = None) -> dict:
    """The augmented data gate on ``augmented/day=day``; skipped when DAS was (no FM before
    ``day``: ``augmented`` is :func:`augment`'s result); raises ``GateFailed`` when it fails."""
    from exfm.validation import gate_augmented as gate

    if augmented is not None and augmented.get("skipped"):
        log(f"augmented gate {day}: skipped (DAS skipped: no FM trained before {day})")
        return {"gate": "augmented", "day": day, "ok": True, "skipped": True, "docs_url": None}
    return json_safe(gate(cfg, day, log=log).raise_if_failed().as_dict())


def bless_fm(cfg: ExfmConfig, day: str, log: Callable[[str], None] = print) -> dict:
    """Judge the newest FM trained before ``day`` on the day's rows (:mod:`exfm.das.blessing`)."""
    from exfm.das.blessing import bless_fm as bless

    return json_safe(bless(cfg, day, log=log).as_dict())


def promote(cfg: ExfmConfig, day: str, log: Callable[[str], None] = print) -> dict:
    """The promotion gate on each VM's challenger of ``day`` (:func:`.promotion.gate.gate_day`)."""
    from exfm.promotion.gate import gate_day

    return json_safe(gate_day(cfg, day, log=log))


def report(cfg: ExfmConfig, day: str, links: dict[str, str] | None = None,
           log: Callable[[str], None] = print) -> dict:
    """Log the day report run (``exfm-pipeline``, ``report/<day>``): ``{run_id, url, headline}``."""
    from exfm.report.day_report import log_day_report

    r = log_day_report(cfg, day, links={k: v for k, v in (links or {}).items() if v}, log=log)
    return {"run_id": r.run_id, "url": r.url, "headline": r.headline}


def asset_extra(cfg: ExfmConfig, step: str, result: dict, day: str | None = None,
                data_digest: str | None = None) -> dict:
    """The extra of the asset event for what ``step`` produced (``land``, ``augment``: a
    partition; ``train_fm``, ``train_vm``: a snapshot): ``{day, uri, rows, digest,
    mlflow_run_id, ...}`` (:mod:`exfm.report.assets`)."""
    from exfm.report import assets

    if step == "land":
        return assets.partition_event(result)
    if step == "augment":
        return assets.partition_event(result, assets.das_run_id(cfg, result["day"]))
    if step == "train_fm":
        return assets.fm_snapshot_event(cfg, result, data_digest)
    if step == "train_vm":
        return assets.vm_snapshot_event(cfg, day or result["day"], result)
    raise ValueError(f"asset_extra: no asset event for step {step!r}")


def docs_links(*gates: dict | None) -> dict[str, str]:
    """``{"<gate> gate": docs_url}`` of the gate results that have a Data Docs page."""
    return {f"{g['gate']} gate": g["docs_url"] for g in gates if g and g.get("docs_url")}


def _job(cfg: ExfmConfig, module: str, day: str, submission_id: str, extra: list[str] = (),
         log: Callable[[str], None] = print) -> dict:
    from exfm.compute.submit import submit_and_wait

    argv = ["-m", f"ray_jobs.{module}", "--day", day, "--config", str(write_resolved_config(cfg)),
            *extra]
    return json_safe(submit_and_wait(cfg, argv, submission_id=submission_id, log=log))


def json_safe(value):
    """``value`` with NaN/inf floats as None: XCom goes through Airflow's JSON API, which refuses
    them (e.g. an AUC undefined on a slice with one class)."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def train_fm(cfg: ExfmConfig, day: str, submission_id: str | None = None,
             log: Callable[[str], None] = print) -> dict:
    """Train the FM one pass on ``raw/day=day`` on Ray Train (:mod:`exfm.jobs.fm_day`); registers
    a new version of the FM's registered model (``das.fm_model``, default ``exfm-fm``). On a day
    that is not an FM day (``fm.every_days``) nothing trains: ``{"skipped": True, "reason"}``."""
    from exfm.registry.chain import fm_training_day, fm_warm_start
    from exfm.registry.mlflow_registry import ensure_experiments

    when = fm_training_day(cfg, day)
    if not when.trains:
        log(f"FM {day}: not trained today: {when.reason}")
        return {"day": day, "skipped": True, "reason": when.reason, "fm_version": when.newest}
    warm = fm_warm_start(cfg, day)  # ChainError naming the day to run first, before submitting
    log(f"FM {day}: warm start from {'v' + warm if warm else 'scratch (first day of the chain)'}")
    ensure_experiments(cfg)
    return _job(cfg, "train_fm", day, submission_id or step_submission_id("fm", day), log=log)


def augment(cfg: ExfmConfig, day: str, submission_id: str | None = None,
            log: Callable[[str], None] = print) -> dict:
    """DAS: infer the newest FM snapshot trained before ``day`` on ``raw/day=day`` into
    ``augmented/day=day``. Only when no FM was trained before ``day`` at all (the chain's first
    day) do the VMs train on ``raw/`` without distillation: returned as skipped, said in the log
    and on an ``exfm-das`` MLflow run (tag ``status=skipped_no_fm``). A registry that does not
    answer raises (the task retries, then fails)."""
    from exfm.registry.chain import das_fm_version
    from exfm.registry.mlflow_registry import ensure_experiments

    fm_version = das_fm_version(cfg, day)  # RegistryError when MLflow does not answer
    ensure_experiments(cfg)
    if fm_version is None:
        _record_no_fm(cfg, day)
        log(f"DAS {day}: no FM snapshot trained before {day}; VMs train WITHOUT FM today "
            "(MLflow run das-{day} tagged status=skipped_no_fm)")
        return {"day": day, "skipped": True, "fm_version": None}
    return _job(cfg, "das_infer", day, submission_id or step_submission_id("das", day), log=log)


def _record_no_fm(cfg: ExfmConfig, day: str) -> None:
    import mlflow

    from exfm.registry.mlflow_registry import connect, experiment_name

    connect(cfg)
    mlflow.set_experiment(experiment_name(cfg, "das"))
    with mlflow.start_run(run_name=f"das-{day}", tags={
            "day": day, "component": "das", "status": "skipped_no_fm", "fm_version": "none",
            "reason": f"no FM snapshot trained before {day}: VMs train without FM"}):
        pass


def train_vm(cfg: ExfmConfig, day: str, vm: str, submission_id: str | None = None,
             log: Callable[[str], None] = print) -> dict:
    """Score VM ``vm`` on day ``day`` (progressive), train it one pass, register it."""
    from exfm.jobs.vm_day import vm_config

    from exfm.registry.chain import supersede_day

    vm_config(cfg, vm)  # fail before submitting
    out = _job(cfg, "train_vm", day, submission_id or step_submission_id("vm", day, vm),
               extra=["--vm", vm], log=log)
    for arm in (out.get("arms") or {}).values():  # a re-run of the day replaces its versions
        if arm.get("registered") and arm.get("version") and not arm.get("reused"):
            old = supersede_day(cfg, arm["registered"], day, str(arm["version"]))
            if old:
                log(f"{arm['registered']}: v{arm['version']} supersedes {old} of {day}")
    return out


def step_submission_id(step: str, day: str, vm: str | None = None,
                       run_tag: str | None = None) -> str:
    """The Ray job id of a step run outside Airflow: ``exfm-fm-D``, ``exfm-das-D``,
    ``exfm-vm-<vm>-D``, with ``_<run_tag>`` when given. ``exfm run-day`` tags each invocation,
    so running a day again runs its jobs again (an id that already SUCCEEDED would return that
    job's result: right for the DAG's retries, wrong for a user re-running a day by hand)."""
    base = {"fm": f"exfm-fm-{day}", "das": f"exfm-das-{day}", "vm": f"exfm-vm-{vm}-{day}"}[step]
    return safe_submission_id(base, run_tag)


def run_day(cfg: ExfmConfig, day: str, log: Callable[[str], None] = print,
            run_tag: str | None = None) -> dict:
    """The whole day without Airflow (``exfm run-day``): same steps, same order. ``run_tag``
    names this run in the Ray jobs' ids (:func:`step_submission_id`)."""
    out: dict = {"day": day, "land": land(cfg, day, log)}
    out["gate_raw"] = gate_raw(cfg, day, log)
    out["bless_fm"] = bless_fm(cfg, day, log)
    out["augment"] = augment(cfg, day, step_submission_id("das", day, run_tag=run_tag), log=log)
    out["gate_augmented"] = gate_augmented(cfg, day, log, augmented=out["augment"])
    out["fm"] = train_fm(cfg, day, step_submission_id("fm", day, run_tag=run_tag), log=log)
    out["vms"] = {v.name: train_vm(cfg, day, v.name, step_submission_id("vm", day, v.name, run_tag),
                                   log=log) for v in cfg.vms}
    out["promote"] = promote(cfg, day, log)
    out["report"] = report(cfg, day, docs_links(out["gate_raw"], out["gate_augmented"]), log)
    return out
