"""On-call alerts, pure Python (stdlib only, safe to import at DAG-parse time): one readable
message per failed task and its POST to a webhook.

:func:`build_alert` gathers what the person on call needs (DAG, task, day, try, the error's last
lines, links to the Airflow log and the MLflow run); :func:`format_alert` renders it;
:func:`post_alert` POSTs it as JSON (``{"text": ..., "alert": {...}}``, the ``text`` key that
Slack/Teams/Mattermost-style incoming webhooks read); :func:`notify` does both. The Airflow
notifier that calls this lives in ``dags/exfm_notify.py`` (``exfm/`` never imports Airflow). In
Airflow's processes the webhook is ``$EXFM_ONCALL_WEBHOOK_URL``: ``exfm stack up`` sets it from
``oncall.webhook_url`` unless the environment already has it.

Example:
    >>> a = build_alert("exfm_daily", "gate_raw", "2026-01-03", 2, "GateError: label rate 0.0")
    >>> print(format_alert(a).splitlines()[0])
    [exfm] FAILED exfm_daily.gate_raw day 2026-01-03 (try 2): GateError: label rate 0.0
"""

from __future__ import annotations

import json
import os
import traceback
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Callable

WEBHOOK_ENV = "EXFM_ONCALL_WEBHOOK_URL"
# Airflow exceptions a task raises around the real error (by name: no Airflow import here)
_WRAPPERS = ("AirflowFailException",)


@dataclass
class Alert:
    """One failed task, as the person on call reads it."""

    dag_id: str
    task_id: str
    day: str | None
    try_number: int | None
    reason: str
    error_lines: list[str] = field(default_factory=list)
    log_url: str | None = None
    mlflow_url: str | None = None
    map_index: int | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


# MLflow 3.17's UI picks its view (GenAI: traces, judges, an assistant; or model training: runs
# and metrics) from the URL's workflowType, else the browser's last choice, default GenAI; the
# experiments' mlflow.experimentKind tag no longer decides it. Every link exfm prints asks for runs.
MLFLOW_RUNS_VIEW = "workflowType=machine_learning"


def mlflow_run_url(base: str, run_id: str, experiment_id: str | None = None) -> str:
    """The MLflow UI's page of run ``run_id``, in its model-training view."""
    path = f"experiments/{experiment_id}/runs/{run_id}" if experiment_id else f"runs/{run_id}"
    return f"{base.rstrip('/')}/#/{path}?{MLFLOW_RUNS_VIEW}"


def error_text(error: BaseException | str | None) -> str:
    """The traceback of an exception (or the string given)."""
    if error is None:
        return ""
    if isinstance(error, BaseException):
        return "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return str(error)


def build_alert(dag_id: str, task_id: str, day: str | None, try_number: int | None,
                error: BaseException | str | None, log_url: str | None = None,
                mlflow_url: str | None = None, max_lines: int = 15,
                map_index: int | None = None, **extra) -> Alert:
    """An :class:`Alert` keeping the error's last ``max_lines`` lines; its ``reason`` is the
    error's one-line summary (``Type: message``)."""
    if isinstance(error, BaseException) and type(error).__name__ in _WRAPPERS and error.__cause__:
        error = error.__cause__  # "fail without retry" wraps the real reason (a gate's refusal)
    lines = [ln for ln in error_text(error).rstrip().splitlines() if ln.strip()]
    if isinstance(error, BaseException):
        msg = [ln.strip() for ln in f"{type(error).__name__}: {error}".splitlines() if ln.strip()]
        reason = msg[0]
        if reason.endswith(":") and len(msg) > 1:  # "N violation(s):", then the first of them
            reason = f"{reason} {msg[1]}"
    else:
        reason = lines[-1] if lines else "failed (no error recorded)"
    return Alert(dag_id, task_id, day, try_number, reason[:500], lines[-max_lines:], log_url,
                 mlflow_url, map_index if map_index not in (None, -1) else None, dict(extra))


def format_alert(a: Alert) -> str:
    """A few readable lines: what failed, why, the last lines of the error, where to look."""
    task = a.task_id + (f"[{a.map_index}]" if a.map_index is not None else "")
    tried = f" (try {a.try_number})" if a.try_number is not None else ""
    out = [f"[exfm] FAILED {a.dag_id}.{task} day {a.day or '-'}{tried}: {a.reason}"]
    if a.error_lines:
        out += ["last lines of the error:"] + [f"    {ln}" for ln in a.error_lines]
    out += [f"{k}: {v}" for k, v in a.extra.items()]
    if a.log_url:
        out.append(f"Airflow log: {a.log_url}")
    if a.mlflow_url:
        out.append(f"MLflow run: {a.mlflow_url}")
    return "\n".join(out)


def post_alert(url: str, a: Alert, timeout_s: float = 5.0) -> int:
    """POST the alert as JSON to ``url``; returns the HTTP status (raises on network errors and
    statuses >= 400, naming the host but never the URL's path, which often holds a token)."""
    body = json.dumps({"text": format_alert(a), "alert": a.as_dict()}).encode()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    host = urllib.request.urlparse(url).netloc
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - configured URL
            return resp.status
    except Exception as e:  # noqa: BLE001
        raise RuntimeError(f"on-call webhook at {host}: {type(e).__name__}: {e}") from None


def webhook_url(configured: str | None) -> str | None:
    """``$EXFM_ONCALL_WEBHOOK_URL`` (where a secret URL belongs), else the configured one."""
    return os.environ.get(WEBHOOK_ENV) or configured


def notify(a: Alert, url: str | None = None, timeout_s: float = 5.0,
           log: Callable[[str], None] = print) -> bool:
    """Log the alert and POST it to ``url`` if given. True when it was delivered to the
    webhook; a webhook that fails is logged, never raised (the alert must not hide the error)."""
    log(format_alert(a))
    if not url:
        return False
    try:
        post_alert(url, a, timeout_s)
        return True
    except RuntimeError as e:
        log(f"[exfm] alert not delivered: {e}")
        return False


def _get(obj, key: str):
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


async def deadline_missed(context: dict | None = None, dag_id: str = "exfm_daily",
                          minutes: int | None = None, webhook: str | None = None,
                          reference: str = "queued_at", **_kwargs) -> bool:
    """Airflow ``DeadlineAlert`` callback, run in the triggerer:
    ``AsyncCallback("exfm.oncall.deadline_missed", kwargs={"dag_id": ..., "minutes": ...,
    "reference": "queued_at" | "logical_date"})``. One alert ("deadline missed") for the daily
    run, logged and POSTed like a task failure (``context``: what Airflow passes, the run as a
    dict and the deadline)."""
    import asyncio

    run = _get(context or {}, "dag_run") or {}
    logical = _get(run, "logical_date")
    day = str(logical)[:10] if logical else None
    since = "it was queued" if reference == "queued_at" else "its logical date"
    reason = (f"DeadlineMissed: the daily run is not done {minutes} min after {since}"
              if minutes else "DeadlineMissed: the daily run is past its deadline")
    a = build_alert(_get(run, "dag_id") or dag_id, "(dag run)", day, None, reason,
                    run_id=_get(run, "run_id") or "-")
    return await asyncio.to_thread(notify, a, webhook_url(webhook))
