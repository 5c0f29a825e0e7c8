"""The embedded stack's pure parts: ports, dependency order, secrets, command lines, client env."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from exfm.config import load_config
from exfm.stack import StackError, resolve_services
from exfm.stack import services as S


@pytest.fixture
def cfg(tmp_path):
    return load_config(None, [f"state_dir={tmp_path / 'state'}"], env={})


def test_every_port_of_the_default_stack_is_distinct_and_valid(cfg):
    ports = [p for _, _, p in S.all_ports(cfg)]
    assert len(ports) == len(set(ports))
    assert all(1024 <= p <= 65535 for p in ports)
    # Redis owns 6379 on this machine; the Ray head must not touch it
    assert 6379 not in ports


def test_moved_ports_move_every_derived_port(cfg, tmp_path):
    other = load_config(None, [f"state_dir={tmp_path / 'b'}", "ports.s3=20000",
                               "ports.seaweed_master=20010", "ports.seaweed_volume=20020",
                               "ports.seaweed_filer=20030", "ports.mlflow=20040",
                               "ports.ray_dashboard=20050", "ports.ray_client=20051",
                               "ports.airflow=20060", "ports.airflow_log=20061",
                               "ports.airflow_trigger_log=20062", "ports.ray_gcs=20100"], env={})
    a = {p for _, _, p in S.all_ports(cfg)}
    b = {p for _, _, p in S.all_ports(other)}
    assert not a & b, "two stacks with different ports.* must be able to coexist"


def test_services_resolve_with_dependencies_in_start_order():
    assert resolve_services(None) == ["s3", "mlflow", "ray", "airflow"]
    assert resolve_services(["mlflow"]) == ["s3", "mlflow"]
    assert resolve_services(["airflow", "ray"]) == ["ray", "airflow"]
    with pytest.raises(StackError, match="unknown service"):
        resolve_services(["minio"])


def test_secrets_are_generated_once_private_and_stable(cfg):
    first, made = S.ensure_secrets(cfg)
    path = cfg.state_path / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert {"s3_access_key", "s3_secret_key", "airflow_password", "ray_auth_token"} <= set(made)
    again, made_again = S.ensure_secrets(cfg)
    assert again == first and made_again == []
    assert cfg.s3_credentials() == (first["s3_access_key"], first["s3_secret_key"])


def test_configured_s3_keys_win_over_generated_ones(tmp_path):
    cfg = load_config(None, [f"state_dir={tmp_path}", "storage.access_key=AK",
                             "storage.secret_key=SK"], env={})
    sec, _ = S.ensure_secrets(cfg)
    assert (sec["s3_access_key"], sec["s3_secret_key"]) == ("AK", "SK")
    assert S.s3_keys(cfg) == ("AK", "SK")


def test_client_env_carries_what_clients_need_and_no_stack_marker(cfg, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "EXFM_S3_ACCESS_KEY",
                "EXFM_S3_SECRET_KEY", "EXFM_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    S.ensure_secrets(cfg)
    S.write_config_dump(cfg)
    env = S.client_env(cfg)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3",
                "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_DISABLE_TELEMETRY",
                "RAY_ADDRESS", "RAY_AUTH_TOKEN", "EXFM_CONFIG", "EXFM_STATE_DIR"):
        assert env.get(key), key
    assert env["RAY_ADDRESS"] == f"127.0.0.1:{cfg.ports.ray_gcs}"
    assert env["AWS_ENDPOINT_URL_S3"] == f"http://127.0.0.1:{cfg.ports.s3}"
    # the dumped config reloads to the same stack
    dumped = load_config(env["EXFM_CONFIG"], env={})
    assert dumped.state_path == cfg.state_path and dumped.ports == cfg.ports
    assert stat.S_IMODE(Path(env["EXFM_CONFIG"]).stat().st_mode) == 0o600
    # a client must not look like one of the stack's own processes to `down`
    assert S.STACK_ID_ENV not in env and S.STACK_SERVICE_ENV not in env


def test_ray_head_command_pins_every_port_and_a_short_temp_dir(cfg):
    S.ensure_secrets(cfg)
    (spec,) = S.ray_procs(cfg)
    argv = " ".join(spec.argv)
    p = S.service_ports(cfg)["ray"]
    for flag, port in [("--port", p["gcs"]), ("--dashboard-port", p["dashboard"]),
                       ("--ray-client-server-port", p["client"]),
                       ("--node-manager-port", p["node-manager"]),
                       ("--object-manager-port", p["object-manager"]),
                       ("--dashboard-agent-grpc-port", p["dashboard-agent-grpc"]),
                       ("--dashboard-agent-listen-port", p["dashboard-agent-listen"]),
                       ("--metrics-export-port", p["metrics-export"]),
                       ("--runtime-env-agent-port", p["runtime-env-agent"])]:
        assert f"{flag}={port}" in argv
    lo, hi = S.ray_worker_port_range(cfg)
    assert f"--min-worker-port={lo}" in argv and f"--max-worker-port={hi}" in argv
    assert "--node-ip-address=127.0.0.1" in argv and "--dashboard-host=127.0.0.1" in argv
    assert "--block" in argv and "--head" in argv
    # the head advertises the real cores (ray.head_num_cpus unset), never an oversubscribed 4
    assert f"--num-cpus={S.ray_num_cpus(cfg)}" in argv
    assert S.ray_num_cpus(cfg) == (cfg.ray.head_num_cpus or os.cpu_count())
    tmp = S.ray_temp_dir(cfg)
    assert f"--temp-dir={tmp}" in argv and len(str(tmp)) <= 24
    assert "RAY_ADDRESS" not in spec.env  # `ray start --head` must not try to join
    assert spec.env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert spec.env[S.STACK_ID_ENV] == S.stack_id(cfg)


def test_seaweedfs_command_binds_loopback_on_configured_ports(cfg):
    S.ensure_secrets(cfg)
    (spec,) = S.s3_procs(cfg)
    argv = spec.argv
    assert argv[1].startswith("-logdir=") and argv[2] == "mini"
    for flag in ("-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
                 "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                 f"-s3.port={cfg.ports.s3}", f"-master.port={cfg.ports.seaweed_master}",
                 f"-volume.port={cfg.ports.seaweed_volume}",
                 f"-filer.port={cfg.ports.seaweed_filer}"):
        assert flag in argv
    ident = cfg.state_path / "s3-identities.json"
    assert stat.S_IMODE(ident.stat().st_mode) == 0o600


def test_mlflow_password_stays_off_the_command_line(cfg, monkeypatch):
    import exfm.db

    url = "postgresql://exfm:s3cr3t-pw@db.example:5432/exfm_mlflow"
    monkeypatch.setattr(exfm.db, "database_url", lambda *a, **k: url)
    S.ensure_secrets(cfg)
    (spec,) = S.mlflow_procs(cfg)
    assert not any("s3cr3t-pw" in a for a in spec.argv)
    assert spec.env["MLFLOW_BACKEND_STORE_URI"] == url
    assert stat.S_IMODE(cfg.state_path.stat().st_mode) == 0o700


@pytest.mark.parametrize("ttl", [300, 0])
def test_mlflow_auth_config_as_mlflow_reads_it_caches_logins(tmp_path, monkeypatch, ttl):
    from mlflow.server.auth.config import read_auth_config

    cfg = load_config(None, [f"state_dir={tmp_path / 'st'}", f"tracking.auth_cache_ttl_s={ttl}"],
                      env={})
    S.ensure_secrets(cfg)
    path = S.write_mlflow_auth_config(cfg)
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(path))
    for var in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    auth = read_auth_config()
    assert auth.auth_cache_ttl_seconds == ttl and auth.admin_username == S.MLFLOW_ADMIN_USER
    assert auth.authorization_function.endswith(":authenticate_request_basic_auth")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_mlflow_command_uses_the_state_db_and_s3_artifacts(cfg):
    S.ensure_secrets(cfg)
    (spec,) = S.mlflow_procs(cfg)
    argv = spec.argv
    # the database URL (it may hold a password) goes through the env, never the command line
    assert "--backend-store-uri" not in argv
    assert spec.env["MLFLOW_BACKEND_STORE_URI"] == f"sqlite:///{cfg.state_path}/db/mlflow.db"
    assert argv[argv.index("--artifacts-destination") + 1] == "s3://exfm/mlflow"
    assert "--serve-artifacts" in argv and argv[argv.index("--workers") + 1] == "1"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert spec.env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert spec.env["MLFLOW_S3_ENDPOINT_URL"] == cfg.s3_endpoint


def test_airflow_env_is_local_small_and_points_at_the_repo_dags(cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("EXFM_AIRFLOW_DAGS_FOLDER", raising=False)
    monkeypatch.delenv("EXFM_CONFIG", raising=False)
    S.ensure_secrets(cfg)
    S.write_config_dump(cfg)
    env = S.airflow_env(cfg)
    repo = Path(__file__).resolve().parents[2]
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(repo / "dags")
    assert env["AIRFLOW_HOME"] == str(cfg.state_path / "airflow")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__PARALLELISM"] == str(cfg.airflow.parallelism)
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == str(cfg.ports.airflow_log)
    assert env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] == str(cfg.ports.airflow_trigger_log)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:///")
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    # tasks reach the stack and the config
    assert env["MLFLOW_TRACKING_URI"] == cfg.tracking_uri and env["EXFM_CONFIG"]
    assert S.airflow_env(cfg, tmp_path / "mydags")["AIRFLOW__CORE__DAGS_FOLDER"] == str(
        tmp_path / "mydags")
    monkeypatch.setenv("EXFM_AIRFLOW_DAGS_FOLDER", str(tmp_path / "envdags"))
    assert S.airflow_env(cfg)["AIRFLOW__CORE__DAGS_FOLDER"] == str(tmp_path / "envdags")


def test_airflow_gets_the_oncall_webhook_and_the_pools(cfg, monkeypatch):
    """The failure notifier and the deadline callback load no config: the stack hands them
    oncall.webhook_url as $EXFM_ONCALL_WEBHOOK_URL (an env value already set wins); the pools
    `stack up` imports are sized from the Ray head's CPUs."""
    import json

    from exfm.config.schedule import pools

    monkeypatch.delenv("EXFM_ONCALL_WEBHOOK_URL", raising=False)
    S.ensure_secrets(cfg)
    assert "EXFM_ONCALL_WEBHOOK_URL" not in S.airflow_env(cfg)
    hooked = cfg.model_copy(update={"oncall": cfg.oncall.model_copy(
        update={"webhook_url": "http://127.0.0.1:9/hook"})})
    assert S.airflow_env(hooked)["EXFM_ONCALL_WEBHOOK_URL"] == "http://127.0.0.1:9/hook"
    monkeypatch.setenv("EXFM_ONCALL_WEBHOOK_URL", "http://127.0.0.1:9/from-env")
    assert S.airflow_env(hooked)["EXFM_ONCALL_WEBHOOK_URL"] == "http://127.0.0.1:9/from-env"
    p = pools(cfg, ray_cpus=6)
    assert (p["exfm_ray"]["slots"], p["exfm_fm_chain"]["slots"]) == (6, 1)
    sized = cfg.model_copy(update={"schedule": cfg.schedule.model_copy(
        update={"ray_pool_slots": 16})})
    assert pools(sized, ray_cpus=6)["exfm_ray"]["slots"] == 16
    dag = json.loads(S.schedule_env(cfg))
    assert dag["pools"]["ray"] == "exfm_ray" and dag["deadline"]["reference"] == "queued_at"


