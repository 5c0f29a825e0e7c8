"""Bringing the embedded stack up and down: dependency order, health polling, retries, and
stopping exactly the processes ``up`` started (see :mod:`exfm.stack` for the state layout)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import exfm.stack.services as S
from exfm.config import ExfmConfig
from exfm.stack.procs import (
    ServiceStatus,
    StackError,
    kill_pids,
    pid_alive,
    port_in_use,
    processes_referencing,
    processes_with_env,
    read_pid,
    start_proc,
    stop_procs,
    tail,
)
from exfm.stack.services import SERVICES

Log = Callable[[str], None]
PROGRESS_EVERY_S = 10.0


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
                f"or move this stack's ports (e.g. --set ports.{_port_key(svc, label)}=...)",
                service=svc)


def _port_key(svc: str, label: str) -> str:
    return {("s3", "s3"): "s3", ("mlflow", "mlflow"): "mlflow", ("ray", "gcs"): "ray_gcs",
            ("ray", "dashboard"): "ray_dashboard", ("ray", "client"): "ray_client",
            ("airflow", "api-server"): "airflow", ("airflow", "worker-log-server"): "airflow_log",
            ("airflow", "trigger-log-server"): "airflow_trigger_log",
            ("s3", "volume"): "seaweed_volume", ("s3", "volume-grpc"): "seaweed_volume",
            ("s3", "filer"): "seaweed_filer", ("s3", "filer-grpc"): "seaweed_filer"}.get(
        (svc, label), {"s3": "seaweed_master" if label != "s3-grpc" else "s3",
                       "ray": "ray_gcs"}.get(svc, svc))


def _fail(cfg: ExfmConfig, service: str, why: str, retry: bool = True) -> StackError:
    """The error of a failed start (with its logs' tails); ``retry=False``: restarting it cannot
    help (``up`` does not try again)."""
    parts = [f"{service} failed to start: {why}"]
    for proc in S.proc_names(service):
        log = S.log_dir(cfg) / f"{proc}.log"
        parts.append(f"--- last lines of {log} ---\n{tail(log)}")
    e = StackError("\n".join(parts), service=service)
    e.retry = retry
    return e


def _poll(cfg: ExfmConfig, service: str) -> tuple[bool, str]:
    """(healthy, detail); raises if one of the service's processes has exited."""
    ok, detail = S.HEALTH[service](cfg)
    if not ok and service == "mlflow" and detail.startswith(S.MLFLOW_LOGIN_REFUSED):
        raise _fail(cfg, service, detail, retry=False)
    if ok and not S.printed_since_start(cfg, service):
        ok, detail = False, f"waiting for '{S.READY_LINE[service]}' in its log"
    if ok:
        return ok, detail
    dead = [p for p in S.proc_names(service) if not pid_alive(read_pid(S.run_dir(cfg), p))]
    if dead:
        raise _fail(cfg, service, f"process {', '.join(dead)} exited")
    return ok, detail


def _airflow_migrate(cfg: ExfmConfig, dags_folder: Path | None, log: Log) -> None:
    log("  airflow db migrate ...")
    t = time.monotonic()
    mig_log = S.log_dir(cfg) / "airflow-db-migrate.log"
    fd = os.open(mig_log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # private, like all logs
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as f:
        r = subprocess.run(S.airflow_argv("db", "migrate"), env=S.airflow_env(cfg, dags_folder),
                           cwd=S.airflow_home(cfg), stdout=f, stderr=subprocess.STDOUT,
                           timeout=S.START_TIMEOUT["airflow"])
    if r.returncode != 0:
        raise StackError(f"airflow db migrate failed (exit {r.returncode}):\n"
                         f"--- last lines of {mig_log} ---\n{tail(mig_log)}", service="airflow")
    log(f"  airflow db migrate done in {time.monotonic() - t:.0f} s")
    _airflow_pools(cfg, dags_folder, log)


def _airflow_pools(cfg: ExfmConfig, dags_folder: Path | None, log: Log) -> None:
    """Create (or resize) exfm_daily's pools: ``exfm_ray`` from the Ray cluster's CPUs,
    ``exfm_fm_chain`` with one slot (:func:`exfm.config.schedule.pools`)."""
    from exfm.config.schedule import pools

    spec = pools(cfg, S.ray_num_cpus(cfg))
    path = S.airflow_home(cfg) / "pools.json"
    path.write_text(json.dumps(spec, indent=1))
    r = subprocess.run(S.airflow_argv("pools", "import", str(path)),
                       env=S.airflow_env(cfg, dags_folder), cwd=S.airflow_home(cfg),
                       capture_output=True, text=True, timeout=S.START_TIMEOUT["airflow"])
    if r.returncode != 0:
        raise StackError(f"airflow pools import {path} failed (exit {r.returncode}):\n"
                         f"{(r.stdout + r.stderr)[-2000:]}", service="airflow")
    log("  airflow pools: " + ", ".join(f"{k} ({v['slots']} slot(s))" for k, v in spec.items()))


def _launch(cfg: ExfmConfig, service: str, dags_folder: Path | None, log: Log) -> None:
    """Start the service's processes (returns at once; health is polled by the caller)."""
    for proc in S.proc_names(service):  # stale PID files of a crashed run
        (S.run_dir(cfg) / f"{proc}.pid").unlink(missing_ok=True)
    if service == "s3":
        for sock in S.stale_seaweed_socket_files(cfg):  # left by a killed SeaweedFS
            sock.unlink(missing_ok=True)
    log(f"{service}: starting (log: {S.log_dir(cfg)})")
    if service == "s3":
        specs = S.s3_procs(cfg)
    elif service == "mlflow":
        specs = S.mlflow_procs(cfg)
    elif service == "ray":
        specs = S.ray_procs(cfg)
    else:
        S.write_airflow_passwords(cfg)
        _airflow_migrate(cfg, dags_folder, log)
        specs = S.airflow_procs(cfg, dags_folder)
    for spec in specs:
        start_proc(spec, S.run_dir(cfg))
    if service == "airflow":
        _record_airflow_settings(cfg, dags_folder)


def stack_up(cfg: ExfmConfig, services: Iterable[str] | None = None, log: Log = print,
             dags_folder: Path | None = None) -> list[ServiceStatus]:
    """Start ``services`` (default all) and their dependencies; idempotent.

    A service starts as soon as what it depends on is healthy, so S3 and Ray boot side by side,
    MLflow follows S3, and Airflow (the heaviest) starts once the others are healthy. A crashed
    Ray or MLflow start is retried once. ``dags_folder`` overrides Airflow's (default
    :func:`exfm.paths.dags_folder`). ``log`` gets progress lines.

    Raises:
        StackError: the config names other databases than the ones this state folder's stack
            was first started on (:func:`exfm.stack.services.check_database_identity`), a port
            is taken (names port and service) or a service did not become healthy
            in time (with the tail of its log and the log's path). The failed service is stopped;
            services already healthy keep running (``up`` again resumes, ``down`` stops them).
    """
    order = resolve_services(services)
    for d in (cfg.state_path, S.run_dir(cfg), S.log_dir(cfg)):
        d.mkdir(parents=True, exist_ok=True)
    if {"mlflow", "airflow"} & set(order):
        S.check_database_identity(cfg)  # before the config dump records this config's database
    secrets, made = S.ensure_secrets(cfg, airflow="airflow" in order, mlflow="mlflow" in order)
    S.write_config_dump(cfg)
    pending, healthy = _survey(cfg, order, log, dags_folder)
    for service in pending:  # a taken port fails before anything starts
        if not _running(cfg, service):
            _check_ports(cfg, service)

    def announce(service: str) -> None:
        user, key = {"airflow": (cfg.airflow.admin_user, "airflow_password"),
                     "mlflow": (S.MLFLOW_ADMIN_USER, S.MLFLOW_PASSWORD_KEY)}.get(service, ("", ""))
        if key in made:
            log(f"{service}: user '{user}', password '{secrets[key]}' (shown once; kept in "
                f"{cfg.state_path / 'secrets.json'})")

    _Startup(cfg, pending, healthy, dags_folder, log, announce).run(len(order))
    return stack_status(cfg, order)


AIRFLOW_SETTINGS = "airflow-settings.json"


def _airflow_settings(cfg: ExfmConfig, dags_folder: Path | None) -> dict[str, str]:
    """What this config gives Airflow's processes: the ``AIRFLOW*`` and ``EXFM_*`` variables of
    their environment (``$EXFM_SCHEDULE`` included)."""
    return {k: v for k, v in S.airflow_env(cfg, dags_folder).items()
            if k.startswith(("AIRFLOW", "EXFM_"))}


def _digest(value: str) -> str:
    import hashlib

    return hashlib.sha256(value.encode()).hexdigest()


def _record_airflow_settings(cfg: ExfmConfig, dags_folder: Path | None) -> None:
    """Record what the Airflow just started was given: a digest per variable (some are secrets)
    and the schedule itself, so a later ``up`` can tell, and say, what changed."""
    env = _airflow_settings(cfg, dags_folder)
    path = S.run_dir(cfg) / AIRFLOW_SETTINGS
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"digests": {k: _digest(v) for k, v in env.items()},
                   "schedule": json.loads(env.get("EXFM_SCHEDULE") or "{}")}, f, indent=1)


