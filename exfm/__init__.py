"""exfm: external distillation from one foundation model (FM) to many vertical models (VMs).

The pure parts (data, models, distill, train) import neither Airflow, Ray, MLflow nor boto3;
the adapters to those live in `storage`, `registry`, `das`, `stack` and `ray_jobs`.
"""

__version__ = "0.1.0"
