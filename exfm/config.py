"""Typed configuration: one YAML file (``params.yaml``) validated into pydantic models.

The same file drives the CLI, the DAGs, the Ray jobs and DVC. Unknown keys and bad values fail
with a :class:`ConfigError` naming the file and the dotted key. Endpoints and secrets can be
overridden from the environment (see :data:`ENV_OVERRIDES`); secrets never appear in
:meth:`ExfmConfig.public_dump` (what goes to logs and MLflow params).

Example:
    >>> cfg = load_config(None, ["ray.num_workers=2"])
    >>> cfg.ray.num_workers
    2
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

DEFAULT_CONFIG_FILE = "params.yaml"
CONFIG_ENV = "EXFM_CONFIG"


class ConfigError(ValueError):
    """A config file or override broke a rule; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PortsConfig(_Strict):
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


class StorageConfig(_Strict):
    """The S3 object store. ``endpoint: null`` means the embedded SeaweedFS on ``ports.s3``.

    Credentials: env ``EXFM_S3_ACCESS_KEY``/``EXFM_S3_SECRET_KEY`` (or ``AWS_ACCESS_KEY_ID``/
    ``AWS_SECRET_ACCESS_KEY``), else this section, else the keys ``exfm stack up`` generated into
    the state folder.
    """

    endpoint: str | None = None
    bucket: str = Field("exfm", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    region: str = "us-east-1"
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint_has_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v


class TrackingConfig(_Strict):
    """MLflow. ``uri: null`` means the embedded server on ``ports.mlflow``."""

    uri: str | None = None
    experiment_prefix: str = "exfm"


class DatabaseConfig(_Strict):
    """Where Airflow's metadata, MLflow's backend and our own tables (the lease store) live.

    ``sqlite``: files under the state folder (embedded default). ``postgres``: ``url`` is an admin
    connection; the stack creates ``<db_prefix>_airflow``, ``<db_prefix>_mlflow`` and
    ``<db_prefix>_exfm`` on that server.
    """

    kind: Literal["sqlite", "postgres"] = "sqlite"
    url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/postgres")
    db_prefix: str = Field("exfm", pattern=r"^[a-z][a-z0-9_]{0,40}$")


class RayConfig(_Strict):
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


class AirflowConfig(_Strict):
    parallelism: int = Field(4, ge=1, le=64)
    admin_user: str = "admin"


class GeneratorConfig(_Strict):
    """Knobs of the synthetic stream (see exfm/data/generator.py for what each one does)."""

    days: int = Field(8, ge=1)
    rows_per_day: int = Field(20000, ge=10)
    seed: int = 0
    start_date: str = Field("2026-01-01", pattern=r"^\d{4}-\d{2}-\d{2}$")
    n_domains: int = Field(3, ge=1)
    tasks: list[str] = Field(default_factory=lambda: ["click", "like"], min_length=1)
    n_users: int = Field(5000, ge=10)
    n_items: int = Field(2000, ge=10)
    drift: float = Field(1.0, ge=0, description="0 = stationary; 1 = default drift strength")
    base_rate: float = Field(0.03, gt=0, lt=0.5, description="mean positive rate of the first task")
    task_rate_ratio: float = Field(
        0.35, gt=0, le=1, description="each later task's day-1 positive rate = the previous one's x this")
    task_correlation: float = Field(
        0.6, ge=0, le=1, description="cosine between the first task's item factors and a later task's")
    latent_dim: int = Field(16, ge=2, description="width of the hidden user/item interest factors")
    n_categories: int = Field(50, ge=2, description="item categories (sparse item_cat)")
    n_user_segments: int = Field(20, ge=2, description="coarse user segments (sparse user_seg)")
    seq_len: int = Field(20, ge=1, description="max_len of the behaviour sequence hist_item")
    organic_per_user: float = Field(
        4.0, ge=0, description="mean organic engagements per active user per day (feed hist_item)")
    affinity_weight: float = Field(0.8, ge=0, description="weight of user x item factors in the truth")
    sequence_weight: float = Field(0.4, ge=0, description="weight of sequence x item similarity")
    domain_spread: float = Field(0.6, ge=0, description="logit gap between the lowest and highest domain")
    domain_shift: float = Field(
        0.5, ge=0, description="how far each domain's user x item interaction departs from the shared one")
    home_domain_prob: float = Field(0.8, ge=0, le=1, description="share of a user's rows in its home domain")
    fm_feature_noise: float = Field(
        1.5, ge=0, description="noise sd of the fm_only cross-service features (signal sd ~1)")
    user_arrival: float = Field(0.08, ge=0, description="new users per day, share of day-1 users (x drift)")
    user_departure: float = Field(0.04, ge=0, le=1, description="share of active users leaving per day (x drift)")
    item_arrival: float = Field(0.12, ge=0, description="new items per day, share of day-1 items (x drift)")
    item_departure: float = Field(0.08, ge=0, le=1, description="share of active items leaving per day (x drift)")
    interest_walk: float = Field(
        0.25, ge=0, le=1, description="per-day random-walk step of user interests (x drift, capped at 1)")
    popularity_walk: float = Field(0.3, ge=0, description="per-day sd of item log-popularity steps (x drift)")
    truth_columns: bool = Field(
        False, description="also write truth_<task> (the hidden true probability) for analysis; "
        "not in the schema, so no model reads it")


class DataConfig(_Strict):
    """The source of days: a folder in the bring-your-own format, or the generator's output."""

    dir: str = "data/synthetic"
    source: Literal["generate", "movielens", "dir"] = "generate"
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    label_window_days: int = Field(1, ge=0, description="late labels older than this are dropped")


class ModelsConfig(_Strict):
    """Model zoo choices and the one-pass trainer's defaults (shared by FM and VMs)."""

    fm: Literal["dcn", "dcnv2", "dmin", "mtl"] = "dcnv2"
    embed_dim: int = Field(16, ge=2, description="VM embedding width")
    fm_embed_dim: int = Field(
        64, ge=2, description="FM embedding width; with fm_hidden it sizes the FM at >= 15x a "
        "default VM on the generator's default vocabularies (the paper: 15x-600x)")
    batch_size: int = Field(512, ge=1)
    lr: float = Field(1e-3, gt=0, description="Adam lr of the dense parameters")
    embedding_lr: float = Field(
        1e-2, gt=0, description="lr of the embedding tables (10x lr: in one pass most rows "
        "are seen a few times). 3e-3/3e-2 was noisier and worse on the synthetic stream")
    weight_decay: float = Field(0.0, ge=0)
    torch_threads: int | None = Field(None, ge=1, description="None = cores available")
    seed: int = 0
    min_steps_per_day: int = Field(
        200, ge=0, description="one pass over a small day at batch_size is too few optimizer "
        "steps to learn anything: the batch shrinks (not below min_batch_size) so that a day "
        "gives at least this many steps; 0 = always batch_size")
    min_batch_size: int = Field(64, ge=1, description="floor of the shrunk batch")
    fm_hidden: list[int] = Field(default_factory=lambda: [1024, 1024, 1024, 512],
                                 description="FM deep tower widths (dcn, dcnv2, dmin, mtl bottom)")
    fm_cross_layers: int = Field(3, ge=1, description="cross layers of dcn/dcnv2/mtl")
    fm_cross_rank: int | None = Field(
        None, ge=1, description="dcnv2: None = full-rank W; r = mixture of low-rank experts")
    fm_cross_experts: int = Field(4, ge=1, description="dcnv2 low rank: experts under the gate")
    fm_interests: int = Field(4, ge=1, description="dmin: interests (attention heads)")
    fm_tower_hidden: list[int] = Field(default_factory=lambda: [256, 128],
                                       description="mtl: widths of each task's tower")
    vm_hidden: list[int] = Field(default_factory=lambda: [128, 64],
                                 description="VM deep part (deepfam DNN, dlrm top, towers)")
    head_hidden: list[int] = Field(
        default_factory=lambda: [16], description="VM heads (serving, AH, SA): hidden widths of "
        "each head's MLP (METHOD.md eqs. 1, 3: MLP_s, MLP_d); [] = linear heads started at the "
        "textbook sum. Linear heads on a shared h cannot keep the teacher out of the served "
        "prediction (Theorem 3.1): the AH's pull moves the shared linear term both read")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after hidden layers")
    embedding_optimizer: Literal["sparse_adam", "adam"] = Field(
        "sparse_adam", description="optimizer of the embedding tables (at embedding_lr): "
        "sparse_adam = sparse gradients, only looked-up rows move (CPU, gloo DDP); adam = dense "
        "gradients (NCCL DDP cannot all-reduce sparse ones)")
    log_every: int = Field(50, ge=1, description="trainer: report every this many steps")


class DistillationConfig(_Strict):
    """Equations 1-7 of METHOD.md. gs = alpha, ls = beta, lw = w."""

    mode: Literal["none", "vanilla", "ah", "ah_sa"] = "ah_sa"
    gs: float = Field(2.0, gt=0)
    ls: float = Field(1.0, ge=1)
    lw: float = Field(1.0, ge=0)
    sa_weight: float = Field(1.0, ge=0)
    sa_hidden: int = Field(16, ge=1)
    sa_lr: float = Field(1e-2, gt=0)
    tune: bool = Field(
        True, description="AH and AH+SA VMs pick (gs, ls, lw) themselves on an earlier day, never "
        "the scored one: one fresh VM per candidate of tune_gs x tune_ls x tune_lw trains one "
        "pass on an earlier day with the FM's predictions and is scored on the day after it; "
        "the best by tune_metric wins (ties keep the earlier candidate; gs/ls/lw above come "
        "first). False = use gs/ls/lw as set")
    tune_gs: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0],
                                 description="GS (alpha) candidates")
    tune_ls: list[float] = Field(default_factory=lambda: [1.0, 2.0],
                                 description="LS (beta) candidates")
    tune_lw: list[float] = Field(default_factory=lambda: [1.0, 3.0],
                                 description="LW (w) candidates")
    tune_metric: Literal["auc", "ne"] = Field(
        "auc", description="what the tuning day ranks candidates by (auc: higher, ne: lower)")
    tune_every_days: int = Field(
        7, ge=1, description="daily pipeline: a VM re-tunes when its last choice is this many "
        "days old (in between it keeps the triple its previous version recorded)")
    tune_max_rows: int | None = Field(
        100_000, ge=1, description="thin each tuning day to at most this many rows (every k-th "
        "row, order kept); None = every row")

    @field_validator("tune_gs", "tune_ls", "tune_lw")
    @classmethod
    def _candidates(cls, v: list[float], info) -> list[float]:
        if not v:
            raise ValueError("needs at least one candidate")
        low, strict = {"tune_gs": (0.0, True), "tune_ls": (1.0, False),
                       "tune_lw": (0.0, False)}[info.field_name]
        bad = [x for x in v if x < low or (strict and x == low)]
        if bad:
            raise ValueError(f"candidates {bad} out of range (must be {'>' if strict else '>='} "
                             f"{low:g})")
        return v


class DasConfig(_Strict):
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


class VMConfig(_Strict):
    """One serving model of the fan-out: its slice of the shared data and its objective."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    model: Literal["fam", "fmfam", "deepfam", "dlrm", "two_tower"] = "deepfam"
    task: str = "click"
    domain: str | None = None
    stage: Literal["retrieval", "early", "late"] | None = None
    mode: Literal["none", "vanilla", "ah", "ah_sa"] | None = Field(
        None, description="None = distillation.mode"
    )
    control: bool = Field(True, description="also train the same VM without FM beside it")


def _default_vms() -> list[VMConfig]:
    return [
        VMConfig(name="d0-click", model="deepfam", task="click", domain="d0"),
        VMConfig(name="d1-click", model="fam", task="click", domain="d1"),
    ]


class ExfmConfig(_Strict):
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
    vms: list[VMConfig] = Field(default_factory=_default_vms)

    # -- resolved values ------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).expanduser().resolve()

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
        secrets = read_state_secrets(self.state_path)
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
    import json

    path = Path(state_dir) / SECRETS_FILE
    if not path.exists():
        return {}
    return json.loads(path.read_text())


# --- loading ----------------------------------------------------------------------------------
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


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


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
