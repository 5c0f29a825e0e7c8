"""Loading: the YAML file, then env overrides, then ``--set a.b=c`` overrides, validated.

Every failure is a :class:`ConfigError` naming the file (or env var, or override) and the
dotted key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from exfm.config.base import ConfigError
from exfm.config.root import ExfmConfig

DEFAULT_CONFIG_FILE = "params.yaml"
CONFIG_ENV = "EXFM_CONFIG"

# env var -> dotted key. Applied after the file and before --set overrides.
ENV_OVERRIDES: dict[str, str] = {
    "EXFM_STATE_DIR": "state_dir",
    "EXFM_S3_ENDPOINT": "storage.endpoint",
    "EXFM_S3_BUCKET": "storage.bucket",
    "EXFM_TRACKING_URI": "tracking.uri",
    "EXFM_RAY_ADDRESS": "ray.address",
    "EXFM_DATABASE": "database.kind",
    "EXFM_DATABASE_URL": "database.url",
    "EXFM_USE_GPU": "ray.use_gpu",
}


def _set_dotted(data: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{source}: {dotted}: '{p}' is not a section")
        node = nxt
    node[parts[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b=c`` -> (``a.b``, YAML-parsed ``c``)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. ray.num_workers=2")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: empty key")
    return key, yaml.safe_load(raw) if raw != "" else ""


def resolve_config_path(path: str | os.PathLike | None) -> Path | None:
    """Explicit path, else ``$EXFM_CONFIG``, else ``./params.yaml`` if it exists, else None."""
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"{p}: config file not found")
        return p
    env = os.environ.get(CONFIG_ENV)
    if env:
        return resolve_config_path(env)
    p = Path(DEFAULT_CONFIG_FILE)
    return p if p.exists() else None


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = (),
                env: dict[str, str] | None = None) -> ExfmConfig:
    """Load, apply env overrides and ``key=value`` overrides, validate.

    Raises:
        ConfigError: naming the file and every offending dotted key with its rule.
    """
    env = os.environ if env is None else env
    p = resolve_config_path(path)
    source = str(p) if p else "<defaults>"
    data: dict[str, Any] = {}
    if p is not None:
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: top level must be a mapping, got {type(loaded).__name__}")
        data = loaded
    for var, key in ENV_OVERRIDES.items():
        if env.get(var):
            _set_dotted(data, key, yaml.safe_load(env[var]) if key != "database.url" else env[var],
                        f"${var}")
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(data, key, value, f"--set {item}")
    try:
        return ExfmConfig.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "<root>"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{source}: {loc}: {msg}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None
