"""The embedded stack really starts, serves, stops cleanly and keeps its data."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from exfm.stack import StackError, client_env, stack_down, stack_status, stack_up
from exfm.stack import services as S
from exfm.stack.procs import processes_referencing, processes_with_env
from tests.integration.conftest import make_test_config

pytestmark = pytest.mark.integration

PROBE_DAG = '''
"""A task that proves it can reach the stack: env from client_env, a PUT into the bucket."""
import pendulum
from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False)
def exfm_probe():
    @task
    def probe():
        import os

        import boto3

        from mlflow import MlflowClient

        need = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3",
                "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                "RAY_ADDRESS", "RAY_AUTH_TOKEN", "EXFM_CONFIG"]
        missing = [k for k in need if not os.environ.get(k)]
        assert not missing, missing
        boto3.client("s3").put_object(Bucket="exfm", Key="probe/from-airflow.txt", Body=b"af")
        MlflowClient().search_experiments(max_results=1)  # MLflow asks for the login
        print("PROBE-OK")

    probe()


exfm_probe()
'''


def _ours(cfg) -> list[int]:
    """Live processes of this stack: by command line (state or Ray temp dir) and by env marker."""
    by_cmd = processes_referencing([str(cfg.state_path) + "/", str(S.ray_temp_dir(cfg)) + "/"])
    by_env = processes_with_env({S.STACK_ID_ENV: S.stack_id(cfg)})
    return sorted(set(by_cmd) | set(by_env))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"


def _listen_hosts(port: int) -> set[str]:
    """Local addresses with a LISTEN socket on ``port`` (from /proc/net/tcp and tcp6)."""
    out = set()
    for name in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.rsplit(":", 1)
            if state == "0A" and int(p, 16) == port:
                out.add(addr)
    return out


def _airflow(cfg, method: str, path: str, body=None, token: str | None = None):
    req = urllib.request.Request(
        S.airflow_url(cfg) + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:  # the API server is slow under load
        raw = r.read()
    try:
        return json.loads(raw or b"{}")
    except ValueError:
        return raw.decode(errors="replace")


def _run_probe_dag(cfg) -> str:
    """Unpause and trigger ``exfm_probe``; wait for it; return the task's log."""
    token = S.airflow_token(cfg)
    deadline = time.monotonic() + 120
    while True:  # the dag-processor parses the new file within seconds
        try:
            _airflow(cfg, "GET", "/api/v2/dags/exfm_probe", token=token)
            break
        except urllib.error.HTTPError:
            assert time.monotonic() < deadline, "exfm_probe was never parsed"
            time.sleep(1)
    _airflow(cfg, "PATCH", "/api/v2/dags/exfm_probe", {"is_paused": False}, token)
    run = _airflow(cfg, "POST", "/api/v2/dags/exfm_probe/dagRuns", {"logical_date": None}, token)
    path = f"/api/v2/dags/exfm_probe/dagRuns/{run['dag_run_id']}"
    deadline = time.monotonic() + 180
    while (state := _airflow(cfg, "GET", path, token=token)["state"]) not in ("success", "failed"):
        assert time.monotonic() < deadline, f"probe run still {state}"
        time.sleep(1)
    log = json.dumps(_airflow(cfg, "GET", f"{path}/taskInstances/probe/logs/1", token=token))
    assert state == "success", log[-3000:]
    return log


