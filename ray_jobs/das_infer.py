"""DAS batch inference for one day: ``python -m ray_jobs.das_infer --day D [--config C] [--set k=v]``.

Infers the leased FM snapshot (normally FM_{D-1}) on ``raw/day=D`` (or on ``raw/features/day=D``,
joining late labels) with a Ray Data actor pool, commits ``augmented/day=D`` and logs the summary
(rows, FM version, freshness gap, throughput, dropped rows) and the lineage (input and output
partitions) to the ``exfm-das`` MLflow experiment. The last stdout line is ``EXFM_RESULT {json}``.
Logic lives in :mod:`exfm.das.augment`.
"""

from __future__ import annotations

import os

from ray_jobs.common import init_ray, job_parser, load_job_config, print_result


def main(argv: list[str] | None = None) -> dict:
    p = job_parser(__doc__.splitlines()[0])
    p.add_argument("--final", action="store_true",
                   help="late labels: close the label window now (drop rows still unlabeled)")
    args = p.parse_args(argv)
    cfg = load_job_config(args)
    # a client on the head's host must not rewrite 127.0.0.1 to the host IP (PITFALLS: Ray)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    init_ray(cfg)

    import mlflow

    from exfm.das.augment import AUGMENTED, RAW, augment_day, augment_split_day
    from exfm.registry.mlflow_registry import connect, ensure_experiments, experiment_name, log_dataset_input
    from exfm.storage.partitions import PartitionStore

    connect(cfg)
    ensure_experiments(cfg, vms=[])
    mlflow.set_experiment(experiment_name(cfg, "das"))
    with mlflow.start_run(run_name=f"das-{args.day}", tags={"day": args.day, "component": "das"}):
        mlflow.log_params({k: v for k, v in cfg.public_dump().items() if k.startswith("das.")})
        if args.final:
            res = augment_split_day(cfg, args.day, final=True)
        else:
            res = augment_day(cfg, args.day)
        mlflow.log_metrics({"das/rows": res.rows, "das/inferred_rows": res.inferred_rows,
                            "das/rows_per_s": res.rows_per_s, "das/seconds": res.seconds,
                            "das/dropped_unlabeled": res.dropped_unlabeled,
                            "das/freshness_gap_days": res.freshness_gap_days or 0,
                            "das/fm_versions_seen": len(res.versions_seen)})
        mlflow.set_tags({"fm_version": res.fm_version or "none", "status": res.status,
                         "fm_model": cfg.das.fm_model, "augmented_uri": res.uri,
                         "manifest_digest": res.digest or "", "fm_day": res.fm_day or "none"})
        raw = PartitionStore(cfg, RAW)
        src = raw.manifest(args.day)
        if src is not None:
            log_dataset_input(raw.uri(args.day), src, context="das_input")
        out = PartitionStore(cfg, AUGMENTED).manifest(args.day) if res.status == "committed" else None
        if out is not None:
            log_dataset_input(res.uri, out, context="das_output")
    result = res.as_dict()
    print_result(result)
    return result


if __name__ == "__main__":
    main()
