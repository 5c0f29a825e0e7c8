"""Submit a Ray job through the Jobs API, stream its logs, and return its result.

Used by the Airflow tasks and ``exfm run-day``. The job's entrypoint is a ``ray_jobs`` module
that prints one final line ``EXFM_RESULT {json}``; :func:`submit_and_wait` returns that dict.

- Deterministic ``submission_id`` (dag, run, task, map index): a retry re-attaches to the job
  with that id instead of failing on a duplicate (ray#31356); a finished one is returned as is.
- The caller being killed (SIGTERM from Airflow marking the task failed, Ctrl-C) stops the job.
- Jobs stuck PENDING (no resources) have no Ray-side timeout: ``timeout_s`` owns it.
- Credentials travel in the job's env vars, never in logs.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from pathlib import Path
from typing import Callable

from exfm.config import ExfmConfig

RESULT_PREFIX = "EXFM_RESULT "
REPO_ROOT = Path(__file__).resolve().parents[2]


class RayJobError(RuntimeError):
    """A Ray job failed, was stopped, timed out, or the cluster was unreachable."""


def print_result(result: dict) -> None:
    """What a ``ray_jobs`` entrypoint prints last, for :func:`submit_and_wait` to parse."""
    print(RESULT_PREFIX + json.dumps(result, default=str), flush=True)


def parse_result(logs: str) -> dict | None:
    for line in reversed(logs.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return None


def safe_submission_id(*parts: object) -> str:
    """A deterministic id from its parts (Ray allows [A-Za-z0-9_-])."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", "_".join(str(p) for p in parts if p is not None))[:200]


def job_env(cfg: ExfmConfig, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Env vars a job needs to reach S3 and MLflow and load the same config."""
    import os

    access, secret = cfg.s3_credentials()
    env = {
        "EXFM_S3_ENDPOINT": cfg.s3_endpoint, "EXFM_S3_ACCESS_KEY": access,
        "EXFM_S3_SECRET_KEY": secret, "EXFM_S3_BUCKET": cfg.storage.bucket,
        "EXFM_TRACKING_URI": cfg.tracking_uri, "EXFM_STATE_DIR": str(cfg.state_path),
        "MLFLOW_TRACKING_URI": cfg.tracking_uri, "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    if cfg.database.kind == "postgres":
        env["EXFM_DATABASE"] = "postgres"
        env["EXFM_DATABASE_URL"] = cfg.database.url.get_secret_value()
    env.update(extra or {})
    return env


def runtime_env(cfg: ExfmConfig, env: dict[str, str]) -> dict:
    """Local cluster: the head shares this venv and checkout, so PYTHONPATH is enough.
    Remote cluster (``ray.address`` set): ship the checkout as the working dir."""
    if cfg.ray.address:
        return {"working_dir": str(REPO_ROOT), "env_vars": env,
                "excludes": [".venv", ".exfm", "data", ".git", "out", "bench/.venv-peers"]}
    return {"env_vars": {**env, "PYTHONPATH": str(REPO_ROOT)}}


def _client(cfg: ExfmConfig):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(cfg.ray_dashboard_url)
    except Exception as e:  # noqa: BLE001
        raise RayJobError(f"Ray Jobs API at {cfg.ray_dashboard_url} is unreachable: {e} "
                          "(is the stack up? `exfm stack status`)") from None


def submit_and_wait(cfg: ExfmConfig, entrypoint: list[str], submission_id: str,
                    env: dict[str, str] | None = None, log: Callable[[str], None] = print,
                    timeout_s: float | None = None, poll_s: float = 1.0) -> dict:
    """Run ``entrypoint`` (argv; python is the cluster's interpreter) as a Ray job; return the
    job's ``EXFM_RESULT`` dict. Raises :class:`RayJobError` with the job's error text."""
    import shlex

    from ray.job_submission import JobStatus

    client = _client(cfg)
    timeout_s = timeout_s or cfg.ray.job_timeout_s
    argv = [sys.executable if not cfg.ray.address else "python", *entrypoint]
    try:
        info = client.get_job_info(submission_id)
    except Exception:  # noqa: BLE001 - no such job yet
        info = None
    if info is not None and info.status in (JobStatus.FAILED, JobStatus.STOPPED):
        # a failed attempt of the same task: give the retry a fresh id, keep it deterministic
        submission_id = f"{submission_id}-r{int(time.time())}"
        info = None
    if info is None:
        client.submit_job(entrypoint=" ".join(shlex.quote(a) for a in argv),
                          submission_id=submission_id,
                          runtime_env=runtime_env(cfg, job_env(cfg, env)))
        log(f"ray job {submission_id} submitted to {cfg.ray_dashboard_url}")
    else:
        log(f"ray job {submission_id} already exists ({info.status}); re-attaching")

    stopped = {"flag": False}

    def _stop(signum, frame):  # an Airflow task killed must not leave the job running
        if not stopped["flag"]:
            stopped["flag"] = True
            log(f"caller got signal {signum}: stopping ray job {submission_id}")
            try:
                client.stop_job(submission_id)
            finally:
                raise KeyboardInterrupt(f"signal {signum}")

    old = None
    try:
        old = signal.signal(signal.SIGTERM, _stop)
    except ValueError:  # not the main thread: the caller owns signals
        pass
    start = time.time()
    printed = 0
    delay = poll_s
    try:
        while True:
            status = client.get_job_status(submission_id)
            logs = client.get_job_logs(submission_id)
            for line in logs[printed:].splitlines():
                log(f"[{submission_id}] {line}")
            printed = len(logs)
            if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                break
            if time.time() - start > timeout_s:
                client.stop_job(submission_id)
                raise RayJobError(f"ray job {submission_id}: still {status} after {timeout_s:.0f}s "
                                  "(job_timeout_s); stopped it")
            time.sleep(delay)
            delay = min(delay * 1.5, 10.0)
    except KeyboardInterrupt:
        if not stopped["flag"]:
            client.stop_job(submission_id)
            log(f"interrupted: stopped ray job {submission_id}")
        raise
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    if status != JobStatus.SUCCEEDED:
        info = client.get_job_info(submission_id)
        tail = "\n".join(logs.strip().splitlines()[-15:])
        raise RayJobError(f"ray job {submission_id} {status}: {info.message or ''}\n{tail}")
    result = parse_result(logs)
    if result is None:
        raise RayJobError(f"ray job {submission_id} succeeded but printed no {RESULT_PREFIX.strip()}")
    return result
