"""One VM's day: progressive evaluation, (tuning,) one pass with the FM's supervision, registration.

1. Its slice of ``augmented/day=D`` (:func:`exfm.data.slices.vm_slice_filter`, a filter on domain /
   stage, never a copy); on a day with no augmented partition (no FM existed before D) the slice
   of ``raw/day=D``, trained without FM.
2. Progressive metric: yesterday's snapshot of this VM scored on today's slice first.
3. AH / AH+SA VMs with ``distillation.tune``: GS/LS/LW chosen on earlier data (a fresh VM per
   candidate trains on the latest earlier augmented day and is scored on today's slice, which
   today's VM is never scored on: tomorrow's is), at most every ``tune_every_days``; in between the
   triple recorded on the previous version is kept. Trials go to MLflow (``tuning.json``).
4. One pass, warm-started (weights from the registry, trainer state incl. the Student Adapter
   from the bucket, :mod:`exfm.storage.state`), with the VM's distillation mode; registered as
   ``exfm-vm-<name>`` with the FM version that supervised it. With ``control: true`` the same VM
   without FM trains beside it as ``exfm-vm-<name>-control`` (the apple-to-apple baseline).

:func:`run` does it in this process; :func:`run_on_ray` as one Ray task with a training worker's
resources (``ray.cpus_per_worker``, ``gpus_per_worker`` when ``use_gpu``), so on a cluster it
lands on a (GPU) worker node, not on the head where the job's driver runs. A retry of the same
day on the same data and FM finds its versions registered and returns them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import date

from exfm.config import ExfmConfig, VMConfig
from exfm.data.slices import vm_slice_filter
from exfm.storage.layout import AUGMENTED, RAW, vm_state_key


@dataclass
class VMDayResult:
    """What a VM's day did (the ``EXFM_RESULT`` of ``ray_jobs.train_vm``). ``arms``: ``fm``
    (and ``control``), each ``version``, ``reused``, ``progressive``, ``train``, ``tune``, ..."""

    day: str
    vm: str
    fm_version: str | None
    rows: int
    source: str  # augmented | raw
    arms: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def vm_config(cfg: ExfmConfig, name: str) -> VMConfig:
    """The configured VM ``name``; ValueError naming the configured ones if there is none."""
    vms = {v.name: v for v in cfg.vms}
    if name not in vms:
        raise ValueError(f"vms: no VM named '{name}' (configured: {sorted(vms)})")
    return vms[name]


def _days_apart(a: str, b: str) -> int:
    return abs((date.fromisoformat(b) - date.fromisoformat(a)).days)


def tune_for_day(cfg: ExfmConfig, day: str, vm: VMConfig, schema, rows, store, prev_tags: dict,
                 log=print) -> tuple[ExfmConfig, dict]:
    """The distillation config this VM trains with today, and what was done to get it.

    ``rows``: today's slice (a :class:`~exfm.data.stream.DayStream`); tuning reads every k-th row
    of it and of the previous augmented day, at most ``distillation.tune_max_rows`` each.

    Returns ``(cfg, info)``; ``info["tune"]`` is ``off`` (not an AH mode, or tune false),
    ``reused`` (a choice at most ``tune_every_days`` old on the previous version), ``none`` (no
    earlier augmented day: the configured triple) or ``tuned`` (with ``trials``).
    """
    from exfm.train.trainer import resolve_mode
    from exfm.train.tuning import TUNED_MODES, tune_amplifiers

    d = cfg.distillation
    if not d.tune or resolve_mode(vm, cfg) not in TUNED_MODES or store is None:
        return cfg, {"tune": "off"}
    last = prev_tags.get("tuned_on")
    if last and _days_apart(last, day) < d.tune_every_days and all(
            f"tuned_{k}" in prev_tags for k in ("gs", "ls", "lw")):
        triple = {k: float(prev_tags[f"tuned_{k}"]) for k in ("gs", "ls", "lw")}
        log(f"VM '{vm.name}': keeps gs/ls/lw {triple} chosen on {last}")
        return (cfg.model_copy(update={"distillation": d.model_copy(update=triple)}),
                {"tune": "reused", "tuned_on": last, **triple})
    earlier = [x for x in store.list_days() if x < day]
    if not earlier:
        log(f"VM '{vm.name}': no augmented day before {day} to tune on; configured gs/ls/lw")
        return cfg, {"tune": "none"}
    train = store.stream_day(earlier[-1], filter=vm_slice_filter(vm, schema)).thin(d.tune_max_rows)
    if train.num_rows == 0:
        log(f"VM '{vm.name}': its slice of {store.uri(earlier[-1])} is empty; configured gs/ls/lw")
        return cfg, {"tune": "none"}
    log(f"VM '{vm.name}': tuning gs/ls/lw on {earlier[-1]} -> {day} ({train.num_rows} rows)")
    res = tune_amplifiers(train, rows.thin(d.tune_max_rows), schema, vm, cfg,
                          on_trial=lambda t: log(f"  gs={t.gs:g} ls={t.ls:g} lw={t.lw:g}: "
                                                 f"auc {t.auc:.4f} ne {t.ne:.4f}"))
    b = res.best
    log(f"VM '{vm.name}': chose gs={b.gs:g} ls={b.ls:g} lw={b.lw:g} by {res.metric}")
    return res.apply(cfg), {"tune": "tuned", "tuned_on": day, "train_day": earlier[-1],
                            "gs": b.gs, "ls": b.ls, "lw": b.lw, "metric": res.metric,
                            "trials": res.records()}


def train_arm(cfg: ExfmConfig, day: str, vm: VMConfig, rows, schema, data_uri: str, digest: str,
              fm_version: str | None, registered: str, arm: str, tune_store=None,
              freshness=None) -> dict:
    """Progressive score, (tune,) train, register one arm. Returns its summary.

    ``rows``: the VM's slice of the day as a :class:`~exfm.data.stream.DayStream`, read in chunks
    of ``models.stream_chunk_rows`` (once to score yesterday's version, once to train): memory
    holds one chunk, not the day.

    ``tune_store``: the augmented PartitionStore to tune GS/LS/LW on (None = no tuning);
    ``freshness``: the day's :class:`~exfm.promotion.freshness.FreshnessVerdict` (gap metric,
    ``degraded`` tag)."""
    import mlflow
    import torch

    from exfm.compute.scaling import device_name
    from exfm.models.build import build_vm
    from exfm.registry.mlflow_registry import (connect, find_version, latest_version,
                                               load_snapshot_version, log_dataset_input,
                                               register_vm)
    from exfm.storage.state import load_state, save_state
    from exfm.train.trainer import evaluate_chunks, resolve_mode, train_vm_stream

    client = connect(cfg)
    done = find_version(cfg, registered, day=day, data_digest=digest,
                        fm_version=fm_version or "none")
    if done is not None:
        print(f"{registered} v{done} already holds day {day} on this data; nothing to do",
              flush=True)
        return {"registered": registered, "version": done, "reused": True}
    device = torch.device(device_name(cfg))
    prev = latest_version(cfg, registered, before_day=day)
    progressive = None
    state, prev_tags = {}, {}
    if prev is not None:
        model, _, _ = load_snapshot_version(cfg, registered, prev)
        model.to(device).train()
        progressive = evaluate_chunks(model, rows.chunks(cfg.models.stream_chunk_rows),
                                      task=vm.task, device=device)
        prev_tags = dict(client.get_model_version(registered, prev).tags)
        state = load_state(cfg, prev_tags.get("state_key"))
    else:
        from exfm.data.dense_scale import FIT_ROWS  # the first day fixes the dense inputs' scales

        model = build_vm(vm, schema, cfg, sample=rows.head(FIT_ROWS)).to(device)
    mode = resolve_mode(vm, cfg)
    cfg, tuning = tune_for_day(cfg, day, vm, schema, rows, tune_store, prev_tags)
    tune_tags = ({"tuned_on": tuning["tuned_on"], **{f"tuned_{k}": str(tuning[k])
                                                    for k in ("gs", "ls", "lw")}}
                 if tuning["tune"] in ("tuned", "reused") else {})
    from exfm.promotion.freshness import day_index

    step = day_index(day)  # MLflow charts draw each VM's figures over days
    sample = rows.head(64)  # the registered model's input example (and the dataset's schema)
    with mlflow.start_run(run_name=f"{vm.name.removesuffix('-control')}/{day}/{arm}", tags={
            "day": day, "component": "vm", "vm": vm.name, "arm": arm, "mode": mode, "task": vm.task,
            "domain": vm.domain or "all", "stage": vm.stage or "all", "model": vm.model,
            "fm_version": fm_version or "none"}) as run:
        log_dataset_input(data_uri, digest, name=f"{data_uri.rstrip('/').split('/')[-2]}-{day}",
                          sample=sample.slice(0, 0))
        mlflow.log_params({"vm.model": vm.model, "vm.mode": mode, "vm.task": vm.task,
                           "distillation.gs": cfg.distillation.gs,
                           "distillation.ls": cfg.distillation.ls,
                           "distillation.lw": cfg.distillation.lw,
                           "models.batch_size": cfg.models.batch_size})
        mlflow.set_tag("tune", tuning["tune"])
        degraded = freshness is not None and freshness.degraded
        if freshness is not None and freshness.gap is not None:
            mlflow.log_metric("fm/freshness_gap_days", freshness.gap, step=step)
            mlflow.set_tags({"freshness": freshness.status, "degraded": str(degraded).lower()})
        if tuning["tune"] == "tuned":
            mlflow.log_dict(tuning, "tuning.json")
        if progressive is not None:
            mlflow.log_metrics({f"eval/{k}": float(v) for k, v in progressive.items()}, step=step)
        t0 = time.time()
        res = train_vm_stream(model, rows, schema, vm, cfg, state=state, device=device)
        mlflow.log_metrics({(k if "/" in k else f"train/{k}"): float(v)
                            for k, v in res.metrics.items() if isinstance(v, (int, float))},
                           step=step)
        mlflow.log_metric("train/seconds", time.time() - t0)
        key = vm_state_key(registered, day)
        save_state(cfg, key, res.state)
        version = register_vm(cfg, registered.removeprefix("exfm-vm-"), model, day, res.rows_seen,
                              [data_uri], fm_version, extra={"day": day, "mode": mode},
                              sample=sample, tags={"state_key": key, "mode": mode,
                                                               **({"degraded": "true"} if degraded
                                                                  else {}),
                                                               "run_id": run.info.run_id,
                                                               "data_digest": digest,
                                                               **tune_tags})
        client.set_registered_model_alias(registered, "challenger", version)  # promotion gate
    return {"registered": registered, "version": version, "mode": mode, "steps": res.steps,
            "tune": {k: v for k, v in tuning.items() if k != "trials"},
            "rows": rows.count(), "previous_version": prev, "run_id": run.info.run_id,
            "progressive": progressive, "train": {k: v for k, v in res.metrics.items()
                                                  if isinstance(v, (int, float))}}


def run(cfg: ExfmConfig, day: str, vm_name: str) -> VMDayResult:
    """The whole VM day in this process (what :func:`run_on_ray`'s task runs)."""
    import mlflow

    from exfm.compute.scaling import torch_threads
    from exfm.registry.mlflow_registry import (connect, ensure_experiments, experiment_name,
                                               vm_model_name)
    from exfm.storage.partitions import DayNotFound, PartitionStore, load_remote_schema

    vm = vm_config(cfg, vm_name)
    cfg = cfg.model_copy(update={"models": cfg.models.model_copy(
        update={"torch_threads": torch_threads(cfg)})})
    schema = load_remote_schema(cfg)
    aug = PartitionStore(cfg, AUGMENTED)
    m = aug.manifest(day)
    store = aug
    if m is None:  # no FM existed before this day: train on raw, without FM
        store = PartitionStore(cfg, RAW)
        m = store.manifest(day)
        if m is None:
            raise DayNotFound(f"{store.uri(day)}: neither augmented nor raw partition for {day}")
        vm = vm.model_copy(update={"mode": "none"})
    fm_version = m.fm_version
    from exfm.das.blessing import vm_freshness

    fresh = vm_freshness(cfg, day, fm_version)  # StaleFMError under freshness.policy: fail
    if fresh.degraded:  # the FM is too old: train without its supervision, and say so
        print(f"VM '{vm_name}': {fresh.message}: training without FM", flush=True)
        vm = vm.model_copy(update={"mode": "none"})
    rows = store.stream_day(day, filter=vm_slice_filter(vm, schema))
    if rows.count() == 0:
        raise ValueError(f"VM '{vm_name}': its slice of {store.uri(day)} is empty "
                         f"(domain={vm.domain}, stage={vm.stage})")
    connect(cfg)
    names = [vm_name] + ([f"{vm_name}-control"] if vm.control else [])
    ensure_experiments(cfg, vms=names)
    mlflow.set_experiment(experiment_name(cfg, "vm"))
    arms = {"fm": train_arm(cfg, day, vm, rows, schema, store.uri(day), m.digest, fm_version,
                            vm_model_name(vm_name), arm="fm", freshness=fresh,
                            tune_store=aug if store is aug else None)}
    if vm.control:
        control = vm.model_copy(update={"mode": "none"})
        arms["control"] = train_arm(cfg, day, control, rows, schema, store.uri(day), m.digest,
                                    None, vm_model_name(f"{vm_name}-control"), arm="control")
    return VMDayResult(day=day, vm=vm_name, fm_version=fm_version, rows=rows.count(),
                       source=store.prefix, arms=arms)


def _run_task(cfg_dump: dict, day: str, vm_name: str) -> dict:
    """The Ray task: plain data in and out."""
    return run(ExfmConfig.model_validate(cfg_dump), day, vm_name).as_dict()


def run_on_ray(cfg: ExfmConfig, day: str, vm_name: str) -> VMDayResult:
    """:func:`run` as one Ray task with a training worker's resources (joins the cluster)."""
    import ray

    from exfm.compute.entry import init_ray
    from exfm.compute.scaling import task_options

    vm_config(cfg, vm_name)  # fail here, not after scheduling a task
    init_ray(cfg)
    task = ray.remote(_run_task).options(name=f"train_vm:{vm_name}:{day}", **task_options(cfg))
    return VMDayResult(**ray.get(task.remote(cfg.dump_for_children(mode="python"), day, vm_name)))
