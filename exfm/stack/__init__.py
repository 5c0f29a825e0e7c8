"""The embedded stack: SeaweedFS (S3), MLflow, a Ray head and Airflow 3 on one machine.

    >>> cfg = load_config()
    >>> stack_up(cfg)                 # s3, mlflow, ray, airflow (dependency order, idempotent)
    >>> stack_status(cfg)             # [ServiceStatus(name, url, healthy, pid, detail), ...]
    >>> client_env(cfg)               # env a child process needs (keys, URIs, Ray token)
    >>> stack_down(cfg)               # stops exactly what up started

Modules: ``services`` (what each service runs, its ports, health check, client env),
``lifecycle`` (up, down, status), ``procs`` (process groups, PID files, signals).

State lives under ``cfg.state_path``: ``run/*.pid`` (PID files), ``logs/*.log``, ``s3/`` (object
data), ``db/`` (SQLite), ``airflow/`` (AIRFLOW_HOME), ``secrets.json`` (0600: generated S3 keys,
Airflow and MLflow admin passwords, Ray token), ``mlflow-auth.ini`` (0600: MLflow's basic-auth
app), ``database.json`` (which databases the stack lives on; ``up`` refuses others). The Ray
head's temp dir is ``/tmp/exfm-ray-<hash>`` (short, for unix sockets). See
``infra/local/README.md``.
"""

from exfm.stack.lifecycle import resolve_services, stack_down, stack_status, stack_up
from exfm.stack.procs import ServiceStatus, StackError
from exfm.stack.services import SERVICES, client_env

__all__ = ["SERVICES", "ServiceStatus", "StackError", "client_env", "stack_down", "stack_status",
           "stack_up", "resolve_services"]
