"""Session fixtures that start the real embedded stack for integration tests.

- ``stack_cfg``: an :class:`ExfmConfig` whose state folder is a temp dir, with free ports for every
  service (gRPC +10000 ports and Ray's derived ports included); SeaweedFS + MLflow + Ray started
  once per session, stopped at the end.
- ``airflow_stack_cfg``: the same config and stack with Airflow 3 added (api-server, scheduler,
  dag-processor, triggerer; dags folder = the repository's ``dags/`` unless
  ``$EXFM_AIRFLOW_DAGS_FOLDER``) for one module: Airflow stops at the module's end.
- ``postgres_stack_cfg``: a second stack (s3 + mlflow + ray) with ``database.kind=postgres`` and a
  unique ``db_prefix``, for one module; its databases are dropped at the module's end. Skips if
  PostgreSQL is unreachable.
- ``make_test_config(tmp_path, **overrides)``: a config with free ports under ``tmp_path``.

Module scope for the Airflow and PostgreSQL stacks: an idle stack left running until the
session's end takes CPU from every later test on a 2-core machine.

Environment: every test that uses one of the stack fixtures (directly or through another fixture)
runs with :func:`exfm.stack.client_env` applied to ``os.environ`` (S3 keys, MLflow URI, Ray address
and token, ``EXFM_CONFIG``/``EXFM_STATE_DIR``), restored after the test, so unit tests that run later
in the same session never see it. In a module/session fixture of your own, wrap client code in
``with stack_env(cfg): ...``. All stacks of a session share one S3 key pair and one Ray token, so
a client env from one stack never carries wrong credentials for another (MLflow's admin login
likewise).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import socket
import sys
from pathlib import Path

import pytest

from exfm.config import ExfmConfig, load_config
from exfm.stack import client_env, stack_down, stack_up
from exfm.stack.procs import port_in_use
from exfm.stack.services import all_ports, ensure_secrets

# one S3 key pair and one Ray token for every stack of this test session
_SESSION_S3 = ("exfmtest" + secrets.token_hex(6), secrets.token_urlsafe(24))
_SESSION_RAY_TOKEN = os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(32)
_SESSION_MLFLOW_PASSWORD = secrets.token_urlsafe(18)  # every stack's MLflow admin login

# Ray reads these once, when `ray` is first imported (a module constant, and the C++ RayConfig):
# - RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, else `ray.init("127.0.0.1:P")` rewrites the address to
#   the host's IP and hangs on a GCS that listens on loopback only;
# - RAY_AUTH_MODE=token + the token, else "InvalidAuthToken ... RAY_AUTH_MODE is 'disabled'".
# Test modules collected before a stack fixture applies client_env may import ray (seen: `pytest
# tests/integration/test_stack.py tests/unit` hung, then failed auth), so the whole session gets
# them now; every stack of the session uses this one token.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", _SESSION_RAY_TOKEN)

# Port blocks: base B in [15000, 22000) step 250 uses B..B+210 and B+10000..B+10030, all below
# Linux's ephemeral range (32768+), and blocks never overlap each other.
_BLOCK_BASES = list(range(15000, 22000, 250))


def _ports_for_base(b: int) -> dict[str, int]:
    return {"s3": b, "seaweed_master": b + 10, "seaweed_volume": b + 20, "seaweed_filer": b + 30,
            "mlflow": b + 40, "ray_dashboard": b + 50, "ray_client": b + 51, "airflow": b + 60,
            "airflow_log": b + 61, "airflow_trigger_log": b + 62, "ray_gcs": b + 100}


_LOCK_DIR = Path("/tmp/exfm-test-ports")
_HELD_LOCKS: list = []  # open lock files: held until this process exits


def _reserve_block(base: int) -> bool:
    """Lock block ``base`` for this process (``flock``), so that concurrent pytest sessions on
    the machine never pick the same ports between checking them and binding them."""
    import fcntl

    _LOCK_DIR.mkdir(exist_ok=True)
    f = open(_LOCK_DIR / f"{base}.lock", "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return False
    _HELD_LOCKS.append(f)
    return True


def _log(msg: str) -> None:
    print(f"[stack] {msg}", file=sys.stderr, flush=True)


def make_test_config(tmp_path: Path | str, *sets: str, **overrides) -> ExfmConfig:
    """A config under ``tmp_path`` (state in ``tmp_path/state``) with a free block of ports.

    ``overrides``: ``key=value`` with ``__`` for dots (``database__kind="postgres"``); ``sets``:
    raw ``"a.b=c"`` strings. Every derived port of every service is checked free.
    """
    tmp_path = Path(tmp_path)
    items = [f"state_dir={tmp_path / 'state'}", "ray.head_num_cpus=4", "airflow.parallelism=2",
             f"storage.access_key={_SESSION_S3[0]}", f"storage.secret_key={_SESSION_S3[1]}"]
    items += [f"{k.replace('__', '.')}={v}" for k, v in overrides.items()]
    items += list(sets)
    bases = _BLOCK_BASES[:]
    random.shuffle(bases)
    for b in bases:
        port_items = [f"ports.{k}={v}" for k, v in _ports_for_base(b).items()]
        cfg = load_config(None, port_items + items, env={})
        if any(port_in_use(cfg.host, p) for _, _, p in all_ports(cfg)):
            continue
        if _reserve_block(b):
            break
    else:
        raise RuntimeError("no free block of ports for a test stack")
    # pre-seed the shared Ray token and MLflow login; ensure_secrets keeps them, makes the rest
    cfg.state_path.mkdir(parents=True, exist_ok=True)
    sec = cfg.state_path / "secrets.json"
    if not sec.exists():
        fd = os.open(sec, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"ray_auth_token": _SESSION_RAY_TOKEN,
                       "mlflow_admin_password": _SESSION_MLFLOW_PASSWORD}, f)
    ensure_secrets(cfg, airflow=False)  # Airflow's on its first up, as for a user
    return cfg


@contextlib.contextmanager
def stack_env(cfg: ExfmConfig):
    """Apply ``client_env(cfg)`` to ``os.environ`` inside the block, then restore it."""
    env = client_env(cfg)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _keep_ray_on_loopback()
    try:
        yield env
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _keep_ray_on_loopback() -> None:
    """If ray was imported before this conftest set its env (an earlier conftest or plugin), its
    import-time state is stale: refresh what Ray's own tests refresh."""
    consts = sys.modules.get("ray._private.ray_constants")
    if consts is not None and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":
        consts.ENABLE_RAY_CLUSTER = False
    if "ray._raylet" in sys.modules and not _ray_connected():
        try:
            from ray._private.authentication_test_utils import reset_auth_token_state

            reset_auth_token_state()
        except (ImportError, AttributeError):  # a Ray without it: the env defaults above apply
            pass


