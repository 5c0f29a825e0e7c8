"""Options every command shares: ``--config`` and ``--set``."""

from __future__ import annotations

import functools
from typing import Callable

import click

from exfm.config import ExfmConfig, load_config


def config_options(fn: Callable) -> Callable:
    """Add ``--config``/``--set`` and pass the loaded :class:`ExfmConfig` as ``cfg``."""

    @click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                  help="params.yaml to use (default: $EXFM_CONFIG or ./params.yaml)")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                  help="override a config key, e.g. --set ray.num_workers=2 (repeatable)")
    @functools.wraps(fn)
    def wrapper(*args, config_path: str | None, overrides: tuple[str, ...], **kwargs):
        cfg: ExfmConfig = load_config(config_path, overrides)
        return fn(*args, cfg=cfg, **kwargs)

    return wrapper
