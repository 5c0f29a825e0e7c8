"""The embedded services: SeaweedFS (S3), MLflow, a Ray head and Airflow 3.

Each service knows its ports (all derived from ``cfg.ports`` so two stacks can coexist), the
processes it runs (:class:`ProcSpec`), a health check and a start timeout. ``exfm.stack`` starts
and stops them in dependency order.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets as _secrets
import shutil
import signal
import sys
from pathlib import Path
from typing import Literal, get_args

from exfm import paths
from exfm.config import SECRETS_FILE, ExfmConfig, read_state_secrets
from exfm.registry.mlflow_registry import (TRACKING_PASSWORD_KEY, TRACKING_USER,
                                           tracking_credentials)
from exfm.stack.procs import MARK_KEYS, ProcSpec, http_get

Service = Literal["s3", "mlflow", "ray", "airflow"]
SERVICES: list[str] = list(get_args(Service))  # in start order
DEPENDS = {"s3": [], "mlflow": ["s3"], "ray": [], "airflow": []}
# generous: on a loaded 2-core machine MLflow took 60 s and Ray 40 s (7-10 s when idle)
START_TIMEOUT = {"s3": 90.0, "mlflow": 240.0, "ray": 240.0, "airflow": 360.0}
# every process the stack starts carries these in its environment (inherited by Ray workers, job
# drivers and Airflow task processes), so `down` can find exactly this stack's leftovers
STACK_ID_ENV, STACK_SERVICE_ENV = MARK_KEYS
# a line the service prints once it is fully up: `ray start` gives up after 30 s if its raylet has
# not registered with the GCS (seen under load), after the dashboard already answered
READY_LINE = {"ray": "Ray runtime started."}
# starts that may be retried (a timed-out `ray start` on a loaded machine usually works next time)
START_RETRIES = {"s3": 0, "mlflow": 1, "ray": 1, "airflow": 0}
START_MARK = "=== exfm stack: starting "

RAY_WORKER_PORTS = 100  # min..max worker ports per head
RAY_OBJECT_STORE_BYTES = 2 * 1024**3


# --- layout ------------------------------------------------------------------------------------
def run_dir(cfg: ExfmConfig) -> Path:
    return cfg.state_path / "run"


def log_dir(cfg: ExfmConfig) -> Path:
    return cfg.state_path / "logs"


def ray_temp_dir(cfg: ExfmConfig) -> Path:
    """Short temp dir for the Ray head (unix socket paths must stay under ~107 chars)."""
    h = hashlib.sha1(str(cfg.state_path).encode()).hexdigest()[:8]
    return Path("/tmp") / f"exfm-ray-{h}"


def stack_id(cfg: ExfmConfig) -> str:
    """A short id of this stack (its state folder), stamped into every process it starts."""
    return hashlib.sha1(str(cfg.state_path).encode()).hexdigest()[:12]


def seaweed_socket_files(cfg: ExfmConfig) -> list[Path]:
    """Unix sockets SeaweedFS leaves in /tmp, named after this stack's ports."""
    p = service_ports(cfg)["s3"]
    names = [f"s3-{p['s3']}", f"s3-grpc-{p['s3-grpc']}", f"filer-{p['filer']}",
             f"filer-grpc-{p['filer-grpc']}", f"master-grpc-{p['master-grpc']}",
             f"volume-grpc-{p['volume-grpc']}", f"admin-grpc-{p['admin-grpc']}"]
    return [Path("/tmp") / f"seaweedfs-{n}.sock" for n in names]


def stale_seaweed_socket_files(cfg: ExfmConfig) -> list[Path]:
    """This stack's SeaweedFS socket files that no live server holds: those whose TCP port nothing
    listens on. The names carry only the port, so another stack on the same ports (a second
    checkout, a bench) shares them: removing a live one cuts the running S3 gateway off its
    master (every request then fails with InternalError)."""
    from exfm.stack.procs import port_in_use

    return [f for f in seaweed_socket_files(cfg)
            if f.exists() and not port_in_use(cfg.host, int(f.stem.rsplit("-", 1)[1]))]


def airflow_home(cfg: ExfmConfig) -> Path:
    return cfg.state_path / "airflow"


