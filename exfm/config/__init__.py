"""Typed configuration: one YAML file (``params.yaml``) validated into pydantic models.

The same file drives the CLI, the DAGs, the Ray jobs and DVC. Unknown keys and bad values fail
with a :class:`ConfigError` naming the file and the dotted key. Endpoints and secrets can be
overridden from the environment (see :data:`ENV_OVERRIDES`); secrets never appear in
:meth:`ExfmConfig.public_dump` (what goes to logs and MLflow params).

By concern: ``kinds`` (the allowed kinds and modes, each one ``Literal``), ``method`` (data,
models, distillation, VMs), ``services`` (ports, storage, tracking, database, Ray, Airflow,
DAS), ``root`` (:class:`ExfmConfig` and its resolved values), ``load`` (file, env, overrides).
Import from ``exfm.config``.

Example:
    >>> cfg = load_config(None, ["ray.num_workers=2"])
    >>> cfg.ray.num_workers
    2
"""

from exfm.config.base import ConfigError
from exfm.config.load import (CONFIG_ENV, DEFAULT_CONFIG_FILE, ENV_OVERRIDES, config_in_a_parent,
                              load_config, parse_override, resolve_config_path)
from exfm.config.method import (DataConfig, DistillationConfig, GeneratorConfig, ModelsConfig,
                                VMConfig)
from exfm.config.root import SECRETS_FILE, ExfmConfig, read_state_secrets
from exfm.config.services import (AirflowConfig, DasConfig, DatabaseConfig, PortsConfig,
                                  RayConfig, StorageConfig, TrackingConfig)

__all__ = ["ConfigError", "CONFIG_ENV", "DEFAULT_CONFIG_FILE", "ENV_OVERRIDES", "load_config",
           "parse_override", "resolve_config_path", "config_in_a_parent", "DataConfig",
           "DistillationConfig", "GeneratorConfig", "ModelsConfig", "VMConfig", "SECRETS_FILE",
           "ExfmConfig", "read_state_secrets", "AirflowConfig", "DasConfig", "DatabaseConfig", "PortsConfig",
           "RayConfig", "StorageConfig", "TrackingConfig"]
