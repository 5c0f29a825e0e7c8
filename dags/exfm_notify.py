"""The on-call notifier of the exfm DAGs (not a DAG: listed in ``.airflowignore``).

A thin ``airflow.sdk`` notifier: it reads the failed task's context (DAG, task, map index, try,
logical day, exception, log URL, the MLflow run id a task pushed to XCom as ``mlflow_run_id``)
and hands it to :mod:`exfm.oncall`, which logs one readable alert and POSTs it to the webhook
(``$EXFM_ONCALL_WEBHOOK_URL``: ``exfm stack up`` sets it from ``oncall.webhook_url``). Use it as
``default_args={"on_failure_callback": ExfmFailureNotifier()}``.

DAG files import it as a top-level module: Airflow puts the DAGs folder (the bundle's path) on
``sys.path`` for DAG parsing and task execution.
"""

from __future__ import annotations

import os

from airflow.sdk.bases.notifier import BaseNotifier


class ExfmFailureNotifier(BaseNotifier):
    """Failure callback: one alert per failed task try, in the task log and to the webhook.

    Args:
        webhook: the URL to POST to; None = ``$EXFM_ONCALL_WEBHOOK_URL`` (else log only).
        mlflow_url: the MLflow UI base for the run link; None = ``$MLFLOW_TRACKING_URI``.
        max_lines: last lines of the error kept in the alert.
    """

    def __init__(self, webhook: str | None = None, mlflow_url: str | None = None,
                 max_lines: int = 15, timeout_s: float = 5.0):
        super().__init__()
        self.webhook, self.mlflow_url = webhook, mlflow_url
        self.max_lines, self.timeout_s = max_lines, timeout_s

    def notify(self, context) -> None:
        from exfm.oncall import build_alert, mlflow_run_url, notify, webhook_url  # not at parse

        ti = context.get("ti") or context.get("task_instance")
        logical = context.get("logical_date")
        day = logical.date().isoformat() if logical is not None else context.get("ds")
        run_id, mlflow_url = None, None
        try:
            run_id = ti.xcom_pull(task_ids=ti.task_id, key="mlflow_run_id", map_indexes=ti.map_index)
        except Exception:  # noqa: BLE001 - a task that pushed nothing
            pass
        base = self.mlflow_url or os.environ.get("MLFLOW_TRACKING_URI")
        if run_id and base:
            mlflow_url = mlflow_run_url(base, run_id)
        alert = build_alert(ti.dag_id, ti.task_id, day, getattr(ti, "try_number", None),
                            context.get("exception"), log_url=getattr(ti, "log_url", None),
                            mlflow_url=mlflow_url, max_lines=self.max_lines,
                            map_index=getattr(ti, "map_index", None))
        notify(alert, webhook_url(self.webhook), self.timeout_s, log=self.log.error)
