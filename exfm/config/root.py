"""The whole configuration (``params.yaml``): its sections and the values resolved from them.

Endpoints left ``null`` resolve to the embedded stack on ``host`` and ``ports``; S3 keys come from
the environment, the file or the stack's generated secrets (never from :meth:`public_dump`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from exfm.config.base import ConfigError, StrictModel
from exfm.config.method import (DataConfig, DistillationConfig, ModelsConfig, VMConfig,
                                default_vms)
from exfm.config.schedule import FMConfig, ScheduleConfig
from exfm.config.offline import OfflineConfig
from exfm.config.promotion import (DeadlineConfig, FMBlessingConfig, FreshnessConfig,
                                   OncallConfig, PromotionConfig)
from exfm.config.services import (AirflowConfig, DasConfig, DatabaseConfig, PortsConfig,
                                  RayConfig, StorageConfig, TrackingConfig)
from exfm.config.validation import ValidationConfig


class ExfmConfig(StrictModel):
    """The whole platform's configuration (``params.yaml``)."""

    state_dir: str = ".exfm"
    host: str = "127.0.0.1"
    ports: PortsConfig = Field(default_factory=PortsConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    airflow: AirflowConfig = Field(default_factory=AirflowConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    distillation: DistillationConfig = Field(default_factory=DistillationConfig)
    das: DasConfig = Field(default_factory=DasConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    fm: FMConfig = Field(default_factory=FMConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    offline: OfflineConfig = Field(default_factory=OfflineConfig)
    fm_blessing: FMBlessingConfig = Field(default_factory=FMBlessingConfig)
    freshness: FreshnessConfig = Field(default_factory=FreshnessConfig)
    oncall: OncallConfig = Field(default_factory=OncallConfig)
    deadline: DeadlineConfig = Field(default_factory=DeadlineConfig)
    vms: list[VMConfig] = Field(default_factory=default_vms, min_length=1)

    @field_validator("vms")
    @classmethod
    def _unique_vm_names(cls, v: list[VMConfig]) -> list[VMConfig]:
        seen = [x.name for x in v]
        dup = sorted({n for n in seen if seen.count(n) > 1})
        if dup:
            raise ValueError(f"VM names must be unique; repeated: {dup}")
        return v

    # -- resolved values ------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).expanduser().resolve()

    @property
    def data_path(self) -> Path:
        """``data.dir`` made absolute against this process's working directory: what the
        config dumps for the stack's children carry (Airflow tasks run in the Airflow home, Ray
        jobs in their own working directory, where a relative ``data.dir`` names another
        folder)."""
        return Path(self.data.dir).expanduser().resolve()

    def dump_for_children(self, exclude: dict | None = None, mode: str = "json") -> dict:
        """``model_dump(mode=mode)`` for a child process (Airflow task, Ray job) or a Ray worker
        that loads it from another working directory (a Ray worker's is the head's): ``state_dir``
        and ``data.dir`` made absolute. ``mode="python"`` keeps secrets as ``SecretStr`` (a dump
        passed to a Ray task or actor in memory, never written)."""
        data = self.model_dump(mode=mode, exclude=exclude)
        data["state_dir"], data["data"]["dir"] = str(self.state_path), str(self.data_path)
        return data

    @property
    def s3_endpoint(self) -> str:
        return self.storage.endpoint or f"http://{self.host}:{self.ports.s3}"

    @property
    def tracking_uri(self) -> str:
        return self.tracking.uri or f"http://{self.host}:{self.ports.mlflow}"

    @property
    def ray_address(self) -> str:
        """GCS address (``host:port``) for ``ray.init``; the Jobs API is :attr:`ray_dashboard_url`."""
        return self.ray.address or f"{self.host}:{self.ports.ray_gcs}"

    @property
    def ray_dashboard_url(self) -> str:
        if self.ray.address and self.ray.address.startswith("http"):
            return self.ray.address
        return f"http://{self.host}:{self.ports.ray_dashboard}"

    def s3_credentials(self) -> tuple[str, str]:
        """(access key, secret key): env, then this file, then the stack's generated keys."""
        env_a = os.environ.get("EXFM_S3_ACCESS_KEY") or os.environ.get("AWS_ACCESS_KEY_ID")
        env_s = os.environ.get("EXFM_S3_SECRET_KEY") or os.environ.get("AWS_SECRET_ACCESS_KEY")
        if env_a and env_s:
            return env_a, env_s
        if self.storage.access_key and self.storage.secret_key:
            return (self.storage.access_key.get_secret_value(),
                    self.storage.secret_key.get_secret_value())
        secrets = {**read_state_secrets(self.state_path), **read_job_secrets()}
        if "s3_access_key" in secrets and "s3_secret_key" in secrets:
            return secrets["s3_access_key"], secrets["s3_secret_key"]
        raise ConfigError(
            "storage: no S3 credentials: set EXFM_S3_ACCESS_KEY/EXFM_S3_SECRET_KEY, "
            f"storage.access_key/secret_key, or run `exfm stack up` (writes {self.state_path}/secrets.json)"
        )

    def public_dump(self) -> dict[str, Any]:
        """Flat ``{dotted.key: value}`` without secrets, for logs and MLflow params."""
        data = self.model_dump(mode="json", exclude={"storage": {"access_key", "secret_key"},
                                                     "database": {"url"}})
        return _flatten(data)


# --- secrets kept by the embedded stack -------------------------------------------------------
SECRETS_FILE = "secrets.json"


def read_state_secrets(state_dir: Path) -> dict[str, str]:
    """The secrets ``exfm stack up`` generated (S3 keys, Airflow password); {} if none yet."""
    path = Path(state_dir) / SECRETS_FILE
    if not path.exists():
        return {}
    return json.loads(path.read_text())


JOB_SECRETS_ENV = "EXFM_SECRETS_FILE"


def read_job_secrets(env: dict[str, str] | None = None) -> dict[str, str]:
    """The 0600 file a Ray job on the local head was given (``$EXFM_SECRETS_FILE``): S3 keys and
    the database URL, kept out of the job's ``runtime_env``; {} when unset."""
    path = (os.environ if env is None else env).get(JOB_SECRETS_ENV)
    return json.loads(Path(path).read_text()) if path else {}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
