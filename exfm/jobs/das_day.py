"""DAS's day: infer the leased FM snapshot on day D into ``augmented/day=D`` and record the run.

The inference itself is :func:`exfm.das.augment.augment_day` (joined ``raw/day=D``) or
:func:`~exfm.das.augment.augment_split_day` with ``final`` (late labels: close the label window
now). This module adds the MLflow run in the ``exfm-das`` experiment: the summary (rows, FM
version, freshness gap, throughput, dropped rows) and the lineage (input and output partitions).
"""

from __future__ import annotations

from exfm.config import ExfmConfig
from exfm.das.augment import AugmentResult
from exfm.storage.layout import AUGMENTED, RAW

__all__ = ["AugmentResult", "run"]


def run(cfg: ExfmConfig, day: str, final: bool = False) -> AugmentResult:
    """Augment ``day`` on the cluster (joined here if needed) inside one ``das-D`` MLflow run."""
    import mlflow

    from exfm.compute.entry import init_ray
    from exfm.das.augment import augment_day, augment_split_day
    from exfm.registry.mlflow_registry import (connect, ensure_experiments, experiment_name,
                                               fm_model_name, log_dataset_input)
    from exfm.storage.partitions import PartitionStore

    init_ray(cfg)
    connect(cfg)
    ensure_experiments(cfg, vms=[])
    mlflow.set_experiment(experiment_name(cfg, "das"))
    with mlflow.start_run(run_name=f"das-{day}", tags={"day": day, "component": "das"}):
        mlflow.log_params({k: v for k, v in cfg.public_dump().items() if k.startswith("das.")})
        res = augment_split_day(cfg, day, final=True) if final else augment_day(cfg, day)
        mlflow.log_metrics({"das/rows": res.rows, "das/inferred_rows": res.inferred_rows,
                            "das/rows_per_s": res.rows_per_s, "das/seconds": res.seconds,
                            "das/dropped_unlabeled": res.dropped_unlabeled,
                            "das/freshness_gap_days": res.freshness_gap_days or 0,
                            "das/fm_versions_seen": len(res.versions_seen)})
        mlflow.set_tags({"fm_version": res.fm_version or "none", "status": res.status,
                         "fm_model": fm_model_name(cfg), "augmented_uri": res.uri,
                         "manifest_digest": res.digest or "", "fm_day": res.fm_day or "none"})
        raw = PartitionStore(cfg, RAW)
        src = raw.manifest(day)
        if src is not None:
            log_dataset_input(raw.uri(day), src, context="das_input")
        out = PartitionStore(cfg, AUGMENTED).manifest(day) if res.status == "committed" else None
        if out is not None:
            log_dataset_input(res.uri, out, context="das_output")
    return res
