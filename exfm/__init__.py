"""exfm: external distillation from one foundation model (FM) to many vertical models (VMs).

The pure parts (data, models, distill, train) import neither Airflow, Ray, MLflow nor boto3;
the adapters to those live in `storage`, `registry`, `das`, `compute` and `stack`; a day's work
(`jobs`) is plain functions that the thin `ray_jobs/` entrypoints call.
"""

__version__ = "0.1.0"
