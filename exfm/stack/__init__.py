"""The embedded stack: SeaweedFS (S3), MLflow, a Ray head and Airflow 3 on one machine.

    >>> cfg = load_config()
    >>> stack_up(cfg)                 # s3, mlflow, ray, airflow (dependency order, idempotent)
    >>> stack_status(cfg)             # [ServiceStatus(name, url, healthy, pid, detail), ...]
    >>> client_env(cfg)               # env a child process needs (keys, URIs, Ray token)
    >>> stack_down(cfg)               # stops exactly what up started

State lives under ``cfg.state_path``: ``run/*.pid`` (PID files), ``logs/*.log``, ``s3/`` (object
data), ``db/`` (SQLite), ``airflow/`` (AIRFLOW_HOME), ``secrets.json`` (0600: generated S3 keys,
Airflow admin password, Ray token). The Ray head's temp dir is ``/tmp/exfm-ray-<hash>`` (short,
for unix sockets). See ``infra/local/README.md``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable

from exfm.config import ExfmConfig
from exfm.stack import services as S
from exfm.stack.procs import (
    ServiceStatus,
    StackError,
    kill_pids,
    pid_alive,
    port_in_use,
    processes_referencing,
    read_pid,
    start_proc,
    stop_proc,
    tail,
)
from exfm.stack.services import SERVICES, client_env

__all__ = ["SERVICES", "ServiceStatus", "StackError", "client_env", "stack_down", "stack_status",
           "stack_up", "resolve_services"]

Log = Callable[[str], None]


def resolve_services(services: Iterable[str] | None) -> list[str]:
    """Requested services plus their dependencies, in start order."""
    wanted = set(SERVICES if services is None else services)
    unknown = wanted - set(SERVICES)
    if unknown:
        raise StackError(f"unknown service(s) {sorted(unknown)}; choose from {SERVICES}")
    changed = True
    while changed:
        changed = False
        for s in list(wanted):
            for d in S.DEPENDS[s]:
                if d not in wanted:
                    wanted.add(d)
                    changed = True
    return [s for s in SERVICES if s in wanted]


def _running(cfg: ExfmConfig, service: str) -> list[dict]:
    """PID records of the service's processes that are alive."""
    out = []
    for proc in S.proc_names(service):
        info = read_pid(S.run_dir(cfg), proc)
        if info and pid_alive(info):
            out.append(info)
    return out


def _check_ports(cfg: ExfmConfig, service: str) -> None:
    for svc, label, port in S.all_ports(cfg, [service]):
        if port > 65535:
            raise StackError(f"{svc}: derived {label} port {port} is above 65535: lower ports.*")
        if port_in_use(cfg.host, port):
            raise StackError(
                f"port {port} on {cfg.host} ({svc} {label}) is already in use: stop what holds it "
                f"or move this stack's ports (e.g. --set ports.{_port_key(svc, label)}=...)")


def _port_key(svc: str, label: str) -> str:
    return {("s3", "s3"): "s3", ("mlflow", "mlflow"): "mlflow", ("ray", "gcs"): "ray_gcs",
            ("ray", "dashboard"): "ray_dashboard", ("ray", "client"): "ray_client",
            ("airflow", "api-server"): "airflow", ("airflow", "worker-log-server"): "airflow_log",
            ("airflow", "trigger-log-server"): "airflow_trigger_log"}.get(
        (svc, label), {"s3": "seaweed_master", "ray": "ray_gcs"}.get(svc, svc))


def _fail(cfg: ExfmConfig, service: str, why: str) -> StackError:
    parts = [f"{service} failed to start: {why}"]
    for proc in S.proc_names(service):
        log = S.log_dir(cfg) / f"{proc}.log"
        parts.append(f"--- last lines of {log} ---\n{tail(log)}")
    return StackError("\n".join(parts))


def _wait_healthy(cfg: ExfmConfig, service: str, timeout: float, log: Log) -> str:
    start = time.monotonic()
    last_note = start
    health = S.HEALTH[service]
    detail = ""
    while True:
        ok, detail = health(cfg)
        if ok:
            return detail
        infos = [read_pid(S.run_dir(cfg), p) for p in S.proc_names(service)]
        dead = [p for p, i in zip(S.proc_names(service), infos) if not pid_alive(i)]
        if dead:
            raise _fail(cfg, service, f"process {', '.join(dead)} exited")
        now = time.monotonic()
        if now - start > timeout:
            raise _fail(cfg, service, f"not healthy after {timeout:.0f} s ({detail})")
        if now - last_note >= 10:
            log(f"  ... waiting for {service} ({now - start:.0f} s: {detail[:80]})")
            last_note = now
        time.sleep(0.5)


