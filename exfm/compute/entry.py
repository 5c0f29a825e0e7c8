"""What every Ray entrypoint (``ray_jobs/*.py``) shares: ``--day D --config C --set k=v``, joining
the cluster, and the result / error lines.

Each job is runnable as ``python -m ray_jobs.<name> --day D [--config C] [--set a.b=c]`` and
submittable through the Ray Jobs API (:mod:`exfm.compute.submit`); its last stdout line is
``EXFM_RESULT {json}``, a failure's ``ERROR <type>: <reason>``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import date

from exfm.compute.submit import print_result, ray_auth_token
from exfm.config import ExfmConfig, load_config

__all__ = ["job_parser", "load_job_config", "print_result", "init_ray", "main_guard"]


def _day(value: str) -> str:
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"--day {value!r}: expected YYYY-MM-DD") from None


def job_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--day", required=True, type=_day, help="logical date YYYY-MM-DD")
    p.add_argument("--config", default=None, help="params.yaml (default $EXFM_CONFIG or ./params.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return p


def load_job_config(args: argparse.Namespace) -> ExfmConfig:
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return load_config(args.config, args.overrides)


def init_ray(cfg: ExfmConfig) -> None:
    """Join the cluster this job was submitted to (RAY_ADDRESS is set by the Jobs API), or the
    configured one when run by hand or in-process. A no-op when Ray is already initialised."""
    # a client on the head's host must not rewrite 127.0.0.1 to the host IP (PITFALLS: Ray)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if "RAY_ADDRESS" not in os.environ:
        _embedded_ray_auth(cfg)
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or cfg.ray_address
    ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)


def _embedded_ray_auth(cfg: ExfmConfig) -> None:
    """A driver run by hand (``exfm das augment``, not a submitted job, which inherits it) joins
    the embedded head with the token `exfm stack up` generated, unless the env already names one:
    without it every GCS call fails with ``InvalidAuthToken`` and ``ray.init`` gives up after
    about 20 s with a bare ``ConnectionError``."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return
    token = ray_auth_token(cfg)
    if token:
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = token


def main_guard(fn) -> None:
    """Run ``fn()``; on failure print one ``ERROR <type>: <reason>`` line (what
    :func:`exfm.compute.submit.submit_and_wait` quotes as the job's error) and exit 1."""
    try:
        fn()
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        print(f"ERROR {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
