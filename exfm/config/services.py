"""Where the platform runs: ports, the object store, MLflow, the databases, Ray, Airflow, DAS.

Sections ``ports``, ``storage``, ``tracking``, ``database``, ``ray``, ``airflow``, ``das`` of
``params.yaml``. ``null`` endpoints mean the embedded stack (``exfm stack up``).
"""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator

from exfm.config.base import StrictModel
from exfm.config.kinds import DatabaseKind


class PortsConfig(StrictModel):
    """Ports of the embedded stack, all bound to ``host``. Change them to run two stacks."""

    s3: int = Field(8333, ge=1024, le=65535, description="SeaweedFS S3 API")
    seaweed_master: int = Field(9333, ge=1024, le=55535, description="SeaweedFS master (+10000 gRPC)")
    seaweed_volume: int = Field(9340, ge=1024, le=55535, description="SeaweedFS volume (+10000 gRPC)")
    seaweed_filer: int = Field(8888, ge=1024, le=55535, description="SeaweedFS filer (+10000 gRPC)")
    mlflow: int = Field(5000, ge=1024, le=65535)
    ray_gcs: int = Field(6380, ge=1024, le=65535, description="Ray GCS (6379 is Redis's port)")
    ray_dashboard: int = Field(8265, ge=1024, le=65535, description="Ray dashboard + Jobs API")
    ray_client: int = Field(10001, ge=1024, le=65535)
    airflow: int = Field(8080, ge=1024, le=65535, description="Airflow api-server (UI)")
    airflow_log: int = Field(8793, ge=1024, le=65535, description="Airflow worker log server")
    airflow_trigger_log: int = Field(8794, ge=1024, le=65535)


class StorageConfig(StrictModel):
    """The S3 object store. ``endpoint: null`` means the embedded SeaweedFS on ``ports.s3``.

    Credentials: env ``EXFM_S3_ACCESS_KEY``/``EXFM_S3_SECRET_KEY`` (or ``AWS_ACCESS_KEY_ID``/
    ``AWS_SECRET_ACCESS_KEY``), else this section, else the keys ``exfm stack up`` generated into
    the state folder.
    """

    endpoint: str | None = None
    bucket: str = Field("exfm", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    superseded_grace_s: float = Field(
        3600.0, ge=0, description="parts of a replaced day version are kept this long after the "
        "new manifest commits (a reader holding the old manifest still finds them), then collected")
    region: str = "us-east-1"
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint_has_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v


class TrackingConfig(StrictModel):
    """MLflow. ``uri: null`` means the embedded server on ``ports.mlflow``."""

    uri: str | None = None
    experiment_prefix: str = "exfm"
    auth_cache_ttl_s: int = Field(
        300, ge=0, description="the embedded server's basic-auth cache (MLflow's "
        "auth_cache_ttl_seconds): a checked login is not hashed again for this long; 0 = hash "
        "every request (three to four slow password hashes per request)")


class DatabaseConfig(StrictModel):
    """Where Airflow's metadata, MLflow's backend and our own tables (the lease store) live.

    ``sqlite``: files under the state folder (embedded default). ``postgres``: ``url`` is an admin
    connection; the stack creates ``<db_prefix>_airflow``, ``<db_prefix>_mlflow`` and
    ``<db_prefix>_exfm`` on that server.
    """

    kind: DatabaseKind = "sqlite"
    url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/postgres")
    db_prefix: str = Field("exfm", pattern=r"^[a-z][a-z0-9_]{0,40}$")

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, v: SecretStr) -> SecretStr:
        # the message must not echo the URL: it may hold a password
        if not re.match(r"^postgres(ql)?(\+\w+)?://", v.get_secret_value()):
            raise ValueError("must be a postgresql://user[:password]@host[:port]/db URL")
        return v


class RayConfig(StrictModel):
    """Ray cluster and the scaling of training jobs. ``address: null`` = the embedded head."""

    address: str | None = None
    num_workers: int = Field(1, ge=1, le=1024, description="Ray Train workers for the FM job")
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False
    gpus_per_worker: float = Field(1.0, ge=0)
    max_failures: int = Field(2, ge=0)
    job_timeout_s: int = Field(3600, ge=10, description="Ray job wall-clock limit (PENDING included)")
    head_num_cpus: int | None = Field(None, ge=1, description="CPUs the embedded head advertises")
    checkpoints_per_day: int = Field(
        4, ge=1, description="FM job: checkpoints to the bucket per day (chunks of each worker's "
        "shard); a killed worker resumes from the last one, losing at most one chunk of work")
    pending_timeout_s: int = Field(
        600, ge=5, description="a submitted job still PENDING after this (no resources for its "
        "driver, runtime env stuck) is stopped; Ray itself never times it out")


class AirflowConfig(StrictModel):
    parallelism: int = Field(4, ge=1, le=64)
    admin_user: str = "admin"


class DasConfig(StrictModel):
    """The Data Augmentation Service: batch inference of the leased FM snapshot."""

    lease_ttl_s: float = Field(86400.0, gt=0, description="lease length; extended while no newer snapshot")
    keep_last: int = Field(3, ge=1, description="FM versions never garbage-collected")
    max_actors: int = Field(2, ge=1, description="Ray Data actor-pool size for FM inference")
    batch_size: int = Field(8192, ge=1, description="rows per inference batch")
    fm_model: str = Field("exfm-fm", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$",
                          description="registered model of the FM snapshots (the SPD) and the "
                          "lease store's key; tests use their own")
    refresh_s: float = Field(
        10.0, gt=0, description="how often each DAS worker polls the registry (updater) and the "
        "lease (loader); a new snapshot loads in the background while the old one serves")
