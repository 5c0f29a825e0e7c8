"""DAS batch inference for one day: ``python -m ray_jobs.das_infer --day D [--config C]``.

Reads ``raw/day=D``, infers the leased FM snapshot (normally FM_{D-1}) with a Ray Data actor
pool, commits ``augmented/day=D`` and logs the job's summary (rows, FM version, freshness gap,
throughput) to MLflow. Logic lives in :mod:`exfm.das.augment`.
"""

from __future__ import annotations

from ray_jobs.common import init_ray, job_parser, load_job_config, print_result


def main(argv: list[str] | None = None) -> dict:
    args = job_parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = load_job_config(args)
    init_ray(cfg)

    import mlflow

    from exfm.das.augment import augment_day
    from exfm.registry.mlflow_registry import connect, ensure_experiments, experiment_name

    connect(cfg)
    ensure_experiments(cfg)
    mlflow.set_experiment(experiment_name(cfg, "das"))
    with mlflow.start_run(run_name=f"das-{args.day}", tags={"day": args.day, "component": "das"}):
        res = augment_day(cfg, args.day)
        mlflow.log_metrics({"das/rows": res.rows, "das/rows_per_s": res.rows_per_s,
                            "das/seconds": res.seconds,
                            "das/freshness_gap_days": res.freshness_gap_days or 0})
        mlflow.set_tags({"fm_version": res.fm_version or "none", "augmented_uri": res.uri,
                         "manifest_digest": res.digest})
    out = res.as_dict()
    print_result(out)
    return out


if __name__ == "__main__":
    main()
