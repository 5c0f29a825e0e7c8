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
from exfm.config.root import JOB_SECRETS_ENV, ExfmConfig, read_job_secrets

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


class _Loader(yaml.SafeLoader):
    """Safe YAML without timestamps: ``2026-03-01`` stays the text the config fields want (and a
    non-date like ``2026-13-45`` reaches the field's own check instead of crashing the parser)."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        first = " ".join(str(e).split())
        raise ConfigError(f"{source}: not valid YAML: {first}") from None


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
    return key, _yaml(raw, f"--set {item!r}") if raw != "" else ""


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


def config_in_a_parent(path: str | os.PathLike | None = None,
                       env: dict[str, str] | None = None) -> Path | None:
    """The nearest ``params.yaml`` above the working directory when none is chosen (no ``path``,
    no ``$EXFM_CONFIG``, none in the working directory): a command run from a sub-folder of a
    project would otherwise use the defaults, whose relative ``state_dir`` names another stack."""
    env = os.environ if env is None else env
    if path or env.get(CONFIG_ENV) or Path(DEFAULT_CONFIG_FILE).exists():
        return None
    for parent in Path.cwd().resolve().parents:
        if (parent / DEFAULT_CONFIG_FILE).is_file():
            return parent / DEFAULT_CONFIG_FILE
    return None


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
        loaded = _yaml(p.read_text(), source) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: top level must be a mapping, got {type(loaded).__name__}")
        data = loaded
    origin: dict[str, str] = {}  # dotted key -> where its value came from (last one wins)
    if env.get(JOB_SECRETS_ENV) and not env.get("EXFM_DATABASE_URL"):
        url = read_job_secrets(env).get("database_url")
        if url:  # a Ray job on the local head: the URL comes in a 0600 file, not its env
            _set_dotted(data, "database.url", url, f"${JOB_SECRETS_ENV}")
            origin["database.url"] = f"${JOB_SECRETS_ENV}"
    for var, key in ENV_OVERRIDES.items():
        if env.get(var):
            value = _yaml(env[var], f"${var}") if key != "database.url" else env[var]
            _set_dotted(data, key, value, f"${var}")
            origin[key] = f"${var}"
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(data, key, value, f"--set {item}")
        origin[key] = f"--set {item.split('=', 1)[0]}"
    try:
        return ExfmConfig.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "<root>"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{_blame(origin, loc, source)}: {loc}: {msg}")
        raise ConfigError("invalid config: " + "; ".join(lines)) from None


def _blame(origin: dict[str, str], loc: str, source: str) -> str:
    """The env var or ``--set`` that set ``loc`` (or a section above it), else the file."""
    parts = loc.split(".")
    for n in range(len(parts), 0, -1):
        hit = origin.get(".".join(parts[:n]))
        if hit:
            return hit
    return source