def test_airflow_password_file_matches_the_secret(cfg):
    import json

    sec, _ = S.ensure_secrets(cfg)
    S.write_airflow_passwords(cfg)
    pw = S.airflow_home(cfg) / "simple_auth_manager_passwords.json"
    assert json.loads(pw.read_text()) == {"admin": sec["airflow_password"]}
    assert stat.S_IMODE(pw.stat().st_mode) == 0o600


def test_airflow_launcher_rebinds_only_wildcard_hosts(monkeypatch):
    import uvicorn

    import importlib.util

    from exfm.paths import airflow_launcher
    from exfm.stack import airflow_main

    spec = importlib.util.spec_from_file_location("airflow_launcher", airflow_launcher())
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    seen = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.append(kw["host"]))
    launcher._bind_log_servers("127.0.0.1")
    uvicorn.run("x", host="")
    uvicorn.run("x", host="10.1.2.3")
    assert seen == ["127.0.0.1", "10.1.2.3"]
    monkeypatch.setenv(airflow_main.HOST_ENV, "127.0.0.2")
    assert airflow_main.loopback_hostname() == "127.0.0.2"


def test_ray_counts_as_started_only_after_its_ready_line_since_the_last_start(cfg):
    log = S.log_dir(cfg) / "ray.log"
    log.parent.mkdir(parents=True)
    assert not S.printed_since_start(cfg, "ray")
    log.write_text(f"{S.START_MARK}ray at t0\nRay runtime started.\n{S.START_MARK}ray at t1\n")
    assert not S.printed_since_start(cfg, "ray")  # that line belongs to the previous start
    with open(log, "a") as f:
        f.write("Local node IP: 127.0.0.1\nRay runtime started.\n")
    assert S.printed_since_start(cfg, "ray")
    assert S.printed_since_start(cfg, "mlflow")  # no ready line needed


