"""No secret where other local users or the UIs can read it (real stack).

The stack's S3 secret key and Ray token must not appear in any process's command line
(``/proc/*/cmdline`` is world-readable), in a Ray job's submission (entrypoint, runtime_env,
metadata: shown by the Jobs API and the dashboard), in MLflow params or tags of a registered
snapshot's run, or in the stack's and the job's logs; the state folder, PID files and logs are
private to their owner; SeaweedFS's own ports refuse requests without the stack's JWT.
"""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from exfm.config import read_state_secrets

pytestmark = pytest.mark.integration


def _secrets(cfg) -> list[str]:
    """Every secret of the stack: S3 secret key, Ray token, MLflow and Airflow admin passwords
    and signing keys, a database URL's password."""
    from sqlalchemy.engine import make_url

    st = read_state_secrets(cfg.state_path)
    out = [cfg.s3_credentials()[1]]
    out += [v for k, v in st.items() if k not in ("s3_access_key",)]
    out.append(make_url(cfg.database.url.get_secret_value()).password or "")
    return sorted({s for s in out if s and len(s) >= 8})


def _cmdlines() -> dict[int, str]:
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                out[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace")
            except OSError:
                continue
    return out


def test_no_secret_on_any_command_line(stack_cfg):
    leaks = {pid: cmd[:120] for pid, cmd in _cmdlines().items()
             for s in _secrets(stack_cfg) if s in cmd}
    assert not leaks, leaks


def test_state_folder_pid_files_and_logs_are_private(stack_cfg):
    state = stack_cfg.state_path
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for f in list((state / "run").glob("*.pid")) + list((state / "logs").glob("*.log")):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert not any(s in f.read_text(errors="replace") for s in _secrets(stack_cfg)), f


def test_ray_job_submission_and_mlflow_hold_no_secret(stack_cfg, tmp_path):
    import mlflow

    from exfm.compute.submit import job_client, submit_and_wait
    from exfm.registry.mlflow_registry import connect, ensure_experiments, register_fm
    from tests.integration.test_registry import tiny_fm

    sid = f"test-secrets-{int(time.time())}"
    # the job proves it can still reach S3 and MLflow with the keys and the login from its 0600
    # secrets file (the Ray head's environment holds no MLflow login to inherit)
    job = ("import json, os; from exfm.config import load_config; "
           "from exfm.registry.mlflow_registry import connect; "
           "from exfm.storage.s3 import ensure_bucket; cfg = load_config(); ensure_bucket(cfg); "
           "inherited = 'MLFLOW_TRACKING_PASSWORD' in os.environ; "
           "n = len(connect(cfg).search_experiments(max_results=5)); "
           "print('EXFM_RESULT ' + json.dumps({'ok': True, 'inherited': inherited, "
           "'mlflow': n > 0}), flush=True)")
    lines: list[str] = []
    assert submit_and_wait(stack_cfg, ["-c", job], sid, log=lines.append, timeout_s=180) == {
        "ok": True, "inherited": False, "mlflow": True}
    info = job_client(stack_cfg).get_job_info(sid)
    shown = json.dumps({"entrypoint": info.entrypoint, "runtime_env": info.runtime_env,
                        "metadata": info.metadata}, default=str)
    logs = job_client(stack_cfg).get_job_logs(sid) + "\n".join(lines)
    cfg = stack_cfg.model_copy(update={"das": stack_cfg.das.model_copy(
        update={"fm_model": "exfm-fm-sectest"})})
    ensure_experiments(cfg, vms=[])
    version = register_fm(cfg, tiny_fm(cfg), "2026-05-01", 64, ["s3://b/raw/day=2026-05-01/"],
                          tags={"train_run": "fm-sectest"})
    mv = connect(cfg).get_model_version(cfg.das.fm_model, version)
    run = mlflow.get_run(mv.run_id)
    recorded = json.dumps({"version_tags": mv.tags, "params": run.data.params,
                           "run_tags": run.data.tags})
    for s in _secrets(stack_cfg):
        assert s not in shown, "a secret in the Ray job's submission"
        assert s not in logs, "a secret in the job's logs"
        assert s not in recorded, "a secret in MLflow params/tags"
    assert "EXFM_SECRETS_FILE" in shown  # the job got a path to its keys, not the keys


def _mlflow_get(cfg, path: str, auth: tuple[str, str] | None) -> int:
    import base64
    import urllib.error
    import urllib.request

    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(cfg.tracking_uri + path,
                                                           headers=headers), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_mlflow_refuses_every_call_without_the_login(stack_cfg, monkeypatch):
    """MLflow runs its basic-auth app: the REST API, the artifact proxy (which holds the stack's
    S3 keys) and the registry answer 401 without the generated admin login or with a wrong one;
    with it they work. Nobody can register an ``exfm-fm`` version for the DAS to serve."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from exfm.registry.mlflow_registry import TRACKING_USER, connect, tracking_credentials
    from exfm.stack.services import mlflow_auth_config, mlflow_auth_db

    login = tracking_credentials(stack_cfg)
    assert login is not None and login[0] == TRACKING_USER == "admin"
    probes = ["/api/2.0/mlflow/experiments/search?max_results=1",
              "/api/2.0/mlflow/registered-models/search?max_results=1",
              "/api/2.0/mlflow-artifacts/artifacts?path=",
              "/ajax-api/2.0/mlflow/experiments/search?max_results=1"]
    for path in probes:
        assert _mlflow_get(stack_cfg, path, None) == 401, path
        assert _mlflow_get(stack_cfg, path, ("admin", "wrong-password")) == 401, path
    assert _mlflow_get(stack_cfg, probes[0], login) == 200
    assert _mlflow_get(stack_cfg, "/health", None) == 200  # the liveness probe stays open
    for f in (mlflow_auth_config(stack_cfg), mlflow_auth_db(stack_cfg)):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f

    client = connect(stack_cfg)  # with the login (from the state folder)
    name = f"exfm-fm-authprobe-{int(time.time())}"
    client.create_registered_model(name)
    exp = client.get_experiment_by_name("Default") or client.get_experiment("0")
    run = client.create_run(exp.experiment_id)
    for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(k, raising=False)
    anonymous = mlflow.MlflowClient(stack_cfg.tracking_uri)
    with pytest.raises(MlflowException) as e:
        anonymous.create_model_version(name, f"runs:/{run.info.run_id}/model",
                                       run_id=run.info.run_id)
    assert "401" in str(e.value) or "authenticat" in str(e.value).lower()
    with pytest.raises(MlflowException):
        anonymous.search_registered_models()
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-password")
    with pytest.raises(MlflowException):
        anonymous.create_model_version(name, f"runs:/{run.info.run_id}/model",
                                       run_id=run.info.run_id)
    client = connect(stack_cfg)  # the registry's own client puts the real login back
    assert client.search_model_versions(f"name='{name}'") == []  # nothing was registered


def test_seaweedfs_ports_refuse_requests_without_the_stacks_jwt(stack_cfg):
    """Only the S3 gateway (with the S3 keys) reaches the data: a local user writing straight to
    the volume server or reading through the filer's HTTP port gets 401 (security.toml's keys)."""
    import urllib.error
    import urllib.request

    from exfm.stack.services import service_ports
    from exfm.storage.s3 import ensure_bucket, s3_client

    ensure_bucket(stack_cfg)
    s3_client(stack_cfg).put_object(Bucket=stack_cfg.storage.bucket, Key="sec/probe.txt",
                                    Body=b"private")
    toml = stack_cfg.state_path / "security.toml"
    assert stat.S_IMODE(toml.stat().st_mode) == 0o600 and "[jwt.signing]" in toml.read_text()
    ports = service_ports(stack_cfg)["s3"]
    assign = json.loads(urllib.request.urlopen(
        f"http://127.0.0.1:{ports['master']}/dir/assign", timeout=10).read())
    with pytest.raises(urllib.error.HTTPError) as put:
        urllib.request.urlopen(urllib.request.Request(
            f"http://{assign['url']}/{assign['fid']}", data=b"x", method="PUT"), timeout=10)
    assert put.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as get:
        urllib.request.urlopen(f"http://127.0.0.1:{ports['filer']}/buckets/"
                               f"{stack_cfg.storage.bucket}/sec/probe.txt", timeout=10)
    assert get.value.code == 401
    assert s3_client(stack_cfg).get_object(Bucket=stack_cfg.storage.bucket,
                                           Key="sec/probe.txt")["Body"].read() == b"private"


# --- one day, end to end ------------------------------------------------------------------------
def _log_files(cfg) -> list[Path]:
    """Every log the stack and the day wrote: the service logs, Airflow's own and task logs
    (under the state folder) and the Ray head's session logs (job drivers, workers, dashboard)."""
    from exfm.stack.services import ray_temp_dir

    state = cfg.state_path
    out = [p for p in state.rglob("*") if p.is_file() and (
        p.suffix in (".log", ".out", ".err") or "logs" in p.relative_to(state).parts)]
    out += [p for p in ray_temp_dir(cfg).rglob("*") if p.is_file() and (
        "logs" in p.parts) and p.stat().st_size < 50 * 2**20]
    return out


