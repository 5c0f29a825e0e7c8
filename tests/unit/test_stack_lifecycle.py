"""stack_up/stack_down's orchestration on stand-in services (tiny shell processes): start order,
idempotence, a retried start, a failed start with its log, and a clean down."""

from __future__ import annotations

import signal
import time

import pytest

from exfm.config import load_config
from exfm.stack import StackError, stack_down, stack_status, stack_up
from exfm.stack import services as S
from exfm.stack.procs import ProcSpec, pid_alive, processes_with_env, read_pid


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Every service becomes `sh` processes; healthy = a file the process writes on start."""
    cfg = load_config(None, [f"state_dir={tmp_path / 'state'}"], env={})
    flags = tmp_path / "flags"
    flags.mkdir()
    behaviour: dict[str, list[str]] = {}  # service -> scripts for successive starts

    def procs(service):
        def make(cfg, *args):
            scripts = behaviour.get(service) or ["touch {flag}; exec sleep 300"]
            script = scripts.pop(0) if len(scripts) > 1 else scripts[0]
            env = S._base_env(cfg, service)
            out = []
            for name in S.proc_names(service):
                out.append(ProcSpec(name, ["/bin/sh", "-c", script.format(flag=flags / name)],
                                    env, S.log_dir(cfg) / f"{name}.log",
                                    stop_signal=signal.SIGTERM, stop_timeout=5))
            return out
        return make

    def health(service):
        def check(cfg):
            ok = all((flags / p).exists() for p in S.proc_names(service))
            return ok, "flag" if ok else "no flag yet"
        return check

    for svc in S.SERVICES:
        monkeypatch.setattr(S, f"{svc}_procs", procs(svc))
        monkeypatch.setitem(S.HEALTH, svc, health(svc))
    monkeypatch.setattr(S, "READY_LINE", {})
    monkeypatch.setattr(S, "write_airflow_passwords", lambda cfg: None)
    monkeypatch.setattr(S, "airflow_token", lambda cfg: "token")
    monkeypatch.setattr("exfm.stack.lifecycle._airflow_migrate", lambda cfg, dags, log: log("  migrate"))
    monkeypatch.setattr(S, "_check_free", None, raising=False)
    # no real ports: nothing listens in this test
    monkeypatch.setattr("exfm.stack.lifecycle._check_ports", lambda cfg, service: None)
    yield cfg, behaviour, flags
    stack_down(cfg, log=lambda m: None)


def _ours(cfg):
    return processes_with_env({S.STACK_ID_ENV: S.stack_id(cfg)})


def test_up_orders_waves_is_idempotent_and_down_leaves_nothing(fake):
    cfg, _, flags = fake
    lines: list[str] = []
    statuses = stack_up(cfg, log=lines.append)
    assert [s.name for s in statuses] == S.SERVICES and all(s.healthy for s in statuses)
    starts = [m.split(":")[0] for m in lines if m.endswith(f"(log: {S.log_dir(cfg)})")]
    healthy = [m.split(":")[0] for m in lines if ": healthy in" in m]
    # s3 before mlflow (dependency); airflow only after every other service is healthy
    assert starts.index("s3") < starts.index("mlflow")
    assert lines.index(next(m for m in lines if m.startswith("airflow: starting"))) > max(
        lines.index(next(m for m in lines if m.startswith(f"{s}: healthy"))) for s in
        ("s3", "mlflow", "ray"))
    assert sorted(healthy) == sorted(S.SERVICES)
    # the first up that starts Airflow / MLflow shows its generated admin password once
    sec = S.ensure_secrets(cfg)[0]
    for svc, key in (("airflow", "airflow_password"), ("mlflow", "mlflow_admin_password")):
        assert sum(sec[key] in m for m in lines) == 1, svc
        assert any(m.startswith(f"{svc}: user '") and "secrets.json" in m for m in lines)

    pids = {s.name: s.pid for s in stack_status(cfg)}
    again: list[str] = []
    stack_up(cfg, log=again.append)
    assert {s.name: s.pid for s in stack_status(cfg)} == pids
    assert len(again) == 4 and all("already running" in m for m in again)
    assert not any(sec["mlflow_admin_password"] in m for m in again)

    assert len(_ours(cfg)) == 1 + 1 + 1 + 4
    stack_down(cfg, log=lambda m: None)
    assert _ours(cfg) == []
    assert not list(S.run_dir(cfg).glob("*.pid"))
    assert not any(s.healthy for s in stack_status(cfg))


def test_a_crashed_start_is_retried_once(fake):
    cfg, behaviour, _ = fake
    behaviour["ray"] = ["echo boom; exit 3", "touch {flag}; exec sleep 300"]
    lines: list[str] = []
    stack_up(cfg, ["ray"], log=lines.append)
    assert any(m.startswith("ray: start failed") and "retrying" in m for m in lines)
    assert pid_alive(read_pid(S.run_dir(cfg), "ray"))


def test_a_failed_start_is_stopped_and_shows_its_log(fake):
    cfg, behaviour, _ = fake
    behaviour["s3"] = ["echo 'bad flag -xyz'; exit 2"]
    with pytest.raises(StackError) as e:
        stack_up(cfg, ["mlflow"], log=lambda m: None)
    msg = str(e.value)
    assert e.value.service == "s3"
    assert "s3 failed to start: process s3 exited" in msg
    assert "bad flag -xyz" in msg and str(S.log_dir(cfg) / "s3.log") in msg
    assert read_pid(S.run_dir(cfg), "mlflow") is None  # never started: its dependency failed
    assert _ours(cfg) == []


def test_a_partial_airflow_is_restarted_whole(fake):
    import os

    cfg, _, _ = fake
    stack_up(cfg, ["airflow"], log=lambda m: None)
    victim = read_pid(S.run_dir(cfg), "airflow-triggerer")
    os.killpg(victim["pgid"], signal.SIGKILL)
    for _ in range(100):
        if not pid_alive(victim):
            break
        time.sleep(0.05)
    st = {s.name: s for s in stack_status(cfg)}["airflow"]
    assert not st.healthy and "3/4" in st.detail
    lines: list[str] = []
    stack_up(cfg, ["airflow"], log=lines.append)
    assert any("partially running; restarting" in m for m in lines)
    assert {s.name: s for s in stack_status(cfg)}["airflow"].healthy


def test_an_airflow_started_with_other_settings_is_restarted(fake):
    """`schedule.end_date` extended (or any other Airflow setting changed) and `up` again: the
    running Airflow is restarted, saying what changed (its DAG file reads the schedule when its
    processes start); the other services, and an Airflow whose settings did not change, keep
    running."""
    cfg, _, _ = fake
    stack_up(cfg, log=lambda m: None)
    pids = {s.name: s.pid for s in stack_status(cfg)}
    later = cfg.model_copy(update={"schedule": cfg.schedule.model_copy(
        update={"end_date": "2026-01-09"})})
    lines: list[str] = []
    stack_up(later, log=lines.append)
    now = {s.name: s.pid for s in stack_status(later)}
    assert now["airflow"] != pids["airflow"] and all(now[k] == pids[k] for k in ("s3", "mlflow", "ray"))
    [said] = [m for m in lines if "running with other settings" in m]
    assert said.startswith("airflow:") and "schedule end_date 2026-01-08 -> 2026-01-09" in said
    secret = S.ensure_secrets(cfg)[0]["airflow_fernet_key"]
    assert not any(secret in m for m in lines)
    again: list[str] = []
    stack_up(later, log=again.append)
    assert {s.name: s.pid for s in stack_status(later)} == now
    assert all("already running" in m for m in again), again


def test_an_mlflow_without_authentication_is_restarted_and_a_refused_login_stops_up(
        fake, monkeypatch):
    """An MLflow started before basic-auth (it answers anonymous calls) is restarted by `up`;
    one that refuses the generated login fails `up` at once (a restart cannot fix it)."""
    cfg, _, flags = fake
    stack_up(cfg, ["mlflow"], log=lambda m: None)
    first = read_pid(S.run_dir(cfg), "mlflow")["pid"]
    state = {"detail": S.MLFLOW_NO_AUTH + " (started before basic-auth was turned on)"}

    def health(cfg):
        if state["detail"] is None:
            return True, "OK"
        return False, state["detail"]

    monkeypatch.setitem(S.HEALTH, "mlflow", health)
    lines: list[str] = []
    orig = S.mlflow_procs

    def procs(cfg, *args):
        state["detail"] = None  # the restarted one asks for a login
        return orig(cfg, *args)

    monkeypatch.setattr(S, "mlflow_procs", procs)
    stack_up(cfg, ["mlflow"], log=lines.append)
    assert any("restarting it with basic-auth" in m for m in lines), lines
    assert read_pid(S.run_dir(cfg), "mlflow")["pid"] != first
    state["detail"] = S.MLFLOW_LOGIN_REFUSED + " (HTTP 401)"
    with pytest.raises(StackError, match="refused"):
        stack_up(cfg, ["mlflow"], log=lambda m: None)


def test_a_refused_mlflow_login_at_start_fails_without_a_retry(fake, monkeypatch):
    cfg, _, _ = fake
    monkeypatch.setitem(S.HEALTH, "mlflow", lambda cfg: (
        False, S.MLFLOW_LOGIN_REFUSED + " (HTTP 401): its password in the auth DB ..."))
    lines: list[str] = []
    with pytest.raises(StackError, match="mlflow failed to start: login as 'admin' refused"):
        stack_up(cfg, ["mlflow"], log=lines.append)
    assert not any("retrying" in m for m in lines)
    assert read_pid(S.run_dir(cfg), "mlflow") is None  # the failed start was stopped


def test_a_stack_restarted_on_other_databases_is_refused_before_anything_starts(fake):
    """A stack first brought up on PostgreSQL and restarted from a shell without
    EXFM_DATABASE=postgres would open empty SQLite databases beside its S3 data."""
    cfg, _, _ = fake
    url = "postgresql://exfm:s3cret@127.0.0.1:5432/postgres"
    pg = load_config(None, [f"state_dir={cfg.state_path}", "database.kind=postgres"],
                     env={"EXFM_DATABASE_URL": url})
    stack_up(pg, ["s3", "mlflow"], log=lambda m: None)
    record = (cfg.state_path / S.DATABASE_FILE).read_text()
    assert "postgres" in record and "s3cret" not in record
    dump = S.config_dump_path(cfg).read_text()
    stack_down(pg, log=lambda m: None)

    with pytest.raises(StackError) as e:  # the same folder, SQLite (the default)
        stack_up(cfg, log=lambda m: None)
    msg = str(e.value)
    assert "kind postgres" in msg and "kind sqlite" in msg and "EXFM_DATABASE=postgres" in msg
    assert "s3cret" not in msg
    assert _ours(cfg) == [] and not list(S.run_dir(cfg).glob("*.pid"))
    assert S.config_dump_path(cfg).read_text() == dump  # still the stack's own config
    # another server is other databases too; a new password is not
    other = load_config(None, [f"state_dir={cfg.state_path}", "database.kind=postgres"],
                        env={"EXFM_DATABASE_URL": url.replace("127.0.0.1", "10.0.0.9")})
    with pytest.raises(StackError, match="10.0.0.9"):
        stack_up(other, ["mlflow"], log=lambda m: None)
    rotated = load_config(None, [f"state_dir={cfg.state_path}", "database.kind=postgres"],
                          env={"EXFM_DATABASE_URL": url.replace("s3cret", "n3w")})
    stack_up(rotated, ["s3", "mlflow"], log=lambda m: None)
    stack_down(rotated, log=lambda m: None)
    # S3 alone uses no database: it starts whatever the config says
    stack_up(cfg, ["s3"], log=lambda m: None)


def test_a_folder_from_before_the_record_with_sqlite_files_counts_as_sqlite(fake):
    cfg, _, _ = fake
    (cfg.state_path / "db").mkdir(parents=True)
    (cfg.state_path / "db" / "mlflow.db").write_bytes(b"")
    pg = load_config(None, [f"state_dir={cfg.state_path}", "database.kind=postgres"], env={})
    with pytest.raises(StackError, match="kind sqlite"):
        stack_up(pg, ["mlflow"], log=lambda m: None)
    stack_up(cfg, ["s3", "mlflow"], log=lambda m: None)  # SQLite, as before: recorded now
    assert '"sqlite"' in (cfg.state_path / S.DATABASE_FILE).read_text()
    stack_down(cfg, log=lambda m: None)
    # a state folder moved with its SQLite files (a renamed checkout) is the same stack
    moved = cfg.state_path.parent / "moved"
    cfg.state_path.rename(moved)
    again = load_config(None, [f"state_dir={moved}"], env={})
    stack_up(again, ["s3", "mlflow"], log=lambda m: None)
    stack_down(again, log=lambda m: None)