def airflow_settings_change(cfg: ExfmConfig, dags_folder: Path | None = None) -> str | None:
    """What differs between the running Airflow's settings (recorded when it started) and this
    config's, e.g. ``schedule end_date 2026-01-02 -> 2026-01-03``; None when nothing does. An
    Airflow whose settings were not recorded (started by an older exfm) counts as changed: one
    restart records them."""
    path = S.run_dir(cfg) / AIRFLOW_SETTINGS
    try:
        had = json.loads(path.read_text())
    except (OSError, ValueError):
        return f"no record of them in {path}"
    env = _airflow_settings(cfg, dags_folder)
    now = {k: _digest(v) for k, v in env.items()}
    keys = sorted(k for k in set(now) | set(had.get("digests", {}))
                  if now.get(k) != had["digests"].get(k))
    if not keys:
        return None
    parts = []
    if "EXFM_SCHEDULE" in keys:
        old, new = had.get("schedule", {}), json.loads(env.get("EXFM_SCHEDULE") or "{}")
        parts += [f"schedule {k} {old.get(k)} -> {new.get(k)}" for k in sorted(set(old) | set(new))
                  if old.get(k) != new.get(k)]
        keys.remove("EXFM_SCHEDULE")
    parts += keys  # names only: some values are secrets
    return ", ".join(parts)