def test_airflow_secrets_wait_for_the_first_up_that_starts_airflow(cfg):
    sec, made = S.ensure_secrets(cfg, airflow=False)
    assert "airflow_password" not in sec and "s3_access_key" in made
    sec2, made2 = S.ensure_secrets(cfg, airflow=True)
    assert "airflow_password" in made2 and "s3_access_key" not in made2
    assert sec2["s3_access_key"] == sec["s3_access_key"]


def test_mlflow_runs_basic_auth_with_a_private_generated_login(cfg, monkeypatch):
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "from-the-shell")  # must not override ours
    sec, made = S.ensure_secrets(cfg)
    assert {"mlflow_admin_password", "mlflow_flask_secret_key"} <= set(made)
    (spec,) = S.mlflow_procs(cfg)
    argv = spec.argv
    assert argv[argv.index("--app-name") + 1] == "basic-auth"
    for secret in (sec["mlflow_admin_password"], sec["mlflow_flask_secret_key"]):
        assert not any(secret in a for a in argv)
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" not in spec.env
    assert spec.env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == sec["mlflow_flask_secret_key"]
    ini = Path(spec.env["MLFLOW_AUTH_CONFIG_PATH"])
    assert ini.parent == cfg.state_path and stat.S_IMODE(ini.stat().st_mode) == 0o600
    import configparser

    parsed = configparser.ConfigParser()
    parsed.read(ini)
    m = parsed["mlflow"]
    assert (m["admin_username"], m["admin_password"]) == ("admin", sec["mlflow_admin_password"])
    assert m["database_uri"] == f"sqlite:///{S.mlflow_auth_db(cfg)}"
    assert m["default_permission"] == "NO_PERMISSIONS"
    # the auth DB is created private before MLflow fills it (also with database: postgres)
    assert stat.S_IMODE(S.mlflow_auth_db(cfg).stat().st_mode) == 0o600