class _CmdlineWatch:
    """Samples every process's command line while the day runs (a leak may live only as long as
    one short process)."""

    def __init__(self, secrets: list[str]):
        import threading

        self.secrets, self.leaks, self.seen = secrets, {}, set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid, cmd in _cmdlines().items():
                self.seen.add(pid)
                for s in self.secrets:
                    if s in cmd:  # reported with the secret itself hidden
                        self.leaks[pid] = cmd.replace(s, f"<secret {s[:3]}...>")[:240]
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.mark.postgres
@pytest.mark.slow
def test_one_day_leaks_no_secret(tmp_path):
    """``exfm run-day`` (land, gates, FM blessing, DAS, FM and VM training as Ray jobs, promotion,
    report) on a stack with every service, its databases on PostgreSQL behind a URL with a
    password. No secret (S3 secret key, Ray token, MLflow and Airflow passwords and keys, the
    database password) appears in any process's command line while it runs, in any Ray job's
    entrypoint/runtime_env/metadata, in MLflow's params and tags, in the CLI's output, or in any
    log file the stack and the day wrote."""
    import os
    import secrets as _s
    import subprocess
    import sys

    import mlflow
    from sqlalchemy.engine import make_url

    from exfm.compute.submit import job_client
    from exfm.registry.mlflow_registry import connect
    from exfm.stack import client_env, stack_down, stack_up
    from exfm.stack.services import config_dump_path
    from tests.integration.conftest import _drop_databases, _postgres_reachable, make_test_config

    if not _postgres_reachable():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    db_password = "pgpw-" + _s.token_urlsafe(16)  # trust auth on loopback ignores it; it travels
    day = "2026-01-01"
    cfg = make_test_config(
        tmp_path, "data.source=generate", f"data.dir={tmp_path / 'data'}",
        "data.generator.days=1", "data.generator.rows_per_day=2000", "data.generator.seed=5",
        f"data.generator.start_date={day}",
        "vms=[{name: leak-d0, model: deepfam, task: click, domain: d0, control: false}]",
        database__kind="postgres", database__db_prefix="exfmt_" + _s.token_hex(4),
        database__url=f"postgresql://postgres:{db_password}@127.0.0.1:5432/postgres")
    assert make_url(cfg.database.url.get_secret_value()).password == db_password
    try:
        stack_up(cfg, log=lambda m: None)
        secrets = _secrets(cfg)
        assert db_password in secrets and len(secrets) >= 10, len(secrets)
        env = {**os.environ, **client_env(cfg), "EXFM_CONFIG": str(config_dump_path(cfg))}
        for k in ("EXFM_DATABASE_URL", "EXFM_SECRETS_FILE"):
            env.pop(k, None)
        with _CmdlineWatch(secrets) as watch:
            proc = subprocess.run([str(Path(sys.executable).parent / "exfm"), "run-day",
                                   "--day", day], env=env, text=True, capture_output=True,
                                  timeout=1800)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        assert len(watch.seen) > 50  # it really sampled while the day ran
        assert not watch.leaks, watch.leaks

        jobs = job_client(cfg).list_jobs()
        ids = {j.submission_id for j in jobs}  # run-day tags its jobs: exfm-fm-<day>_r<time>
        assert all(any((i or "").startswith(f"{p}_r") for i in ids)
                   for p in (f"exfm-fm-{day}", f"exfm-vm-leak-d0-{day}")), ids
        shown = json.dumps([{"entrypoint": j.entrypoint, "runtime_env": j.runtime_env,
                             "metadata": j.metadata} for j in jobs], default=str)
        client = connect(cfg)
        recorded = []
        for exp in client.search_experiments():
            recorded.append(exp.tags)
            for run in mlflow.search_runs([exp.experiment_id], output_format="list"):
                recorded.append({"params": run.data.params, "tags": run.data.tags})
        for rm in client.search_registered_models():
            for mv in client.search_model_versions(f"name='{rm.name}'"):
                recorded.append(mv.tags)
        assert len(recorded) > 5
        recorded_text = json.dumps(recorded, default=str)
        logs = _log_files(cfg)
        assert any("job-driver" in p.name for p in logs) and any(
            p.name == "mlflow.log" for p in logs) and any("airflow" in p.name for p in logs)
        for s in secrets:
            where = [name for name, text in (("CLI output", out), ("Ray Jobs API", shown),
                                             ("MLflow params/tags", recorded_text)) if s in text]
            where += [str(p) for p in logs if s in p.read_text(errors="replace")]
            assert not where, f"a secret ({s[:3]}...) in {where}"
    finally:
        stack_down(cfg, log=lambda m: None)
        _drop_databases(cfg)
