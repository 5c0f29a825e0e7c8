"""What every Ray entrypoint shares: ``--day D --config C --set k=v`` and the result line.

Each job is runnable as ``python -m ray_jobs.<name> --day D [--config C] [--set a.b=c]`` and
submittable through the Ray Jobs API (:mod:`exfm.rayjobs.submit`); its last stdout line is
``EXFM_RESULT {json}``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import date

from exfm.config import ExfmConfig, load_config
from exfm.rayjobs.submit import print_result

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
    configured one when run by hand."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or cfg.ray_address
    ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)


def main_guard(fn) -> None:
    """Run ``fn()``; on failure print one ``ERROR <type>: <reason>`` line (what
    :func:`exfm.rayjobs.submit.submit_and_wait` quotes as the job's error) and exit 1."""
    try:
        fn()
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        print(f"ERROR {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
