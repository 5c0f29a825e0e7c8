"""Submit a Ray job through the Jobs API, stream its logs, and return its result.

Used by the Airflow tasks, ``exfm run-day`` and ``exfm ray submit``. The job's entrypoint is a
``ray_jobs`` module that prints one final line ``EXFM_RESULT {json}``; :func:`submit_and_wait`
returns that dict.

- Deterministic ``submission_id`` (dag, run, task, map index): a retry re-attaches to a job with
  that id still PENDING/RUNNING, returns the result of one that SUCCEEDED, and after a FAILED or
  STOPPED one submits ``<id>-r2``, ``<id>-r3``... (Ray refuses duplicate ids, ray#31356).
- The caller being killed (SIGTERM from Airflow marking the task failed, Ctrl-C) stops the job.
- Jobs stuck PENDING (no resources for the driver, runtime env stuck) have no Ray-side timeout:
  ``ray.pending_timeout_s`` owns it; ``timeout_s`` (default ``ray.job_timeout_s``) bounds the
  whole job.
- Credentials (S3 keys, the embedded MLflow's login, a database URL) never travel in the job's
  ``runtime_env`` (the Jobs API and dashboard show it) nor in logs: a local job gets the path
  of a 0600 file (:func:`write_job_secrets`), a remote cluster's pods a Kubernetes Secret.

Code shipping (``runtime_env``), decided per cluster:

- Embedded/local cluster (``ray.address`` unset): the head was started from this venv and sees
  this checkout, so the job runs ``sys.executable`` with ``PYTHONPATH=<repo>``. Nothing is
  uploaded; a job starts in about a second and runs exactly the code on disk.
- Remote cluster (``ray.address`` set, e.g. KubeRay): the image holds the pinned requirements
  (``infra/ray/``); the checkout is uploaded as ``working_dir`` (without .venv, .git, data,
  state, bench venvs), and a ``--config`` file outside the checkout is shipped inside it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from exfm.config import ExfmConfig, read_state_secrets
from exfm.config.root import JOB_SECRETS_ENV
from exfm.paths import project_root

RESULT_PREFIX = "EXFM_RESULT "
WORKING_DIR_EXCLUDES = [".venv", ".venv-*", ".exfm", "data", ".git", "out", "bench/.venv-peers",
                        "bench/out", "**/__pycache__", "*.pyc", ".pytest_cache", ".dvc/cache"]
SHIPPED_CONFIG = ".exfm-job/config.yaml"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
MAX_RETRY_IDS = 20


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


def retry_ids(submission_id: str):
    """``id``, ``id-r2``, ``id-r3``...: the ids successive attempts of one task use."""
    yield submission_id
    for k in range(2, MAX_RETRY_IDS + 1):
        yield f"{submission_id}-r{k}"


def is_local(cfg: ExfmConfig) -> bool:
    """The embedded head (same machine, same venv, same checkout)."""
    return cfg.ray.address is None


def job_env(cfg: ExfmConfig, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Env vars a job needs to reach S3 and MLflow (the config's env overrides, see
    ``exfm.config.ENV_OVERRIDES``). No secret: the Jobs API and dashboard show a job's
    ``runtime_env``. A local job gets the path of a 0600 file with the S3 keys and the database
    URL (``EXFM_SECRETS_FILE``, :func:`write_job_secrets`); a remote cluster's pods carry them in
    their own environment (a Kubernetes Secret, see infra/README.md)."""
    env = {
        "EXFM_S3_ENDPOINT": cfg.s3_endpoint, "EXFM_S3_BUCKET": cfg.storage.bucket,
        "EXFM_TRACKING_URI": cfg.tracking_uri, "MLFLOW_TRACKING_URI": cfg.tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    if is_local(cfg):  # the state folder (SQLite lease store, secrets) exists only here
        env["EXFM_STATE_DIR"] = str(cfg.state_path)
        env[JOB_SECRETS_ENV] = str(write_job_secrets(cfg))
    if cfg.database.kind == "postgres":
        env["EXFM_DATABASE"] = "postgres"
    env.update(extra or {})
    return env


def write_job_secrets(cfg: ExfmConfig) -> Path:
    """``<state>/run/job-secrets.json`` (0600, folder 0700): the S3 keys, the embedded MLflow's
    login and, on PostgreSQL, the database URL, for jobs on the local head (read by
    :meth:`ExfmConfig.s3_credentials`, :func:`exfm.registry.mlflow_registry.connect` and
    :func:`exfm.config.load_config` through ``$EXFM_SECRETS_FILE``)."""
    from exfm.registry.mlflow_registry import TRACKING_PASSWORD_KEY, tracking_credentials
    from exfm.stack.procs import private_dir, write_private

    access, secret = cfg.s3_credentials()
    data = {"s3_access_key": access, "s3_secret_key": secret}
    creds = tracking_credentials(cfg)
    if creds is not None:
        data[TRACKING_PASSWORD_KEY] = creds[1]
    if cfg.database.kind == "postgres":
        data["database_url"] = cfg.database.url.get_secret_value()
    path = private_dir(cfg.state_path / "run") / "job-secrets.json"
    write_private(path, json.dumps(data))
    return path


def _ship_config(argv: list[str], staging: Path) -> list[str]:
    """Remote clusters: a ``--config`` path outside the checkout is copied into the uploaded
    working dir and the argument rewritten to its relative path."""
    out = list(argv)
    for i, a in enumerate(out[:-1]):
        if a == "--config":
            p = Path(out[i + 1]).resolve()
            try:
                out[i + 1] = str(p.relative_to(project_root()))
            except ValueError:
                (staging / SHIPPED_CONFIG).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, staging / SHIPPED_CONFIG)
                out[i + 1] = SHIPPED_CONFIG
    return out