def config_dump_path(cfg: ExfmConfig) -> Path:
    return cfg.state_path / "exfm-config.yaml"


def venv_bin() -> Path:
    return Path(sys.executable).parent


def _exe(name: str) -> str:
    p = venv_bin() / name
    if p.exists():
        return str(p)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"'{name}' not found next to {sys.executable} nor on PATH")
    return found


# --- ports -------------------------------------------------------------------------------------
def service_ports(cfg: ExfmConfig) -> dict[str, dict[str, int]]:
    """Every port each service binds, derived from ``cfg.ports`` (label -> port)."""
    p = cfg.ports
    admin = p.seaweed_master + 1
    gcs = p.ray_gcs
    ray = {
        "gcs": gcs, "dashboard": p.ray_dashboard, "client": p.ray_client,
        "node-manager": gcs + 1, "object-manager": gcs + 2, "dashboard-agent-grpc": gcs + 3,
        "dashboard-agent-listen": gcs + 4, "metrics-export": gcs + 5, "runtime-env-agent": gcs + 6,
    }
    return {
        "s3": {"s3": p.s3, "s3-grpc": p.s3 + 10000, "master": p.seaweed_master,
               "master-grpc": p.seaweed_master + 10000, "volume": p.seaweed_volume,
               "volume-grpc": p.seaweed_volume + 10000, "filer": p.seaweed_filer,
               "filer-grpc": p.seaweed_filer + 10000, "admin": admin, "admin-grpc": admin + 10000},
        "mlflow": {"mlflow": p.mlflow},
        "ray": ray,
        "airflow": {"api-server": p.airflow, "worker-log-server": p.airflow_log,
                    "trigger-log-server": p.airflow_trigger_log},
    }


def ray_worker_port_range(cfg: ExfmConfig) -> tuple[int, int]:
    lo = cfg.ports.ray_gcs + 11
    return lo, lo + RAY_WORKER_PORTS - 1


def all_ports(cfg: ExfmConfig, services: list[str] | None = None) -> list[tuple[str, str, int]]:
    """(service, label, port) for every fixed port of ``services`` (worker ranges included)."""
    out = []
    for svc, ports in service_ports(cfg).items():
        if services is not None and svc not in services:
            continue
        out += [(svc, label, port) for label, port in ports.items()]
        if svc == "ray":
            lo, hi = ray_worker_port_range(cfg)
            out += [(svc, "worker", port) for port in range(lo, hi + 1)]
    return out


# --- secrets -----------------------------------------------------------------------------------
def ensure_secrets(cfg: ExfmConfig, airflow: bool = True,
                   mlflow: bool = True) -> tuple[dict[str, str], list[str]]:
    """Load ``state_dir/secrets.json``, generating missing keys (mode 0600).

    Airflow's keys are generated only with ``airflow``, MLflow's (admin password, Flask secret)
    only with ``mlflow``: by the first ``up`` that starts the service, the one that prints its
    admin password. Returns (secrets, names of keys generated now).
    """
    from cryptography.fernet import Fernet

    path = cfg.state_path / SECRETS_FILE
    cfg.state_path.mkdir(parents=True, exist_ok=True)
    cfg.state_path.chmod(0o700)  # secrets, logs, PID files and SQLite files live below
    data = dict(read_state_secrets(cfg.state_path))
    gen = {
        "s3_access_key": lambda: "exfm" + _secrets.token_hex(8),
        "s3_secret_key": lambda: _secrets.token_urlsafe(30),
        "airflow_password": lambda: _secrets.token_urlsafe(12),
        "airflow_jwt_secret": lambda: _secrets.token_urlsafe(32),
        "airflow_secret_key": lambda: _secrets.token_urlsafe(32),
        "airflow_fernet_key": lambda: Fernet.generate_key().decode(),
        "ray_auth_token": lambda: _secrets.token_hex(32),
        TRACKING_PASSWORD_KEY: lambda: _secrets.token_urlsafe(18),
        "mlflow_flask_secret_key": lambda: _secrets.token_urlsafe(32),
        **{f"seaweed_{k}": lambda: _secrets.token_urlsafe(32) for k in SEAWEED_JWT_KEYS},
    }
    made = []
    if cfg.storage.access_key and cfg.storage.secret_key:  # configured keys win
        for k, v in (("s3_access_key", cfg.storage.access_key.get_secret_value()),
                     ("s3_secret_key", cfg.storage.secret_key.get_secret_value())):
            if data.get(k) != v:
                data[k] = v
                made.append(k)
    for k, fn in gen.items():
        if not data.get(k) and (airflow or not k.startswith("airflow_")) and (
                mlflow or not k.startswith("mlflow_")):
            data[k] = fn()
            made.append(k)
    if made or not path.exists():
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    os.chmod(path, 0o600)
    return data, made


