"""``exfm ray submit|logs|stop|status``: run the ``ray_jobs`` entrypoints on the configured
cluster through the Ray Jobs API (the same helper the DAG uses), follow and stop them."""

from __future__ import annotations

import re
import time

import click

from exfm.commands.options import day_callback, require_vm

JOBS = ["train_fm", "train_vm", "das_infer"]


def _cfg(config_path: str | None, overrides: tuple[str, ...]):
    from exfm.commands.options import note_config_in_a_parent
    from exfm.config import load_config

    cfg = load_config(config_path, overrides)
    note_config_in_a_parent(config_path, cfg)
    return cfg


def _config_opts(fn):
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="config override, forwarded to the job too (repeatable)")(fn)
    return click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                        help="params.yaml (default: $EXFM_CONFIG or ./params.yaml); the job "
                        "reads the same file")(fn)


def _check_id(_ctx, _param, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", value):
        raise click.BadParameter(f"{value!r}: letters, digits, '_', '.', '-' only (max 128)")
    return value


@click.group(name="ray")
def ray_cmd() -> None:
    """Submit, follow and stop Ray jobs (FM training, VM training, DAS inference)."""


@ray_cmd.command()
@click.argument("job", type=click.Choice(JOBS))
@click.option("--day", required=True, callback=day_callback, help="logical date YYYY-MM-DD")
@click.option("--vm", default=None, help="train_vm: the VM's name in config `vms`")
@click.option("--id", "submission_id", default=None, callback=_check_id,
              help="submission id (default: exfm-cli-<job>-<day>-<time>); an existing id is "
              "re-attached, not re-run")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="seconds before the job is stopped (default: ray.job_timeout_s)")
@_config_opts
def submit(job: str, day: str, vm: str | None, submission_id: str | None, timeout_s: float | None,
           config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Run JOB for DAY on the cluster, stream its logs, print its result. Ctrl-C stops the job."""
    import json
    from pathlib import Path

    from exfm.compute.submit import RayJobError, safe_submission_id, submit_and_wait

    cfg = _cfg(config_path, overrides)
    if job == "train_vm":
        require_vm(cfg, vm, "train_vm")
    argv = ["-m", f"ray_jobs.{job}", "--day", day]
    if config_path:
        argv += ["--config", str(Path(config_path).resolve())]
    for o in overrides:
        argv += ["--set", o]
    if vm:
        argv += ["--vm", vm]
    sid = submission_id or safe_submission_id("exfm-cli", job, day, vm, int(time.time()))
    try:
        result = submit_and_wait(cfg, argv, sid, log=lambda m: click.echo(m, err=True),
                                 timeout_s=timeout_s)
    except RayJobError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(result, indent=1, default=str))


@ray_cmd.command()
@click.argument("submission_id")
@click.option("--follow", "-f", is_flag=True, help="keep printing until the job ends")
@_config_opts
def logs(submission_id: str, follow: bool, config_path: str | None,
         overrides: tuple[str, ...]) -> None:
    """Print a job's logs."""
    from exfm.compute.submit import TERMINAL, job_client

    client = job_client(_cfg(config_path, overrides))
    printed = 0
    while True:
        text = client.get_job_logs(submission_id)
        click.echo(text[printed:], nl=False)
        printed = len(text)
        if not follow or str(client.get_job_status(submission_id).value) in TERMINAL:
            return
        time.sleep(2)


@ray_cmd.command()
@click.argument("submission_id")
@_config_opts
def stop(submission_id: str, config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Stop a running job."""
    from exfm.compute.submit import job_client

    client = job_client(_cfg(config_path, overrides))
    client.stop_job(submission_id)
    click.echo(f"{submission_id}: {client.get_job_status(submission_id).value}")


@ray_cmd.command()
@click.argument("submission_id", required=False)
@_config_opts
def status(submission_id: str | None, config_path: str | None, overrides: tuple[str, ...]) -> None:
    """One job's status and message, or every job the cluster knows."""
    from exfm.compute.submit import job_client

    client = job_client(_cfg(config_path, overrides))
    jobs = [client.get_job_info(submission_id)] if submission_id else client.list_jobs()
    for j in jobs:
        first = (j.message or "").splitlines()[:1]
        # a driver that joined the cluster itself (`exfm das augment`) has no submission id
        name = j.submission_id or f"(driver {j.job_id}, {getattr(j.type, 'value', j.type)})"
        click.echo(f"{name}\t{j.status.value}\t{first[0][:100] if first else ''}")