def _survey(cfg: ExfmConfig, order: list[str], log: Log, dags_folder: Path | None = None
            ) -> tuple[list[str], set[str]]:
    """(services to start or wait for, services already healthy). A partially running service
    (e.g. one Airflow process died) is stopped, to be restarted cleanly, and so is an Airflow
    started with other settings than this config's (``schedule.*``, pools, ports...): its DAG
    file reads them when its processes start."""
    pending: list[str] = []
    healthy: set[str] = set()
    for service in order:
        running = _running(cfg, service)
        if running and len(running) == len(S.proc_names(service)):
            ok, detail = S.HEALTH[service](cfg)
            changed = airflow_settings_change(cfg, dags_folder) if service == "airflow" else None
            if ok and changed:
                log(f"{service}: running with other settings ({changed}); restarting it so that "
                    "they apply")
                _stop_service(cfg, service, log)
                pending.append(service)
            elif ok:
                log(f"{service}: already running (pid {running[0]['pid']}) at "
                    f"{S.SERVICE_URL[service](cfg)}")
                healthy.add(service)
            elif service == "mlflow" and detail.startswith(S.MLFLOW_NO_AUTH):
                log(f"{service}: running but {detail}; restarting it with basic-auth")
                _stop_service(cfg, service, log)
                pending.append(service)
            elif service == "mlflow" and detail.startswith(S.MLFLOW_LOGIN_REFUSED):
                raise StackError(f"mlflow: {detail}", service=service)
            else:
                log(f"{service}: running but not healthy yet ({detail}); waiting")
                pending.append(service)
            continue
        if running:
            log(f"{service}: partially running; restarting it")
            _stop_service(cfg, service, log)
        pending.append(service)
    return pending, healthy


class _Startup:
    """One ``stack_up`` in flight: launches each pending service once what it depends on is
    healthy, polls the started ones, retries a crashed start, and stops what failed."""

    def __init__(self, cfg: ExfmConfig, pending: list[str], healthy: set[str],
                 dags_folder: Path | None, log: Log, on_healthy: Callable[[str], None]):
        self.cfg, self.pending, self.healthy = cfg, pending, healthy
        self.dags_folder, self.log, self.on_healthy = dags_folder, log, on_healthy
        self.started: dict[str, float] = {}  # service -> monotonic start time
        self.retries = dict(S.START_RETRIES)
        for s in pending:
            if _running(cfg, s):  # running but not healthy yet: only wait for it
                self.started[s] = time.monotonic()

    def run(self, total: int) -> None:
        """Until ``total`` services are healthy; on any failure (Ctrl-C included) the failed
        service (or everything not yet healthy) is stopped again and the error raised."""
        last_note = time.monotonic()
        try:
            while len(self.healthy) < total:
                self._launch_unblocked()
                self._poll_started()
                now = time.monotonic()
                if len(self.healthy) < total and now - last_note >= PROGRESS_EVERY_S:
                    waits = [f"{s} {now - t:.0f} s" for s, t in self.started.items()
                             if s not in self.healthy]
                    self.log(f"  ... waiting for {', '.join(waits)}")
                    last_note = now
                if len(self.healthy) < total:
                    time.sleep(0.5)
        except BaseException as e:
            failed = e.service if isinstance(e, StackError) else None
            for service in self.started:
                if service not in self.healthy and (failed is None or service == failed):
                    _stop_service(self.cfg, service, lambda m: None)
            raise

    def _launch_unblocked(self) -> None:
        for service in self.pending:
            if service in self.started or any(d not in self.healthy for d in S.DEPENDS[service]):
                continue
            if service == "airflow" and any(s not in self.healthy
                                            for s in self.pending if s != service):
                # the heaviest start (db migrate, four processes) goes last: on two cores it
                # starved a booting Ray head past `ray start`'s own 30 s limit
                continue
            self.started[service] = time.monotonic()
            _launch(self.cfg, service, self.dags_folder, self.log)

    def _poll_started(self) -> None:
        for service in [s for s in self.started if s not in self.healthy]:
            try:
                ok, detail = _poll(self.cfg, service)
            except StackError as e:
                if self.retries.get(service, 0) <= 0 or not getattr(e, "retry", True):
                    raise
                self.retries[service] -= 1
                last = e.args[0].splitlines()[-1][:160] if e.args else ""
                self.log(f"{service}: start failed ({last}); retrying")
                _stop_service(self.cfg, service, lambda m: None)
                self.started[service] = time.monotonic()
                _launch(self.cfg, service, self.dags_folder, self.log)
                continue
            elapsed = time.monotonic() - self.started[service]
            if ok:
                if service == "airflow":
                    _check_airflow_login(self.cfg)
                self.healthy.add(service)
                self.log(f"{service}: healthy in {elapsed:.1f} s at "
                         f"{S.SERVICE_URL[service](self.cfg)} ({detail})")
                self.on_healthy(service)
            elif elapsed > S.START_TIMEOUT[service]:
                raise _fail(self.cfg, service, f"not healthy after {elapsed:.0f} s ({detail})")