# JWT signing keys of SeaweedFS (our secret's name suffix -> security.toml section): with them the
# master, volume and filer ports refuse writes and reads that carry no token signed by the stack,
# so a local user cannot go around the S3 gateway's keys
SEAWEED_JWT_KEYS = {"jwt_write": "jwt.signing", "jwt_read": "jwt.signing.read",
                    "jwt_filer_write": "jwt.filer_signing", "jwt_filer_read": "jwt.filer_signing.read"}


def write_seaweed_security(cfg: ExfmConfig) -> Path:
    """``state_dir/security.toml`` (0600), which ``weed`` reads from its working directory."""
    st = read_state_secrets(cfg.state_path)
    lines = ["# generated by `exfm stack up`: this stack's SeaweedFS JWT signing keys (private)"]
    for name, section in SEAWEED_JWT_KEYS.items():
        lines += [f"[{section}]", f'key = "{st["seaweed_" + name]}"',
                  "expires_after_seconds = 60", ""]
    path = cfg.state_path / "security.toml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines))
    os.chmod(path, 0o600)
    return path


def s3_keys(cfg: ExfmConfig) -> tuple[str, str]:
    """Keys the embedded SeaweedFS accepts (configured keys, else the generated ones)."""
    if cfg.storage.access_key and cfg.storage.secret_key:
        return cfg.storage.access_key.get_secret_value(), cfg.storage.secret_key.get_secret_value()
    s = read_state_secrets(cfg.state_path)
    return s["s3_access_key"], s["s3_secret_key"]


# --- which databases this state folder's stack lives on -----------------------------------------
DATABASE_FILE = "database.json"


def database_identity(cfg: ExfmConfig) -> dict[str, str]:
    """Where this config puts Airflow's metadata, MLflow's backend and the lease store, without
    the password (a rotated password is the same databases)."""
    if cfg.database.kind == "sqlite":  # files in the state folder: they move with it
        return {"kind": "sqlite"}
    from sqlalchemy.engine import make_url

    u = make_url(cfg.database.url.get_secret_value())
    return {"kind": "postgres",
            "where": f"{u.username or ''}@{u.host or 'localhost'}:{u.port or 5432}",
            "db_prefix": cfg.database.db_prefix}


def check_database_identity(cfg: ExfmConfig) -> None:
    """Refuse to start this state folder's stack on other databases than the ones it was first
    started on; record them on the first start.

    The S3 data, the MLflow admin login and the secrets stay in the state folder whatever the
    database, so a stack restarted from a shell that lacks ``EXFM_DATABASE=postgres`` (or with it
    added) would otherwise come up on empty databases: no runs in Airflow, no registered models,
    while the objects in S3 are still there (and the next day refused for want of its FM).
    A folder from before this record that holds SQLite files counts as SQLite.
    """
    from exfm.stack.procs import StackError

    path = cfg.state_path / DATABASE_FILE
    want = database_identity(cfg)
    stored = json.loads(path.read_text()) if path.exists() else None
    had = stored
    if had is not None and had.get("kind") == "sqlite":  # the kind says it all (an older
        had = {"kind": "sqlite"}  # record also named the folder, which moves with its files)
    elif had is None and any((cfg.state_path / "db" / f"{p}.db").exists()
                             for p in ("airflow", "mlflow")):
        had = {"kind": "sqlite"}
    if had is not None and had != want:
        def show(d: dict[str, str]) -> str:
            return ", ".join(f"{k} {v}" for k, v in d.items())

        raise StackError(
            f"database: the stack in {cfg.state_path} lives on ({show(had)}), but this config "
            f"says ({show(want)}): starting it would open empty databases (no Airflow runs, no "
            f"registered models) beside the S3 data of the old ones. Start it with the database "
            f"settings it was started with (EXFM_DATABASE={had['kind']}"
            + (", and EXFM_DATABASE_URL if you set one" if had["kind"] == "postgres" else "")
            + f"), or give this config its own state_dir for a new stack. If you moved the "
            f"databases yourself, delete {path} and run up again.", service="database")
    if stored != want:
        path.write_text(json.dumps(want, indent=1) + "\n")


