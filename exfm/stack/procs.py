"""Process plumbing of the embedded stack: PID files, process groups, ports, health waits.

Every service process is started in its own session (``start_new_session=True``), so it leads a
process group; stopping signals exactly that group (never a name-based kill), waits, then
SIGKILLs what is left. A PID file (JSON) records pid, pgid, the command line and the log file.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


class StackError(RuntimeError):
    """A stack operation failed; the message says which service and where to look."""

    def __init__(self, message: str, service: str | None = None):
        super().__init__(message)
        self.service = service


@dataclass
class ServiceStatus:
    """One line of ``exfm stack status``."""

    name: str
    url: str
    healthy: bool
    pid: int | None = None
    detail: str = ""


@dataclass
class ProcSpec:
    """One OS process of a service (Airflow has four)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    cwd: Path | None = None
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 20.0
    signal_leader_only: bool = False  # first signal only the leader (it stops its children)
    extra: dict = field(default_factory=dict)


MARK_KEYS = ("EXFM_STACK_ID", "EXFM_STACK_SERVICE")


# --- PID files ---------------------------------------------------------------------------------
def pid_file(run_dir: Path, proc: str) -> Path:
    return run_dir / f"{proc}.pid"


def read_pid(run_dir: Path, proc: str) -> dict | None:
    p = pid_file(run_dir, proc)
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _proc_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a for a in raw.decode(errors="replace").split("\0") if a]


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def pid_alive(info: dict | None) -> bool:
    """True if the recorded process still runs (and is the same program, not a reused PID)."""
    if not info:
        return False
    pid = int(info["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    if _is_zombie(pid):
        return False
    cmd = _proc_cmdline(pid)
    if cmd is None:
        return False
    # setproctitle may rewrite argv (airflow, ray); only a start-time match is reliable
    started = info.get("start_ticks")
    return started is None or started == _start_ticks(pid)


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


# exec's the real program with the given signals back at their default action
_SIGDEF = ("import os, signal, sys\n"
           "for s in sys.argv[1].split(','):\n"
           "    signal.signal(int(s), signal.SIG_DFL)\n"
           "os.execvp(sys.argv[2], sys.argv[2:])\n")


def _launch_argv(spec: ProcSpec) -> list[str]:
    """``spec.argv``, wrapped so the child gets SIGINT and its stop signal back at their default
    action when this process ignores them.

    An ignored signal stays ignored across fork and exec: started from a background job of a
    non-interactive shell (``nohup ... &``, CI scripts) this process ignores SIGINT, every
    server would too, and a SIGINT stop would end in SIGKILL after ``stop_timeout``.
    """
    sigs = [int(s) for s in {spec.stop_signal, signal.SIGINT}
            if signal.getsignal(s) is signal.SIG_IGN]
    if not sigs:
        return list(spec.argv)
    return [sys.executable, "-c", _SIGDEF, ",".join(map(str, sorted(sigs))), *spec.argv]


def private_dir(path: Path) -> Path:
    """``path`` created if missing and readable by its owner only (0700)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by its owner only (0600), never world-readable in between."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def redact_argv(argv: list[str]) -> list[str]:
    """``argv`` with the password of every ``scheme://user:password@host`` hidden."""
    import re

    return [re.sub(r"(://[^:/@\s]*:)[^@\s]+@", r"\1***@", a) for a in argv]


def start_proc(spec: ProcSpec, run_dir: Path) -> dict:
    """Start ``spec`` detached in its own session; write and return its PID-file record (0600,
    passwords in the command line hidden); the log file is 0600, their folders 0700."""
    private_dir(spec.log.parent)
    private_dir(run_dir)
    fd = os.open(spec.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "ab") as logf:
        logf.write(f"\n=== exfm stack: starting {spec.name} at {time.ctime()}\n".encode())
        logf.flush()
        p = subprocess.Popen(_launch_argv(spec), env=spec.env, cwd=spec.cwd, stdout=logf,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, close_fds=True)
    info = {"pid": p.pid, "pgid": p.pid, "argv": redact_argv(spec.argv), "log": str(spec.log),
            "stop_signal": int(spec.stop_signal), "stop_timeout": spec.stop_timeout,
            "signal_leader_only": spec.signal_leader_only,
            "start_ticks": _start_ticks(p.pid), "started": time.time(),
            # the stack's id from the environment: only processes carrying it count as ours
            "mark": {k: v for k, v in spec.env.items() if k in MARK_KEYS}}
    write_private(pid_file(run_dir, spec.name), json.dumps(info))
    # keep the Popen object referenced so Python does not warn; reaped on stop via waitpid
    _CHILDREN[p.pid] = p
    return info


_CHILDREN: dict[int, subprocess.Popen] = {}


def _reap(pid: int) -> None:
    p = _CHILDREN.get(pid)
    if p is not None:
        try:
            p.poll()
        except Exception:  # noqa: BLE001
            pass


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, pgid, session id, start ticks) from /proc/PID/stat, or None if gone."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return f[0], int(f[2]), int(f[3]), int(f[19])
    except (OSError, IndexError, ValueError):
        return None


def _has_mark(pid: int, mark: dict[str, str] | None) -> bool:
    if not mark:
        return False
    try:
        env = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
    except OSError:
        return False
    return {f"{k}={v}".encode() for k, v in mark.items()} <= env


def members(info: dict) -> dict[int, int]:
    """The live processes of a recorded service process: ``{pid: start ticks}``.

    While the leader runs (same PID *and* start time) every process in its session or group is
    ours: Ray workers and Airflow task processes that moved to a group of their own included.
    Once it is gone, only those whose environment still carries the stack's ``mark`` count: a
    recycled PID leading someone else's session is never taken for ours. (``setproctitle``, used
    by Airflow and Ray, overwrites ``/proc/PID/environ``, hence the leader rule first.)
    """
    leader, pgid = int(info["pid"]), int(info["pgid"])
    leader_ok = pid_alive(info)
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        st = _stat(int(d.name))
        if st is None or st[0] == "Z" or (st[1] != pgid and st[2] != leader):
            continue
        if leader_ok or _has_mark(int(d.name), info.get("mark")):
            out[int(d.name)] = st[3]
    return out


def _still(procs: dict[int, int]) -> dict[int, int]:
    """The entries of ``{pid: start ticks}`` that still run (same start time, not a zombie)."""
    out = {}
    for pid, ticks in procs.items():
        st = _stat(pid)
        if st is not None and st[0] != "Z" and st[3] == ticks:
            out[pid] = ticks
    return out


def stop_procs(run_dir: Path, procs: list[str], log: Callable[[str], None] = print) -> list[str]:
    """Signal every recorded process group at once, wait for all their processes (each its own
    timeout), SIGKILL what is left; remove the PID files. Returns the names that were running.

    The processes to wait for are snapshotted while the leaders still run (see :func:`members`),
    so children that outlive their leader for a moment are waited for too.
    """
    live: dict[str, dict] = {}
    tracked: dict[str, dict[int, int]] = {}
    for proc in procs:
        info = read_pid(run_dir, proc)
        if info is None:
            continue
        found = members(info)
        if not found:
            pid_file(run_dir, proc).unlink(missing_ok=True)
            continue
        live[proc], tracked[proc] = info, found
        log(f"  stopping {proc} (pid {info['pid']})")
        sig = int(info.get("stop_signal", signal.SIGTERM))
        leader_ok = pid_alive(info)
        targets = ([int(info["pid"])] if info.get("signal_leader_only") and leader_ok
                   else [] if leader_ok else list(found))
        try:
            if leader_ok and not targets:
                os.killpg(int(info["pgid"]), sig)
            for pid in targets:
                os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    start = time.monotonic()
    waiting = dict(live)
    while waiting:
        for proc, info in list(waiting.items()):
            _reap(int(info["pid"]))
            tracked[proc] = _still({**tracked[proc], **members(info)})
            if not tracked[proc]:
                del waiting[proc]
            elif time.monotonic() - start > float(info.get("stop_timeout", 20.0)):
                log(f"  {proc} did not exit in {info.get('stop_timeout', 20.0):.0f} s: SIGKILL")
                _kill_all({**tracked[proc], **members(info)})
                for _ in range(50):
                    _reap(int(info["pid"]))
                    if not _still(tracked[proc]):
                        break
                    time.sleep(0.1)
                del waiting[proc]
        if waiting:
            time.sleep(0.2)
    for proc, info in live.items():
        _reap(int(info["pid"]))
        _CHILDREN.pop(int(info["pid"]), None)
        pid_file(run_dir, proc).unlink(missing_ok=True)
    return list(live)


def _kill_all(procs: dict[int, int]) -> None:
    for pid in _still(procs):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def stop_proc(run_dir: Path, proc: str, log: Callable[[str], None] = print) -> bool:
    """Stop one recorded process group (see :func:`stop_procs`); True if it was running."""
    return bool(stop_procs(run_dir, [proc], log))


def processes_referencing(needles: list[str], exclude: set[int] | None = None,
                          exe_prefix: str | None = None) -> list[int]:
    """PIDs of processes whose command line contains one of ``needles`` (our state/temp dirs);
    with ``exe_prefix``, only programs under it (the venv: never someone's ``tail -f`` of a log)."""
    exclude = (exclude or set()) | {os.getpid()}
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in exclude:
            continue
        cmd = _proc_cmdline(int(d.name))
        if not cmd or _is_zombie(int(d.name)):
            continue
        if exe_prefix and not cmd[0].startswith(exe_prefix):
            continue
        joined = " ".join(cmd)
        if any(n in joined for n in needles):
            out.append(int(d.name))
    return out


def processes_with_env(env: dict[str, str], exclude: set[int] | None = None) -> list[int]:
    """PIDs of live processes whose environment holds every ``key=value`` of ``env``.

    The stack stamps ``EXFM_STACK_ID`` into every process it starts; Ray workers, job drivers and
    Airflow task processes inherit it even when they rename themselves (``ray::IDLE``).
    """
    exclude = (exclude or set()) | {os.getpid()}
    needles = {f"{k}={v}".encode() for k, v in env.items()}
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in exclude:
            continue
        try:
            env_raw = (d / "environ").read_bytes()
        except OSError:
            continue
        if needles <= set(env_raw.split(b"\0")) and not _is_zombie(int(d.name)):
            out.append(int(d.name))
    return out


def kill_pids(pids: list[int], timeout: float = 10.0) -> None:
    """SIGTERM then SIGKILL exactly these PIDs (our own stragglers)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if _proc_cmdline(p) is not None and not _is_zombie(p)]
        if not left:
            return
        time.sleep(0.2)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# --- ports and health --------------------------------------------------------------------------
def port_in_use(host: str, port: int) -> bool:
    """True if something listens on host:port (or the port cannot be bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        if s.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # servers set SO_REUSEADDR too: a TIME_WAIT left by a stopped stack is no conflict
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def http_get(url: str, timeout: float = 2.0, headers: dict | None = None) -> tuple[int, str]:
    """(status, body) of a GET; (0, error) when nothing answers."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(65536).decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read(4096).decode(errors="replace")
    except Exception as e:  # noqa: BLE001
        return 0, str(e)


def tail(path: Path, lines: int = 30) -> str:
    try:
        data = Path(path).read_bytes()[-20000:].decode(errors="replace")
    except OSError:
        return "(no log yet)"
    return "\n".join(data.splitlines()[-lines:])