def build_submission(cfg: ExfmConfig, entrypoint: list[str], env: dict[str, str] | None,
                     staging: Path | None = None) -> tuple[str, dict]:
    """(entrypoint command line, runtime_env) for ``entrypoint`` argv (after ``python``)."""
    envv = job_env(cfg, env)
    if is_local(cfg):
        pp = os.pathsep.join(p for p in [str(project_root()), os.environ.get("PYTHONPATH")] if p)
        argv = [sys.executable, *entrypoint]
        return shlex.join(argv), {"env_vars": {**envv, "PYTHONPATH": pp}}
    if staging is None:
        raise ValueError("a remote cluster needs a staging dir for the working_dir upload")
    shutil.copytree(project_root(), staging, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".venv", ".venv-*", ".exfm", ".git", "data",
                                                  "out", "__pycache__", "*.pyc", ".pytest_cache",
                                                  "cache"))
    argv = ["python", *_ship_config(entrypoint, staging)]
    return shlex.join(argv), {"working_dir": str(staging), "env_vars": envv,
                              "excludes": WORKING_DIR_EXCLUDES}


def ray_auth_token(cfg: ExfmConfig) -> str | None:
    """The token of a head started with token auth: ``RAY_AUTH_TOKEN`` env, else the embedded
    stack's generated one (None: no token auth)."""
    tok = os.environ.get("RAY_AUTH_TOKEN")
    if not tok and is_local(cfg):
        tok = read_state_secrets(cfg.state_path).get("ray_auth_token")
    return tok or None


def auth_headers(cfg: ExfmConfig) -> dict[str, str]:
    """Bearer token for the Jobs API (:func:`ray_auth_token`)."""
    tok = ray_auth_token(cfg)
    return {"Authorization": f"Bearer {tok}"} if tok else {}


def job_client(cfg: ExfmConfig):
    """A ``JobSubmissionClient`` for ``cfg.ray_dashboard_url``; a clear error if unreachable."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(cfg.ray_dashboard_url, headers=auth_headers(cfg))
    except Exception as e:  # noqa: BLE001
        raise RayJobError(f"Ray Jobs API at {cfg.ray_dashboard_url} is unreachable "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); is the stack up "
                          "(`exfm stack status`) or ray.address right?") from None


def _status(client, submission_id: str) -> str | None:
    try:
        return str(client.get_job_status(submission_id).value)
    except Exception as e:  # noqa: BLE001
        if "does not exist" in str(e) or "404" in str(e) or "not found" in str(e).lower():
            return None
        raise


def error_text(logs: str, message: str | None, lines: int = 15) -> str:
    """What to show when a job failed: the job's own ``ERROR <type>: <reason>`` line (printed by
    ``exfm.compute.entry.main_guard``), Ray's one-line reason, then the log tail."""
    errors = [ln for ln in logs.splitlines() if ln.startswith("ERROR ")]
    first = (message or "").strip().splitlines()[:1]
    tail = logs.strip().splitlines()[-lines:]
    return "\n".join([*errors[-1:], *first, "--- last log lines ---", *tail])