def test_clients_get_the_mlflow_login_and_the_ray_head_does_not(cfg):
    sec, _ = S.ensure_secrets(cfg)
    env = S.client_env(cfg)
    assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == (
        "admin", sec["mlflow_admin_password"])
    (ray,) = S.ray_procs(cfg)  # a Ray job reads it from its 0600 secrets file instead
    assert "MLFLOW_TRACKING_PASSWORD" not in ray.env
    # an external tracking server: its login is the user's (env), never the stack's
    ext = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(
        update={"uri": "http://mlflow.example:5000"})})
    assert "MLFLOW_TRACKING_PASSWORD" not in S.client_env(ext)


def test_mlflow_secrets_wait_for_the_first_up_that_starts_mlflow(cfg):
    sec, made = S.ensure_secrets(cfg, airflow=False, mlflow=False)
    assert "mlflow_admin_password" not in sec and "s3_access_key" in made
    sec2, made2 = S.ensure_secrets(cfg, airflow=False)
    assert "mlflow_admin_password" in made2 and "s3_access_key" not in made2


def test_mlflow_health_wants_a_login_and_accepts_the_generated_one(cfg, monkeypatch):
    """Healthy only when an anonymous call is refused and the generated login works; a server
    that answers anonymous calls, or refuses our login, is named as such."""
    S.ensure_secrets(cfg)
    answers = {}

    def fake_get(url, timeout=2.0, headers=None):
        if url.endswith("/health"):
            return 200, "OK"
        return answers["auth" if headers and headers.get("Authorization") else "anon"]

    monkeypatch.setattr(S, "http_get", fake_get)
    answers.update(anon=(401, "not authenticated"), auth=(200, "{}"))
    assert S.mlflow_health(cfg)[0]
    answers.update(anon=(200, "{}"))
    ok, detail = S.mlflow_health(cfg)
    assert not ok and detail.startswith(S.MLFLOW_NO_AUTH)
    answers.update(anon=(401, ""), auth=(401, ""))
    ok, detail = S.mlflow_health(cfg)
    assert not ok and detail.startswith(S.MLFLOW_LOGIN_REFUSED)
    assert str(S.mlflow_auth_db(cfg)) in detail and "secrets.json" in detail