def test_up_status_dag_down_restart_keeps_objects(tmp_path):
    """All four services from nothing: healthy, usable (an object, an Airflow task), stopped
    without leftovers, and a second up finds the data again."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "exfm_probe.py").write_text(PROBE_DAG)
    cfg = make_test_config(tmp_path)
    # as on a user's first `up`: MLflow's admin password is generated now (not the session's)
    sec_file = cfg.state_path / "secrets.json"
    sec_file.write_text(json.dumps({k: v for k, v in json.loads(sec_file.read_text()).items()
                                    if k != "mlflow_admin_password"}))
    lines: list[str] = []
    try:
        t = time.monotonic()
        statuses = stack_up(cfg, dags_folder=dags, log=lines.append)
        print(f"up (all four) in {time.monotonic() - t:.1f} s")
        assert [s.name for s in statuses] == ["s3", "mlflow", "ray", "airflow"]
        assert all(s.healthy for s in statuses), [(s.name, s.healthy, s.detail) for s in statuses]
        assert all(s.healthy and s.pid for s in stack_status(cfg))
        secrets = json.loads((cfg.state_path / "secrets.json").read_text())
        assert oct((cfg.state_path / "secrets.json").stat().st_mode & 0o777) == "0o600"
        # the generated Airflow and MLflow passwords are printed once, the S3 secret never
        assert sum(secrets["airflow_password"] in m for m in lines) == 1
        assert sum(secrets["mlflow_admin_password"] in m for m in lines) == 1
        assert any(m.startswith("mlflow: user 'admin', password") for m in lines)
        assert not any(secrets["s3_secret_key"] in m for m in lines)
        # nothing listens beyond loopback, Airflow's log servers included
        for port in (cfg.ports.airflow_log, cfg.ports.airflow_trigger_log, cfg.ports.s3,
                     cfg.ports.mlflow, cfg.ports.ray_dashboard, cfg.ports.ray_gcs):
            hosts = _listen_hosts(port)
            assert hosts and hosts <= {"0100007F", "0000000000000000FFFF00000100007F"}, (port, hosts)

        # idempotent: a second up starts nothing and prints no secret
        pids = {s.name: s.pid for s in stack_status(cfg)}
        again: list[str] = []
        stack_up(cfg, dags_folder=dags, log=again.append)
        assert pids == {s.name: s.pid for s in stack_status(cfg)}
        assert all("already running" in m for m in again), again
        assert not any(secrets["airflow_password"] in m or
                       secrets["mlflow_admin_password"] in m for m in again)

        s3 = S.s3_client(cfg)
        s3.put_object(Bucket=cfg.storage.bucket, Key="probe/hello.txt", Body=b"hello")
        task_log = _run_probe_dag(cfg)
        assert "PROBE-OK" in task_log
        # the task ran with every secret in its environment: none reached a log (task logs
        # under AIRFLOW_HOME included) nor the API's copy of the task's log
        logs = [p for p in cfg.state_path.rglob("*") if p.is_file() and (
            p.suffix == ".log" or "logs" in p.relative_to(cfg.state_path).parts)]
        assert any("task_id=probe" in str(p) for p in logs), logs
        for name, value in secrets.items():
            if name != "s3_access_key" and len(value) >= 8:
                assert value not in task_log, name
                assert not [str(p) for p in logs if value in p.read_text(errors="replace")], name

        t = time.monotonic()
        stack_down(cfg)
        print(f"down in {time.monotonic() - t:.1f} s")
        left = {n: (p, _cmdline(p)) for n, p in pids.items() if _alive(p)}
        assert not left, left
        assert _ours(cfg) == []
        assert not list(S.run_dir(cfg).glob("*.pid"))
        assert not S.ray_temp_dir(cfg).exists()
        assert not any(s.healthy for s in stack_status(cfg))

        stack_up(cfg, ["s3"])
        s3 = S.s3_client(cfg)
        for key, body in (("probe/hello.txt", b"hello"), ("probe/from-airflow.txt", b"af")):
            assert _get_after_restart(s3, cfg.storage.bucket, key) == body
    finally:
        stack_down(cfg)
    assert _ours(cfg) == []


def test_taken_port_is_a_clear_error(tmp_path):
    cfg = make_test_config(tmp_path)
    with socket.socket() as blocker:
        blocker.bind((cfg.host, cfg.ports.s3))
        blocker.listen()
        with pytest.raises(StackError) as e:
            stack_up(cfg)
    msg = str(e.value)
    assert f"port {cfg.ports.s3}" in msg and "(s3 s3)" in msg and "ports.s3" in msg
    assert not list(S.run_dir(cfg).glob("*.pid"))  # nothing was started
    assert _ours(cfg) == []


def test_clients_reach_the_session_stack(stack_cfg):
    """What a test, a Ray job and an MLflow client get from client_env works end to end."""
    import mlflow
    import ray
    from ray.job_submission import JobStatus, JobSubmissionClient

    env = client_env(stack_cfg)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_URI",
              "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
              "MLFLOW_S3_ENDPOINT_URL", "RAY_ADDRESS", "RAY_AUTH_TOKEN", "EXFM_CONFIG"):
        assert os.environ[k] == env[k]

    assert all(s.healthy for s in stack_status(stack_cfg, ["s3", "mlflow", "ray"]))
    ray.init(log_to_driver=False)
    try:
        assert ray.get(ray.remote(lambda: 40 + 2).remote()) == 42
    finally:
        ray.shutdown()

    client = JobSubmissionClient(stack_cfg.ray_dashboard_url)
    code = ("import os, exfm.config as c; cfg = c.load_config(); "
            "print('EXFM_RESULT', cfg.s3_endpoint, bool(os.environ.get('AWS_ACCESS_KEY_ID')))")
    job = client.submit_job(entrypoint=f'python -c "{code}"')
    deadline = time.monotonic() + 120
    while not client.get_job_status(job).is_terminal():
        assert time.monotonic() < deadline, "ray job did not finish"
        time.sleep(0.5)
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs
    assert f"EXFM_RESULT {stack_cfg.s3_endpoint} True" in logs

    mlflow.set_tracking_uri(stack_cfg.tracking_uri)
    exp = mlflow.set_experiment("stack-smoke")
    with mlflow.start_run(experiment_id=exp.experiment_id) as run:
        mlflow.log_metric("m", 1.0)
        mlflow.log_text("artifact", "a.txt")
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/a.txt") == "artifact"
    # the artifact went through the proxy into the bucket
    keys = [o["Key"] for o in S.s3_client(stack_cfg).list_objects_v2(
        Bucket=stack_cfg.storage.bucket, Prefix="mlflow/").get("Contents", [])]
    assert any(k.endswith("/a.txt") for k in keys), keys


@pytest.mark.postgres
def test_mlflow_on_postgres_records_an_experiment(postgres_stack_cfg):
    import mlflow
    from sqlalchemy import create_engine, text

    from exfm.db import database_url
    from exfm.stack.services import mlflow_auth_db

    cfg = postgres_stack_cfg
    assert cfg.database.kind == "postgres"
    # basic-auth on PostgreSQL too; its users live in SQLite under the state folder
    try:
        urllib.request.urlopen(cfg.tracking_uri + "/api/2.0/mlflow/experiments/search"
                               "?max_results=1", timeout=30)
        raise AssertionError("MLflow on PostgreSQL answered without a login")
    except urllib.error.HTTPError as e:
        assert e.code == 401
    assert mlflow_auth_db(cfg).stat().st_size > 0
    client = mlflow.MlflowClient(cfg.tracking_uri)
    exp_id = client.create_experiment("pg-probe")
    run = client.create_run(exp_id)
    client.log_metric(run.info.run_id, "auc", 0.75)
    engine = create_engine(database_url(cfg, "mlflow", create=False))
    try:
        with engine.connect() as conn:
            names = conn.execute(text("SELECT name FROM experiments")).scalars().all()
    finally:
        engine.dispose()
    assert "pg-probe" in names


def _get_after_restart(s3, bucket: str, key: str, timeout: float = 30.0) -> bytes:
    """Read an object right after SeaweedFS restarts: its S3 API answers before the volume
    serves reads and briefly returns InternalError (seen under load); a missing object is
    still a failure (NoSuchKey is raised at once)."""
    from botocore.exceptions import ClientError

    deadline = time.monotonic() + timeout
    while True:
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "InternalError" or time.monotonic() > deadline:
                raise
            time.sleep(1)
