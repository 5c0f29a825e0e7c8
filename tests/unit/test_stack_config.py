"""Stack plumbing that needs no running service: ports, ordering, secrets, client env, processes."""

from __future__ import annotations

import json
import signal
import socket
import sys
from pathlib import Path

import pytest

from exfm.config import load_config
from exfm.stack import StackError, client_env, resolve_services, stack_status
from exfm.stack import services as S
from exfm.stack.procs import ProcSpec, pid_alive, port_in_use, read_pid, start_proc, stop_proc


def _cfg(tmp_path, *sets):
    return load_config(None, [f"state_dir={tmp_path / 'state'}", *sets], env={})


def test_dependency_order():
    assert resolve_services(["mlflow"]) == ["s3", "mlflow"]
    assert resolve_services(["airflow", "ray"]) == ["ray", "airflow"]
    assert resolve_services(None) == ["s3", "mlflow", "ray", "airflow"]
    with pytest.raises(StackError, match="unknown"):
        resolve_services(["redis"])


def test_ports_are_distinct_and_derived_from_config(tmp_path):
    cfg = _cfg(tmp_path)
    ports = [p for _, _, p in S.all_ports(cfg)]
    assert len(ports) == len(set(ports))
    moved = _cfg(tmp_path, "ports.ray_gcs=30000", "ports.seaweed_master=31000")
    rp = S.service_ports(moved)["ray"]
    assert rp["gcs"] == 30000 and rp["node-manager"] == 30001
    assert S.service_ports(moved)["s3"]["master-grpc"] == 41000
    moved_derived = {p for s, label, p in S.all_ports(moved) if s == "ray"
                     and label not in ("dashboard", "client")}
    assert not set(ports) & moved_derived


def test_ray_temp_dir_is_short_and_per_state_dir(tmp_path):
    a = _cfg(tmp_path / ("x" * 150))
    b = _cfg(tmp_path / "other")
    assert len(str(S.ray_temp_dir(a))) < 30
    assert S.ray_temp_dir(a) != S.ray_temp_dir(b)


def test_secrets_generated_once_with_mode_0600(tmp_path):
    cfg = _cfg(tmp_path)
    first, made = S.ensure_secrets(cfg)
    assert {"s3_access_key", "s3_secret_key", "airflow_password", "ray_auth_token"} <= set(made)
    path = cfg.state_path / "secrets.json"
    assert path.stat().st_mode & 0o777 == 0o600
    second, made2 = S.ensure_secrets(cfg)
    assert first == second and made2 == []
    assert cfg.s3_credentials() == (first["s3_access_key"], first["s3_secret_key"])


def test_client_env_carries_what_clients_need(tmp_path, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "EXFM_S3_ACCESS_KEY",
                "EXFM_S3_SECRET_KEY", "EXFM_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    cfg = _cfg(tmp_path, "ports.mlflow=5123")
    sec, _ = S.ensure_secrets(cfg)
    S.write_config_dump(cfg)
    env = client_env(cfg)
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5123"
    assert env["MLFLOW_S3_ENDPOINT_URL"] == cfg.s3_endpoint
    assert env["AWS_ACCESS_KEY_ID"] == sec["s3_access_key"]
    assert env["RAY_ADDRESS"] == cfg.ray_address
    assert env["RAY_AUTH_TOKEN"] == sec["ray_auth_token"] and env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert env["EXFM_STATE_DIR"] == str(cfg.state_path)
    # the dumped config reloads to the same ports, without the S3 keys in it
    reloaded = load_config(env["EXFM_CONFIG"], env={})
    assert reloaded.ports == cfg.ports and reloaded.state_path == cfg.state_path
    # ... and to the same data folder from another working directory (Airflow tasks run in the
    # Airflow home: a relative data.dir there named a second, generated copy of the data)
    assert not Path(cfg.data.dir).is_absolute()
    here = Path.cwd() / cfg.data.dir
    monkeypatch.chdir(tmp_path)
    assert load_config(env["EXFM_CONFIG"], env={}).data_path == here.resolve() != cfg.data_path
    assert sec["s3_secret_key"] not in open(env["EXFM_CONFIG"]).read()


def test_airflow_env_uses_configured_ports_and_shared_secrets(tmp_path):
    cfg = _cfg(tmp_path, "ports.airflow=18080", "ports.airflow_log=18793", "airflow.parallelism=3")
    S.ensure_secrets(cfg)
    env = S.airflow_env(cfg)
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "18793"
    assert env["AIRFLOW__CORE__PARALLELISM"] == "3"
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] and env["AIRFLOW__CORE__FERNET_KEY"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:///")
    S.write_airflow_passwords(cfg)
    pw = json.loads((S.airflow_home(cfg) / "simple_auth_manager_passwords.json").read_text())
    assert pw == {"admin": S.read_state_secrets(cfg.state_path)["airflow_password"]}


def test_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert port_in_use("127.0.0.1", s.getsockname()[1])


def test_start_stop_process_group(tmp_path):
    run = tmp_path / "run"
    # a leader that forks a child: stopping must end both
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"
    spec = ProcSpec("sleeper", [sys.executable, "-c", code], {}, tmp_path / "sleeper.log",
                    stop_signal=signal.SIGTERM, stop_timeout=5)
    info = start_proc(spec, run)
    assert pid_alive(read_pid(run, "sleeper"))
    assert stop_proc(run, "sleeper", log=lambda m: None)
    assert not pid_alive(info)
    assert read_pid(run, "sleeper") is None


def test_status_of_a_fresh_state_dir(tmp_path):
    cfg = _cfg(tmp_path)
    st = stack_status(cfg)
    assert [s.name for s in st] == ["s3", "mlflow", "ray", "airflow"]
    assert not any(s.healthy for s in st) and all(s.pid is None for s in st)
