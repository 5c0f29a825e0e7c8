"""``exfm stack up|down|status``: the embedded services (SeaweedFS, MLflow, Ray, Airflow)."""

from __future__ import annotations

import time

import click

from exfm.commands.options import config_options
from exfm.stack.services import SERVICES

SERVICE_CHOICE = click.Choice(SERVICES)


@click.group()
def stack() -> None:
    """Start, stop and inspect the embedded stack (state under state_dir, ports from ports.*)."""


def _print_status(statuses) -> None:
    for s in statuses:
        mark = "healthy" if s.healthy else ("DOWN" if s.pid is None else "UNHEALTHY")
        pid = f"pid {s.pid}" if s.pid else ""
        click.echo(f"  {s.name:<8} {mark:<10} {s.url:<28} {pid:<10} {s.detail}")


@stack.command()
@click.argument("services", nargs=-1, type=SERVICE_CHOICE)
@click.option("--dags-folder", type=click.Path(file_okay=False), default=None,
              help="Airflow dags folder (default: the repository's dags/)")
@config_options
def up(cfg, services: tuple[str, ...], dags_folder: str | None) -> None:
    """Start SERVICES (default: all) and what they depend on; already running ones are kept."""
    from pathlib import Path

    from exfm.stack import StackError, stack_up

    t = time.monotonic()
    try:
        statuses = stack_up(cfg, list(services) or None, log=click.echo,
                            dags_folder=Path(dags_folder).resolve() if dags_folder else None)
    except StackError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"stack up in {time.monotonic() - t:.1f} s (state: {cfg.state_path})")
    _print_status(statuses)
    if not all(s.healthy for s in statuses):
        raise click.ClickException("some services are not healthy")
    click.echo("client environment: eval \"$(exfm stack env)\"")


@stack.command()
@click.argument("services", nargs=-1, type=SERVICE_CHOICE)
@config_options
def down(cfg, services: tuple[str, ...]) -> None:
    """Stop SERVICES (default: all) that `up` started; data is kept."""
    from exfm.stack import stack_down

    t = time.monotonic()
    stack_down(cfg, list(services) or None, log=click.echo)
    click.echo(f"stack down in {time.monotonic() - t:.1f} s")


@stack.command()
@config_options
def status(cfg) -> None:
    """Show each service's URL and health; exit 1 if one is down."""
    from exfm.stack import stack_status

    statuses = stack_status(cfg)
    click.echo(f"state: {cfg.state_path} (logs: {cfg.state_path / 'logs'}, "
               f"secrets: {cfg.state_path / 'secrets.json'})")
    _print_status(statuses)
    down = [s.name for s in statuses if not s.healthy]
    if down:
        # click's Exit is swallowed by exfm.cli.main (standalone_mode=False): fail with a reason
        raise click.ClickException(f"not healthy: {', '.join(down)}")


@stack.command("env")
@config_options
def env_cmd(cfg) -> None:
    """Print `export` lines a shell needs to reach the stack: S3, MLflow, Ray, and Airflow's CLI
    (AIRFLOW_HOME, AIRFLOW__*, PATH with the venv first). Holds secrets: do not log.

    \b
    eval "$(.venv/bin/exfm stack env)"
    airflow dags unpause exfm_daily
    airflow backfill create --dag-id exfm_daily --from-date 2026-01-01 --to-date 2026-01-08
    """
    import shlex

    from exfm.stack.services import airflow_shell_env

    for k, v in sorted(airflow_shell_env(cfg).items()):
        click.echo(f"export {k}={shlex.quote(v)}")
