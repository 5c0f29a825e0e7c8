"""The embedded stack really starts, serves, stops cleanly and keeps its data."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request

import pytest

from exfm.stack import StackError, client_env, stack_down, stack_status, stack_up
from exfm.stack import services as S
from exfm.stack.procs import processes_referencing, read_pid
from tests.integration.conftest import make_test_config

pytestmark = pytest.mark.integration


def _ours(cfg) -> list[int]:
    return processes_referencing([str(cfg.state_path) + "/", str(S.ray_temp_dir(cfg)) + "/"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_up_status_down_restart_keeps_objects(tmp_path):
    cfg = make_test_config(tmp_path)
    try:
        t = time.monotonic()
        statuses = stack_up(cfg, ["mlflow", "ray"])  # s3 comes in as mlflow's dependency
        print(f"up in {time.monotonic() - t:.1f} s")
        assert [s.name for s in statuses] == ["s3", "mlflow", "ray"]
        assert all(s.healthy for s in statuses), statuses
        # idempotent: a second up starts nothing new
        pids = {p: read_pid(S.run_dir(cfg), p)["pid"] for p in ("s3", "mlflow", "ray")}
        stack_up(cfg, ["s3", "mlflow", "ray"])
        assert pids == {p: read_pid(S.run_dir(cfg), p)["pid"] for p in pids}
        secrets_file = cfg.state_path / "secrets.json"
        assert oct(secrets_file.stat().st_mode & 0o777) == "0o600"

        s3 = S.s3_client(cfg)
        s3.put_object(Bucket=cfg.storage.bucket, Key="probe/hello.txt", Body=b"hello")

        t = time.monotonic()
        stack_down(cfg)
        print(f"down in {time.monotonic() - t:.1f} s")
        assert not any(_alive(p) for p in pids.values())
        assert _ours(cfg) == []
        assert not list(S.run_dir(cfg).glob("*.pid"))
        assert not any(s.healthy for s in stack_status(cfg))

        stack_up(cfg, ["s3"])
        body = S.s3_client(cfg).get_object(Bucket=cfg.storage.bucket, Key="probe/hello.txt")
        assert body["Body"].read() == b"hello"
    finally:
        stack_down(cfg)
    assert _ours(cfg) == []


def test_taken_port_is_a_clear_error(tmp_path):
    cfg = make_test_config(tmp_path)
    with socket.socket() as blocker:
        blocker.bind((cfg.host, cfg.ports.mlflow))
        blocker.listen()
        with pytest.raises(StackError) as e:
            stack_up(cfg, ["mlflow"])
    msg = str(e.value)
    assert str(cfg.ports.mlflow) in msg and "mlflow" in msg
    stack_down(cfg)
    assert _ours(cfg) == []


def test_clients_reach_the_session_stack(stack_cfg):
    """What a test, a Ray job and an MLflow client get from client_env works end to end."""
    import mlflow
    import ray
    from ray.job_submission import JobStatus, JobSubmissionClient

    env = client_env(stack_cfg)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_URI",
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


@pytest.mark.postgres
def test_mlflow_on_postgres_records_an_experiment(postgres_stack_cfg):
    import mlflow
    from sqlalchemy import create_engine, text

    from exfm.db import database_url

    cfg = postgres_stack_cfg
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


@pytest.mark.slow
def test_airflow_up_health_and_token(airflow_stack_cfg):
    cfg = airflow_stack_cfg
    st = {s.name: s for s in stack_status(cfg)}
    assert st["airflow"].healthy, st["airflow"]
    token = S.airflow_token(cfg)
    req = urllib.request.Request(S.airflow_url(cfg) + "/api/v2/dags",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert "dags" in json.loads(r.read())
    # the log servers honour the configured ports (not 8793/8794)
    busy = {p for p in (cfg.ports.airflow_log, cfg.ports.airflow_trigger_log)
            if socket.socket().connect_ex((cfg.host, p)) == 0}
    assert busy == {cfg.ports.airflow_log, cfg.ports.airflow_trigger_log}