def _check_airflow_login(cfg: ExfmConfig) -> None:
    """The generated admin password must work against ``POST /auth/token``."""
    try:
        S.airflow_token(cfg)
    except Exception as e:  # noqa: BLE001
        raise _fail(cfg, "airflow", f"login as '{cfg.airflow.admin_user}' with the generated "
                    f"password failed: {e}") from e


def _stop_services(cfg: ExfmConfig, services: list[str], log: Log) -> list[str]:
    """Stop the services' recorded process groups all at once; then their leftovers (processes
    carrying this stack's id and the service's name in their environment). Returns the services
    that were running."""
    procs = [p for s in services for p in reversed(S.proc_names(s))]
    stopped = set(stop_procs(S.run_dir(cfg), procs, log))
    was_running = []
    for service in services:
        leftovers = processes_with_env({S.STACK_ID_ENV: S.stack_id(cfg),
                                        S.STACK_SERVICE_ENV: service})
        if leftovers:
            log(f"  stopping {len(leftovers)} leftover {service} process(es): {leftovers}")
            kill_pids(leftovers)
        if service == "s3":
            for sock in S.stale_seaweed_socket_files(cfg):
                sock.unlink(missing_ok=True)
        if service == "ray":
            shutil.rmtree(S.ray_temp_dir(cfg), ignore_errors=True)
        if stopped & set(S.proc_names(service)) or leftovers:
            was_running.append(service)
    return was_running


def _stop_service(cfg: ExfmConfig, service: str, log: Log) -> bool:
    return bool(_stop_services(cfg, [service], log))


def _stack_pids(cfg: ExfmConfig) -> list[int]:
    """Processes of this stack outside any live PID file: the env marker, or (for those that
    rewrote their environ with setproctitle) a venv program naming our state or Ray temp dir."""
    by_env = processes_with_env({S.STACK_ID_ENV: S.stack_id(cfg)})
    by_cmd = processes_referencing([str(cfg.state_path) + "/", str(S.ray_temp_dir(cfg)) + "/"],
                                   exe_prefix=str(Path(sys.executable).parents[1]) + "/")
    return sorted(set(by_env) | set(by_cmd))


def stack_down(cfg: ExfmConfig, services: Iterable[str] | None = None, log: Log = print) -> None:
    """Stop what ``stack_up`` started: each process group named in a PID file gets its stop
    signal (all at once), then SIGKILL after its timeout; then any process left that carries this
    stack's id in its environment (a Ray worker or Airflow task that escaped its group) is
    stopped too. Data is kept."""
    order = list(reversed(resolve_services(services) if services else SERVICES))
    running = _stop_services(cfg, order, log)
    for service in order:
        log(f"{service}: {'stopped' if service in running else 'not running'}")
    if services is None:
        stragglers = _stack_pids(cfg)
        if stragglers:
            log(f"  stopping {len(stragglers)} leftover process(es) of this stack: {stragglers}")
            kill_pids(stragglers)


def stack_status(cfg: ExfmConfig, services: Iterable[str] | None = None) -> list[ServiceStatus]:
    """One :class:`ServiceStatus` per service: URL, health, leader PID, a short detail."""
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