def _start_service(cfg: ExfmConfig, service: str, log: Log, dags_folder: Path | None) -> None:
    if service == "s3":
        specs = S.s3_procs(cfg)
    elif service == "mlflow":
        specs = S.mlflow_procs(cfg)
    elif service == "ray":
        specs = S.ray_procs(cfg)
    else:
        S.write_airflow_passwords(cfg)
        specs = S.airflow_procs(cfg, dags_folder)
        log("  airflow db migrate ...")
        t = time.monotonic()
        mig_log = S.log_dir(cfg) / "airflow-db-migrate.log"
        with open(mig_log, "wb") as f:
            r = subprocess.run([specs[0].argv[0], "db", "migrate"], env=specs[0].env,
                               cwd=S.airflow_home(cfg), stdout=f, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise StackError(f"airflow db migrate failed (exit {r.returncode}):\n"
                             f"--- last lines of {mig_log} ---\n{tail(mig_log)}")
        log(f"  airflow db migrate done in {time.monotonic() - t:.0f} s")
    for spec in specs:
        start_proc(spec, S.run_dir(cfg))


def stack_up(cfg: ExfmConfig, services: Iterable[str] | None = None, log: Log = print,
             dags_folder: Path | None = None) -> list[ServiceStatus]:
    """Start ``services`` (default all) and their dependencies; idempotent.

    Raises:
        StackError: a port is taken (names port and service) or a service did not become healthy
            (with the tail of its log and the log's path).
    """
    order = resolve_services(services)
    cfg.state_path.mkdir(parents=True, exist_ok=True)
    S.run_dir(cfg).mkdir(parents=True, exist_ok=True)
    S.log_dir(cfg).mkdir(parents=True, exist_ok=True)
    secrets, made = S.ensure_secrets(cfg)
    S.write_config_dump(cfg)
    # a taken port fails before anything starts
    for service in order:
        if not _running(cfg, service):
            _check_ports(cfg, service)
    for service in order:
        running = _running(cfg, service)
        if running and len(running) == len(S.proc_names(service)):
            ok, detail = S.HEALTH[service](cfg)
            if ok:
                log(f"{service}: already running (pid {running[0]['pid']}) at "
                    f"{S.SERVICE_URL[service](cfg)}")
                continue
            log(f"{service}: running but not healthy yet ({detail}); waiting")
            _wait_healthy(cfg, service, S.START_TIMEOUT[service], log)
            continue
        if running:  # partially running (e.g. one Airflow process died): restart cleanly
            log(f"{service}: partially running; restarting it")
            _stop_service(cfg, service, log)
        for proc in S.proc_names(service):  # stale PID files
            (S.run_dir(cfg) / f"{proc}.pid").unlink(missing_ok=True)
        _check_ports(cfg, service)
        log(f"{service}: starting (log: {S.log_dir(cfg)})")
        t = time.monotonic()
        try:
            _start_service(cfg, service, log, dags_folder)
            detail = _wait_healthy(cfg, service, S.START_TIMEOUT[service], log)
            if service == "airflow":
                S.airflow_token(cfg)  # the generated admin password must work
        except BaseException:
            _stop_service(cfg, service, lambda m: None)
            raise
        log(f"{service}: healthy in {time.monotonic() - t:.1f} s at "
            f"{S.SERVICE_URL[service](cfg)} ({detail})")
        if service == "airflow" and "airflow_password" in made:
            log(f"airflow: user '{cfg.airflow.admin_user}', password '{secrets['airflow_password']}'"
                f" (shown once; kept in {cfg.state_path / 'secrets.json'})")
    return stack_status(cfg, order)


def _stop_service(cfg: ExfmConfig, service: str, log: Log) -> bool:
    any_running = False
    # stop Airflow's API server last so running tasks can still report
    for proc in reversed(S.proc_names(service)):
        any_running |= stop_proc(S.run_dir(cfg), proc, log)
    return any_running


def _our_needles(cfg: ExfmConfig) -> list[str]:
    return [str(cfg.state_path) + "/", str(S.ray_temp_dir(cfg)) + "/"]


def stack_down(cfg: ExfmConfig, services: Iterable[str] | None = None, log: Log = print) -> None:
    """Stop what ``stack_up`` started (reverse order): the process groups in the PID files,
    then any straggler whose command line names this stack's state or Ray temp dir."""
    order = list(reversed(resolve_services(services) if services else SERVICES))
    for service in order:
        if _stop_service(cfg, service, log):
            log(f"{service}: stopped")
        else:
            log(f"{service}: not running")
    if services is None or "ray" in services:
        stragglers = processes_referencing(_our_needles(cfg))
        if stragglers:
            log(f"  stopping {len(stragglers)} leftover process(es) of this stack: {stragglers}")
            kill_pids(stragglers)
        shutil.rmtree(S.ray_temp_dir(cfg), ignore_errors=True)


def stack_status(cfg: ExfmConfig, services: Iterable[str] | None = None) -> list[ServiceStatus]:
    out = []
    for service in resolve_services(services) if services else SERVICES:
        running = _running(cfg, service)
        url = S.SERVICE_URL[service](cfg)
        n = len(S.proc_names(service))
        if not running:
            out.append(ServiceStatus(service, url, False, None, "not running"))
            continue
        ok, detail = S.HEALTH[service](cfg)
        if len(running) < n:
            ok, detail = False, f"only {len(running)}/{n} processes running"
        out.append(ServiceStatus(service, url, ok, int(running[0]["pid"]), detail))
    return out