# --- client environment ------------------------------------------------------------------------
def client_env(cfg: ExfmConfig) -> dict[str, str]:
    """What a child process (Ray job, Airflow task, test) needs to reach this stack."""
    env: dict[str, str] = {
        "MLFLOW_TRACKING_URI": cfg.tracking_uri,
        "MLFLOW_S3_ENDPOINT_URL": cfg.s3_endpoint,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "RAY_ADDRESS": cfg.ray_address,
        "RAY_USAGE_STATS_ENABLED": "0",
        # keeps ray.init on loopback: without it Ray rewrites 127.0.0.1 to the host's IP
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "EXFM_STATE_DIR": str(cfg.state_path),
        "AWS_DEFAULT_REGION": cfg.storage.region,
        "AWS_ENDPOINT_URL_S3": cfg.s3_endpoint,
    }
    try:
        a, s = cfg.s3_credentials()
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = a, s
    except Exception:  # noqa: BLE001 - no keys yet (before the first up)
        pass
    mlflow_login = tracking_credentials(cfg)  # the embedded MLflow's (basic-auth app)
    if mlflow_login is not None:
        env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = mlflow_login
    st = read_state_secrets(cfg.state_path)
    if cfg.ray.address is None and st.get("ray_auth_token"):
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN"] = st["ray_auth_token"]
    if os.environ.get("EXFM_CONFIG"):
        env["EXFM_CONFIG"] = str(Path(os.environ["EXFM_CONFIG"]).resolve())
    elif config_dump_path(cfg).exists():
        env["EXFM_CONFIG"] = str(config_dump_path(cfg))
    return env


def write_config_dump(cfg: ExfmConfig) -> Path:
    """The effective config (file + env + --set) for child processes; 0600 (may hold a DB URL)."""
    import yaml

    data = cfg.dump_for_children(exclude={"storage": {"access_key", "secret_key"}})
    data["database"]["url"] = cfg.database.url.get_secret_value()
    path = config_dump_path(cfg)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# written by `exfm stack up`: the config the stack's services were started with\n")
        yaml.safe_dump(data, f, sort_keys=False)
    return path


