"""Options every command shares: ``--config``, ``--set`` and the checks of ``--day``/``--days``,
done before anything is contacted or written."""

from __future__ import annotations

import functools
import re
from datetime import date
from pathlib import Path
from typing import Callable

import click

from exfm.config import ExfmConfig, config_in_a_parent, load_config


def config_options(fn: Callable) -> Callable:
    """Add ``--config``/``--set`` and pass the loaded :class:`ExfmConfig` as ``cfg``."""

    @click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                  help="params.yaml to use (default: $EXFM_CONFIG or ./params.yaml)")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                  help="override a config key, e.g. --set ray.num_workers=2 (repeatable)")
    @functools.wraps(fn)
    def wrapper(*args, config_path: str | None, overrides: tuple[str, ...], **kwargs):
        cfg: ExfmConfig = load_config(config_path, overrides)
        note_config_in_a_parent(config_path, cfg)
        return fn(*args, cfg=cfg, **kwargs)

    return wrapper


def note_config_in_a_parent(config_path: str | None, cfg: ExfmConfig) -> None:
    """Say on stderr when the defaults are used although a project's params.yaml is above."""
    above = config_in_a_parent(config_path)
    if above is not None:
        click.echo(f"exfm: no params.yaml in {Path.cwd()}: using the defaults (state_dir "
                   f"{cfg.state_path}); the project's is {above}: run from {above.parent} or "
                   f"pass --config {above}", err=True)


DAY_RULE = "a calendar date written YYYY-MM-DD"


def check_day(text: str) -> str:
    """``text`` if it is a real calendar date written ``YYYY-MM-DD``; ValueError otherwise."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text or ""):
        raise ValueError(f"{text!r} is not {DAY_RULE}")
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError as e:
        raise ValueError(f"{text!r} is not {DAY_RULE} ({e})") from None


def day_callback(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """click callback of a ``--day`` option."""
    try:
        return None if value is None else check_day(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def days_callback(_ctx: click.Context, _param: click.Parameter,
                  value: str | None) -> list[str] | None:
    """click callback of a comma-separated ``--days`` option: a list of checked days or None."""
    if value is None:
        return None
    days = [d.strip() for d in value.split(",") if d.strip()]
    if not days:
        raise click.BadParameter(f"{value!r} names no day (comma-separated YYYY-MM-DD)")
    try:
        return [check_day(d) for d in days]
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def require_days_in(directory: str, days: list[str] | None) -> None:
    """Refuse ``--days`` naming a day the dataset folder has no ``day=`` folder for."""
    from exfm.data.schema import list_days

    if days is None:
        return
    have = set(list_days(directory))
    missing = [d for d in days if d not in have]
    if missing:
        raise click.BadParameter(f"{', '.join(missing)}: no day=<day> folder in {directory}",
                                 param_hint="'--days'")


def require_vm(cfg: ExfmConfig, vm: str | None, what: str) -> None:
    """``--vm``: needed by ``what`` and a name from config ``vms``."""
    if not vm:
        raise click.UsageError(f"{what} needs --vm NAME (one of {[v.name for v in cfg.vms]})")
    if vm not in {v.name for v in cfg.vms}:
        raise click.BadParameter(f"no VM named {vm!r} in config vms "
                                 f"(configured: {[v.name for v in cfg.vms]})", param_hint="'--vm'")