def _ray_connected() -> bool:
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def _start(cfg: ExfmConfig, services: list[str]) -> None:
    try:
        stack_up(cfg, services, log=_log)
    except BaseException:
        stack_down(cfg, services, log=_log)
        raise


@pytest.fixture(scope="session")
def stack_cfg(tmp_path_factory) -> ExfmConfig:
    """SeaweedFS + MLflow + Ray for the session (config with a temp state dir and free ports)."""
    cfg = make_test_config(tmp_path_factory.mktemp("stack"))
    _start(cfg, ["s3", "mlflow", "ray"])
    yield cfg
    stack_down(cfg, log=_log)


@pytest.fixture(scope="module")
def airflow_stack_cfg(stack_cfg: ExfmConfig) -> ExfmConfig:
    """``stack_cfg``'s stack plus Airflow 3 (LocalExecutor, SQLite, the repo's dags/)."""
    _start(stack_cfg, ["airflow"])
    yield stack_cfg
    stack_down(stack_cfg, ["airflow"], log=_log)


def _postgres_reachable(host: str = "127.0.0.1", port: int = 5432) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="module")
def postgres_stack_cfg(tmp_path_factory) -> ExfmConfig:
    """A separate s3 + mlflow + ray stack whose databases live on the local PostgreSQL."""
    if not _postgres_reachable():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    prefix = "exfmt_" + secrets.token_hex(4)
    cfg = make_test_config(tmp_path_factory.mktemp("pgstack"), database__kind="postgres",
                           database__db_prefix=prefix)
    try:
        _start(cfg, ["s3", "mlflow", "ray"])
        yield cfg
    finally:
        stack_down(cfg, log=_log)
        _drop_databases(cfg)


def _drop_databases(cfg: ExfmConfig) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(cfg.database.url.get_secret_value(), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for purpose in ("airflow", "mlflow", "exfm"):
                name = f"{cfg.database.db_prefix}_{purpose}"
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


_STACK_FIXTURES = ("airflow_stack_cfg", "stack_cfg", "postgres_stack_cfg")


@pytest.fixture(autouse=True)
def _stack_client_env(request):
    """Tests that use a stack run with its client env (restored afterwards)."""
    for name in _STACK_FIXTURES:
        if name in request.fixturenames:
            with stack_env(request.getfixturevalue(name)):
                yield
            return
    yield