def submit_and_wait(cfg: ExfmConfig, entrypoint: list[str], submission_id: str,
                    env: dict[str, str] | None = None, log: Callable[[str], None] = print,
                    timeout_s: float | None = None, poll_s: float = 1.0) -> dict:
    """Run ``entrypoint`` (argv after ``python``, e.g. ``["-m", "ray_jobs.train_fm", "--day",
    D]``) as a Ray job; stream its logs into ``log``; return the job's ``EXFM_RESULT`` dict.

    Raises:
        RayJobError: the cluster is unreachable, the job failed or was stopped (with its error
            text), stayed PENDING past ``ray.pending_timeout_s``, ran past ``timeout_s``, or
            succeeded without a result line.
    """
    client = job_client(cfg)
    timeout_s = timeout_s or cfg.ray.job_timeout_s
    job_id = None
    for candidate in retry_ids(submission_id):
        status = _status(client, candidate)
        if status in (None, "PENDING", "RUNNING", "SUCCEEDED"):
            job_id = candidate
            break
        log(f"ray job {candidate} is {status}: this retry uses the next id")
    if job_id is None:
        raise RayJobError(f"ray job {submission_id}: {MAX_RETRY_IDS} attempts already failed")
    if status is None:
        with tempfile.TemporaryDirectory(prefix="exfm-job-") as staging:
            cmd, runtime_env = build_submission(cfg, entrypoint, env, Path(staging))
            client.submit_job(entrypoint=cmd, submission_id=job_id, runtime_env=runtime_env)
        log(f"ray job {job_id} submitted to {cfg.ray_dashboard_url}: {shlex.join(entrypoint)}")
    else:
        log(f"ray job {job_id} already exists ({status}); re-attaching")
    return wait(cfg, client, job_id, log=log, timeout_s=timeout_s, poll_s=poll_s)


def wait(cfg: ExfmConfig, client, job_id: str, log: Callable[[str], None] = print,
         timeout_s: float | None = None, poll_s: float = 1.0) -> dict:
    """Follow ``job_id`` to its end (see :func:`submit_and_wait`); stops it if interrupted."""
    timeout_s = timeout_s or cfg.ray.job_timeout_s
    stopped = {"flag": False}

    def stop(reason: str) -> None:
        if not stopped["flag"]:
            stopped["flag"] = True
            log(f"{reason}: stopping ray job {job_id}")
            try:
                client.stop_job(job_id)
            except Exception as e:  # noqa: BLE001
                log(f"could not stop ray job {job_id}: {e}")

    old = None

    def on_sigterm(signum, frame):  # Airflow marking the task failed must not leave a job running
        stop(f"caller got signal {signum}")
        if callable(old):
            old(signum, frame)  # the caller's own handler (e.g. Airflow's) still runs
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        old = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread: the caller owns signals
        old = None
    start = time.monotonic()
    printed, delay, logs, status = 0, poll_s, "", "PENDING"
    try:
        while True:
            status = _status(client, job_id) or "PENDING"
            logs = client.get_job_logs(job_id)
            for line in logs[printed:].splitlines():
                log(f"[{job_id}] {line}")
            printed = len(logs)
            if status in TERMINAL:
                break
            waited = time.monotonic() - start
            if status == "PENDING" and waited > cfg.ray.pending_timeout_s:
                stop("pending timeout")
                raise RayJobError(
                    f"ray job {job_id}: still PENDING after {waited:.0f}s (ray.pending_timeout_s): "
                    f"the cluster has no resources for its driver or its runtime env could not be "
                    f"set up; stopped it. {client.get_job_info(job_id).message or ''}")
            if waited > timeout_s:
                stop("job timeout")
                raise RayJobError(f"ray job {job_id}: still {status} after {waited:.0f}s "
                                  "(ray.job_timeout_s); stopped it")
            time.sleep(delay)
            delay = min(delay * 1.5, 10.0)
    except BaseException:
        stop("caller interrupted")
        raise
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    if status != "SUCCEEDED":
        info = client.get_job_info(job_id)
        raise RayJobError(f"ray job {job_id} {status}: " + error_text(logs, info.message))
    result = parse_result(logs)
    if result is None:
        raise RayJobError(f"ray job {job_id} succeeded but printed no {RESULT_PREFIX.strip()} line")
    return result