def test_a_ray_job_gets_the_mlflow_login_from_its_private_file(cfg, monkeypatch):
    """The submitter writes the login into the job's 0600 secrets file; the job's registry
    client reads it from there (its runtime_env holds only the path)."""
    from exfm.compute.submit import build_submission
    from exfm.registry import mlflow_registry as R

    sec, _ = S.ensure_secrets(cfg)
    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "EXFM_SECRETS_FILE",
              "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(k, "x")  # restored (to unset) after the test
        monkeypatch.delenv(k)
    _, runtime_env = build_submission(cfg, ["-c", "pass"], None)
    shown = str(runtime_env)
    assert sec["mlflow_admin_password"] not in shown and sec["s3_secret_key"] not in shown
    path = Path(runtime_env["env_vars"]["EXFM_SECRETS_FILE"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # in the job: the tracking URI comes as $EXFM_TRACKING_URI, the state folder may be elsewhere
    job_cfg = load_config(None, [f"state_dir={cfg.state_path}/elsewhere"],
                          env={"EXFM_TRACKING_URI": cfg.tracking_uri})
    monkeypatch.setenv("EXFM_SECRETS_FILE", str(path))
    assert R.tracking_credentials(job_cfg) == ("admin", sec["mlflow_admin_password"])
    R.use_tracking_credentials(job_cfg)
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == sec["mlflow_admin_password"]
    monkeypatch.delenv("EXFM_SECRETS_FILE")
    assert R.tracking_credentials(job_cfg) is None  # no file, no stack secrets there
    assert R.tracking_credentials(cfg) == ("admin", sec["mlflow_admin_password"])


def test_a_live_seaweed_socket_of_the_same_ports_is_never_removed(tmp_path):
    """Two stacks on the same ports share SeaweedFS's socket names (/tmp/seaweedfs-<name>-<port>.sock):
    `up` or `down` of one must not remove the other's live sockets (its S3 gateway then loses the
    master: every request fails with InternalError)."""
    import socket

    from exfm.config import load_config
    from exfm.stack.services import seaweed_socket_files, stale_seaweed_socket_files

    with socket.socket() as live:
        live.bind(("127.0.0.1", 0))
        live.listen()
        port = live.getsockname()[1]
        cfg = load_config(None, [f"state_dir={tmp_path}", f"ports.seaweed_master={port - 10000}"],
                          env={})
        files = seaweed_socket_files(cfg)
        master = next(f for f in files if f.name == f"seaweedfs-master-grpc-{port}.sock")
        created = [f for f in files if not f.exists()]
        try:
            for f in created:
                f.touch()
            stale = stale_seaweed_socket_files(cfg)
            assert master not in stale  # its port is live
            assert any(f != master for f in stale)  # the others' ports are free: stale
        finally:
            for f in created:
                f.unlink(missing_ok=True)


_SUPERVISE = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("launcher", sys.argv[1])
launcher = importlib.util.module_from_spec(spec)
spec.loader.exec_module(launcher)
child = [sys.executable, "-c", sys.argv[2], sys.argv[3]]
sys.exit(launcher.supervise(child, "svc", pause_s=0.05, max_restarts=2, window_s=60))
"""
# the supervised child: appends a line to the file, then exits with the code given by the count
_FLAKY = """
import sys, time
p = sys.argv[1]
with open(p, "a") as f:
    f.write("start\\n")
n = len(open(p).read().splitlines())
codes = {1: 3, 2: 0}  # first start crashes, second exits cleanly
if n in codes:
    sys.exit(codes[n])
sys.exit(7)
"""


def _supervise(tmp_path, child_code: str, **kw):
    import subprocess
    import sys

    from exfm.paths import airflow_launcher

    count = tmp_path / "starts.txt"
    return subprocess.Popen([sys.executable, "-c", _SUPERVISE, str(airflow_launcher()),
                             child_code, str(count)], stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw), count


def test_launcher_restarts_a_crashed_service_then_gives_up(tmp_path):
    """An Airflow service that exits with an error (the scheduler's StaleDataError) is started
    again; one that keeps failing is given up on after the allowed restarts, with its code."""
    proc, count = _supervise(tmp_path, _FLAKY)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and count.read_text().splitlines() == ["start"] * 2
    assert "airflow svc exited with code 3: starting it again" in err
    always = "import sys; open(sys.argv[1], 'a').write('start\\n'); sys.exit(5)"
    count.unlink()
    proc, count = _supervise(tmp_path, always)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 5 and len(count.read_text().splitlines()) == 3  # 1 + 2 restarts
    assert "3 times in 60 s: not restarting it" in err


def test_launcher_passes_a_stop_signal_to_the_service_and_ends(tmp_path):
    import os
    import signal
    import time

    sleeper = ("import sys, time; open(sys.argv[1], 'a').write('start\\n'); time.sleep(120)")
    proc, count = _supervise(tmp_path, sleeper)
    deadline = time.monotonic() + 30
    while not (count.exists() and count.read_text()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # what `exfm stack down` sends to the service's group
    proc.communicate(timeout=30)
    assert proc.returncode == 0 and count.read_text().splitlines() == ["start"]
    time.sleep(0.3)
    assert count.read_text().splitlines() == ["start"]  # not started again


def test_airflow_sqlite_waits_for_another_writers_lock(cfg, tmp_path):
    """Airflow's SQLite engine, configured by the stack's env, waits for a write lock held longer
    than sqlite3's default 5 s instead of failing with "database is locked" (a `backfill create`
    beside a busy scheduler)."""
    import sqlite3
    import subprocess
    import sys
    import time

    S.ensure_secrets(cfg)
    S.write_config_dump(cfg)
    env = S.airflow_env(cfg)
    db, ready, go = tmp_path / "airflow.db", tmp_path / "ready", tmp_path / "go"
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{db}"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"].endswith(".SQLITE_CONNECT_ARGS")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")  # as Airflow keeps its database
    holder.execute("CREATE TABLE t (x INTEGER)")
    # Airflow imported and connected first; then it writes while another process holds the lock
    code = ("import pathlib, time\nfrom sqlalchemy import text\nfrom airflow import settings\n"
            "with settings.engine.connect() as c:\n"
            f"    pathlib.Path({str(ready)!r}).touch()\n"
            f"    while not pathlib.Path({str(go)!r}).exists():\n"
            "        time.sleep(0.05)\n"
            "    t0 = time.monotonic()\n"
            "    c.execute(text('INSERT INTO t VALUES (2)'))\n"
            "    c.commit()\n"
            "    print(f'waited {time.monotonic() - t0:.1f}')\n")
    p = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        holder.execute("BEGIN IMMEDIATE")  # the write lock, as a writing scheduler holds it
        holder.execute("INSERT INTO t VALUES (1)")
        go.touch()
        time.sleep(7.0)
        holder.execute("COMMIT")
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err[-1500:]
    assert float(out.split()[-1]) >= 6.0, out
    assert [r[0] for r in sqlite3.connect(db).execute("SELECT x FROM t ORDER BY x")] == [1, 2]