def _base_env(cfg: ExfmConfig, service: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(client_env(cfg))
    env["PATH"] = f"{venv_bin()}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    env[STACK_ID_ENV] = stack_id(cfg)
    env[STACK_SERVICE_ENV] = service
    return env


# --- SeaweedFS ---------------------------------------------------------------------------------
def s3_procs(cfg: ExfmConfig) -> list[ProcSpec]:
    ports = service_ports(cfg)["s3"]
    data = cfg.state_path / "s3"
    logs = log_dir(cfg) / "seaweedfs"
    data.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    access, secret = s3_keys(cfg)
    s3conf = cfg.state_path / "s3-identities.json"
    fd = os.open(s3conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"identities": [{"name": "exfm",
                                   "credentials": [{"accessKey": access, "secretKey": secret}],
                                   "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}, f)
    write_seaweed_security(cfg)  # read from the working directory (cwd=state_path below)
    # weed saves its flags to DIR/mini.options and reloads them: ours are always complete
    (data / "mini.options").unlink(missing_ok=True)
    h = cfg.host
    argv = [_exe("weed"), f"-logdir={logs}", "mini", f"-dir={data}", f"-ip={h}", f"-ip.bind={h}",
            f"-s3.config={s3conf}", "-master.telemetry=false", "-webdav=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false",
            f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3-grpc']}",
            f"-master.port={ports['master']}", f"-master.port.grpc={ports['master-grpc']}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume-grpc']}",
            f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer-grpc']}",
            f"-admin.port={ports['admin']}", f"-admin.port.grpc={ports['admin-grpc']}",
            f"-bucket={cfg.storage.bucket}"]
    env = _base_env(cfg, "s3")
    return [ProcSpec("s3", argv, env, log_dir(cfg) / "s3.log", cwd=cfg.state_path,
                     stop_signal=signal.SIGTERM, stop_timeout=15)]


def printed_since_start(cfg: ExfmConfig, service: str) -> bool:
    """Whether the service's log holds its :data:`READY_LINE` after the latest start marker."""
    line = READY_LINE.get(service)
    if line is None:
        return True
    try:
        text = (log_dir(cfg) / f"{service}.log").read_text(errors="replace")
    except OSError:
        return False
    return line in text[text.rfind(START_MARK):]


def s3_client(cfg: ExfmConfig, timeout: float = 3.0):
    """A client with the keys this stack's SeaweedFS was started with (one try, short timeout)."""
    from exfm.storage.s3 import s3_client as client

    return client(cfg, timeout=timeout, attempts=1, credentials=s3_keys(cfg))


def s3_health(cfg: ExfmConfig) -> tuple[bool, str]:
    code, body = http_get(cfg.s3_endpoint + "/", timeout=2)
    if code == 0:
        return False, body
    try:
        c = s3_client(cfg)
        try:
            c.head_bucket(Bucket=cfg.storage.bucket)
        except Exception:  # noqa: BLE001 - missing bucket: create it (idempotent)
            c.create_bucket(Bucket=cfg.storage.bucket)
            c.head_bucket(Bucket=cfg.storage.bucket)
        return True, f"bucket {cfg.storage.bucket}"
    except Exception as e:  # noqa: BLE001
        return False, f"{type(e).__name__}: {e}"


# --- MLflow ------------------------------------------------------------------------------------
# MLflow runs its basic-auth app: every REST call (the registry included) needs the admin login,
# generated into secrets.json; clients get it as MLFLOW_TRACKING_USERNAME/PASSWORD (client_env,
# exfm.registry.mlflow_registry.use_tracking_credentials), never on a command line
MLFLOW_ADMIN_USER, MLFLOW_PASSWORD_KEY = TRACKING_USER, TRACKING_PASSWORD_KEY
# how mlflow_health's detail starts when the server answers without asking for a login (one
# started before authentication was turned on: `up` restarts it), and when it refuses the
# generated login (the auth DB holds another password: `up` fails at once, naming both files)
MLFLOW_NO_AUTH = "answers without authentication"
MLFLOW_LOGIN_REFUSED = f"login as '{MLFLOW_ADMIN_USER}' refused"


def mlflow_auth_db(cfg: ExfmConfig) -> Path:
    """The auth app's users and permissions: SQLite under the state folder, also with
    ``database: postgres`` (it holds one user and no tracking data)."""
    return cfg.state_path / "db" / "mlflow-auth.db"


def mlflow_auth_config(cfg: ExfmConfig) -> Path:
    return cfg.state_path / "mlflow-auth.ini"


def write_mlflow_auth_config(cfg: ExfmConfig) -> Path:
    """``state_dir/mlflow-auth.ini`` (0600, read through ``MLFLOW_AUTH_CONFIG_PATH``) and an empty
    0600 auth database for the auth app to fill: on first start it creates the admin user with
    the generated password (later starts keep the user as it is)."""
    st = read_state_secrets(cfg.state_path)
    db = mlflow_auth_db(cfg)
    db.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(db, 0o600)
    text = ("# generated by `exfm stack up`: MLflow's basic-auth app (private)\n[mlflow]\n"
            # a user added later through the UI sees nothing until granted
            "default_permission = NO_PERMISSIONS\n"
            f"database_uri = sqlite:///{db}\n"
            f"admin_username = {MLFLOW_ADMIN_USER}\n"
            f"admin_password = {st[MLFLOW_PASSWORD_KEY]}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # Without the cache every request checks the password hash (a deliberately slow
            # KDF) three or four times: the auth check, the admin check and the response
            # filters. That was >90 % of the server's CPU. The server runs one worker, and a
            # password change through the API drops the cached entry at once.
            f"auth_cache_ttl_seconds = {cfg.tracking.auth_cache_ttl_s}\n")
    path = mlflow_auth_config(cfg)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def mlflow_procs(cfg: ExfmConfig) -> list[ProcSpec]:
    from exfm.db import database_url

    env = _base_env(cfg, "mlflow")
    a, s = s3_keys(cfg)
    env.update({"AWS_ACCESS_KEY_ID": a, "AWS_SECRET_ACCESS_KEY": s,
                "MLFLOW_S3_ENDPOINT_URL": cfg.s3_endpoint,
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
                # through the environment, not the command line: /proc/*/cmdline is world-readable
                # and the PostgreSQL URL may hold a password
                "MLFLOW_BACKEND_STORE_URI": database_url(cfg, "mlflow"),
                "MLFLOW_AUTH_CONFIG_PATH": str(write_mlflow_auth_config(cfg)),
                "MLFLOW_FLASK_SERVER_SECRET_KEY":
                    read_state_secrets(cfg.state_path)["mlflow_flask_secret_key"]})
    for k in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        env.pop(k, None)  # would override the ini's admin (a value from the caller's shell)
    argv = [_exe("mlflow"), "server", "--app-name", "basic-auth", "--artifacts-destination",
            f"s3://{cfg.storage.bucket}/mlflow", "--serve-artifacts", "--host", cfg.host,
            "--port", str(cfg.ports.mlflow), "--workers", "1"]
    return [ProcSpec("mlflow", argv, env, log_dir(cfg) / "mlflow.log", cwd=cfg.state_path,
                     stop_signal=signal.SIGTERM, stop_timeout=15)]


def mlflow_auth_headers(cfg: ExfmConfig) -> dict[str, str]:
    """Basic auth with the generated admin login ({} before the first ``up``)."""
    import base64

    pw = read_state_secrets(cfg.state_path).get(MLFLOW_PASSWORD_KEY)
    if not pw:
        return {}
    tok = base64.b64encode(f"{MLFLOW_ADMIN_USER}:{pw}".encode()).decode()
    return {"Authorization": f"Basic {tok}"}


MLFLOW_PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"


def mlflow_health(cfg: ExfmConfig) -> tuple[bool, str]:
    """Up, asking for a login, and accepting the generated one."""
    code, body = http_get(cfg.tracking_uri + "/health", timeout=2)
    if code != 200:
        return False, (body.strip()[:60] if code else body)
    anon, _ = http_get(cfg.tracking_uri + MLFLOW_PROBE, timeout=5)
    if anon == 200:
        return False, f"{MLFLOW_NO_AUTH} (started before basic-auth was turned on)"
    code, body = http_get(cfg.tracking_uri + MLFLOW_PROBE, timeout=5,
                          headers=mlflow_auth_headers(cfg))
    if code != 200:
        return False, (f"{MLFLOW_LOGIN_REFUSED} (HTTP {code}): its password in "
                       f"{mlflow_auth_db(cfg)} is not the one in "
                       f"{cfg.state_path / SECRETS_FILE}" if code in (401, 403) else
                       f"HTTP {code} {body.strip()[:60]}" if code else body)
    return True, f"OK, basic auth (user '{MLFLOW_ADMIN_USER}')"


# --- Ray ---------------------------------------------------------------------------------------
def ray_num_cpus(cfg: ExfmConfig) -> int:
    """What the embedded head advertises: ``ray.head_num_cpus``, else the machine's real cores
    (never more: an oversubscribed head runs more actors than there are cores)."""
    return cfg.ray.head_num_cpus or (os.cpu_count() or 1)


def ray_procs(cfg: ExfmConfig) -> list[ProcSpec]:
    p = service_ports(cfg)["ray"]
    lo, hi = ray_worker_port_range(cfg)
    tmp = ray_temp_dir(cfg)
    tmp.mkdir(parents=True, exist_ok=True)
    env = _base_env(cfg, "ray")
    token = read_state_secrets(cfg.state_path)["ray_auth_token"]
    env.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
                # SIGTERM otherwise drains the node for 30 s before stopping (no Serve here)
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"})
    env.pop("RAY_ADDRESS", None)  # ray start --head must not try to join
    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(k, None)  # a job gets MLflow's login from its 0600 secrets file (exfm.compute.submit)
    argv = [_exe("ray"), "start", "--head", "--block", "--disable-usage-stats",
            f"--node-ip-address={cfg.host}", f"--port={p['gcs']}",
            "--include-dashboard=true", f"--dashboard-host={cfg.host}",
            f"--dashboard-port={p['dashboard']}", f"--ray-client-server-port={p['client']}",
            f"--node-manager-port={p['node-manager']}",
            f"--object-manager-port={p['object-manager']}",
            f"--dashboard-agent-grpc-port={p['dashboard-agent-grpc']}",
            f"--dashboard-agent-listen-port={p['dashboard-agent-listen']}",
            f"--metrics-export-port={p['metrics-export']}",
            f"--runtime-env-agent-port={p['runtime-env-agent']}",
            f"--min-worker-port={lo}", f"--max-worker-port={hi}",
            f"--temp-dir={tmp}", f"--num-cpus={ray_num_cpus(cfg)}",
            f"--object-store-memory={RAY_OBJECT_STORE_BYTES}"]
    if cfg.ray.use_gpu:
        pass  # let Ray detect GPUs
    else:
        argv.append("--num-gpus=0")
    return [ProcSpec("ray", argv, env, log_dir(cfg) / "ray.log", cwd=cfg.state_path,
                     stop_signal=signal.SIGTERM, stop_timeout=25, signal_leader_only=True)]


def ray_auth_headers(cfg: ExfmConfig) -> dict[str, str]:
    tok = read_state_secrets(cfg.state_path).get("ray_auth_token")
    return {"Authorization": f"Bearer {tok}"} if tok else {}


def ray_health(cfg: ExfmConfig) -> tuple[bool, str]:
    import socket

    with socket.socket() as s:
        s.settimeout(1.0)
        if s.connect_ex((cfg.host, cfg.ports.ray_gcs)) != 0:
            return False, f"GCS {cfg.host}:{cfg.ports.ray_gcs} not reachable"
    code, body = http_get(cfg.ray_dashboard_url + "/api/version", timeout=2,
                          headers=ray_auth_headers(cfg))
    if code != 200:
        return False, f"HTTP {code} {body[:80]}" if code else body
    try:
        return True, "ray " + json.loads(body).get("ray_version", "?")
    except ValueError:
        return True, body[:40]


# --- Airflow -----------------------------------------------------------------------------------
AIRFLOW_PROCS = ["airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                 "airflow-triggerer"]


def airflow_url(cfg: ExfmConfig) -> str:
    return f"http://{cfg.host}:{cfg.ports.airflow}"


def airflow_env(cfg: ExfmConfig, dags_folder: Path | None = None) -> dict[str, str]:
    """Airflow's configuration as ``AIRFLOW__*`` variables (plus client_env for tasks)."""
    from exfm.db import database_url

    st = read_state_secrets(cfg.state_path)
    home = airflow_home(cfg)
    home.mkdir(parents=True, exist_ok=True)
    pwfile = home / "simple_auth_manager_passwords.json"
    env = _base_env(cfg, "airflow")
    url = airflow_url(cfg)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder or paths.dags_folder()),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(cfg.airflow.parallelism),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__FERNET_KEY": st["airflow_fernet_key"],
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{cfg.airflow.admin_user}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(pwfile),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url(cfg, "airflow"),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(cfg.ports.airflow_log),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(cfg.ports.airflow_trigger_log),
        "AIRFLOW__API__HOST": cfg.host,
        "AIRFLOW__API__PORT": str(cfg.ports.airflow),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": st["airflow_secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": st["airflow_jwt_secret"],
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "True",
        # the log servers on cfg.host (see exfm/stack/airflow_main.py), and tasks report that
        # address as their hostname so the API server can fetch a running task's log
        "EXFM_AIRFLOW_LOG_SERVER_HOST": cfg.host,
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "exfm.stack.airflow_main.loopback_hostname",
        "EXFM_SCHEDULE": schedule_env(cfg),
    })
    if env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite"):
        # wait for the other writers' lock instead of failing after sqlite3's 5 s
        mod = "exfm.stack.airflow_main"
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"] = f"{mod}.SQLITE_CONNECT_ARGS"
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC"] = f"{mod}.SQLITE_CONNECT_ARGS_ASYNC"
    if cfg.oncall.webhook_url and not env.get("EXFM_ONCALL_WEBHOOK_URL"):
        # the failure notifier and the deadline callback read it (they load no config)
        env["EXFM_ONCALL_WEBHOOK_URL"] = cfg.oncall.webhook_url
    return env


def schedule_env(cfg: ExfmConfig) -> str:
    """``$EXFM_SCHEDULE`` for the DAG file (which imports no exfm module when parsed): the
    calendar from ``schedule.*`` and the data's first day, the pools, the deadline, as JSON
    (:func:`exfm.config.schedule.dag_settings`)."""
    from exfm.config.schedule import dag_settings
    from exfm.pipeline import schedule_window

    return json.dumps(dag_settings(cfg, *schedule_window(cfg), ray_num_cpus(cfg)))


def airflow_shell_env(cfg: ExfmConfig) -> dict[str, str]:
    """What ``eval "$(exfm stack env)"`` exports: the client variables plus Airflow's own
    (``AIRFLOW_HOME``, ``AIRFLOW__*``, ``EXFM_SCHEDULE``) and ``PATH`` with the venv's bin first,
    so the shell's ``airflow`` CLI talks to this stack's metadata DB and API server."""
    env = client_env(cfg)
    try:
        full = airflow_env(cfg)
    except KeyError:  # no Airflow secrets yet (before the first `stack up`)
        return env
    env.update({k: v for k, v in full.items()
                if k.startswith("AIRFLOW") or k in ("EXFM_SCHEDULE", "EXFM_AIRFLOW_LOG_SERVER_HOST")})
    env["PATH"] = f"{venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


def write_airflow_passwords(cfg: ExfmConfig) -> None:
    st = read_state_secrets(cfg.state_path)
    pwfile = airflow_home(cfg) / "simple_auth_manager_passwords.json"
    pwfile.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({cfg.airflow.admin_user: st["airflow_password"]}, f)


def airflow_procs(cfg: ExfmConfig, dags_folder: Path | None = None) -> list[ProcSpec]:
    env = airflow_env(cfg, dags_folder)
    out = []
    for name in AIRFLOW_PROCS:
        sub = name.removeprefix("airflow-")
        sig = signal.SIGINT if sub == "api-server" else signal.SIGTERM
        out.append(ProcSpec(name, airflow_argv(sub), env, log_dir(cfg) / f"{name}.log",
                            cwd=airflow_home(cfg), stop_signal=sig, stop_timeout=30))
    return out


def airflow_argv(*args: str) -> list[str]:
    """``airflow ARGS`` through our launcher (loopback log servers), with the venv's Python."""
    return [sys.executable, str(paths.airflow_launcher()), *args]


def airflow_health(cfg: ExfmConfig) -> tuple[bool, str]:
    code, body = http_get(airflow_url(cfg) + "/api/v2/monitor/health", timeout=3)
    if code != 200:
        return False, f"HTTP {code} {body[:80]}" if code else body
    try:
        h = json.loads(body)
    except ValueError:
        return False, body[:80]
    bad = [k for k, v in h.items() if isinstance(v, dict) and v.get("status") not in (None, "healthy")]
    if bad:
        return False, "unhealthy: " + ", ".join(bad)
    return True, "scheduler, dag processor, triggerer healthy"


def airflow_token(cfg: ExfmConfig, timeout: float = 60.0) -> str:
    """A JWT from ``POST /auth/token`` with the admin user and the generated password."""
    import urllib.request

    st = read_state_secrets(cfg.state_path)
    req = urllib.request.Request(
        airflow_url(cfg) + "/auth/token", method="POST",
        data=json.dumps({"username": cfg.airflow.admin_user,
                         "password": st["airflow_password"]}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())["access_token"]


SERVICE_URL = {
    "s3": lambda cfg: cfg.s3_endpoint,
    "mlflow": lambda cfg: cfg.tracking_uri,
    "ray": lambda cfg: cfg.ray_dashboard_url,
    "airflow": airflow_url,
}
HEALTH = {"s3": s3_health, "mlflow": mlflow_health, "ray": ray_health, "airflow": airflow_health}


def proc_names(service: str) -> list[str]:
    return AIRFLOW_PROCS if service == "airflow" else [service]
