"""Process plumbing of the stack on real (tiny) processes: groups, PID files, stop, ports."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time

import pytest

from exfm.stack.procs import (
    ProcSpec,
    pid_alive,
    port_in_use,
    processes_with_env,
    read_pid,
    start_proc,
    stop_proc,
    tail,
)


def _spec(tmp_path, name, script, **kw):
    env = dict(os.environ, EXFM_TEST_MARK=f"{tmp_path}-{name}")
    return ProcSpec(name, ["/bin/sh", "-c", script], env, tmp_path / "logs" / f"{name}.log", **kw)


def _wait(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_stop_signals_the_whole_group_and_removes_the_pid_file(tmp_path):
    run = tmp_path / "run"
    # a parent with a background child: both must go
    info = start_proc(_spec(tmp_path, "svc", "sleep 300 & echo started; wait"), run)
    assert read_pid(run, "svc")["pid"] == info["pid"] and pid_alive(info)
    mark = {"EXFM_TEST_MARK": f"{tmp_path}-svc"}
    assert _wait(lambda: len(processes_with_env(mark)) == 2)
    assert stop_proc(run, "svc", log=lambda m: None) is True
    assert not pid_alive(info)
    assert processes_with_env(mark) == []
    assert not (run / "svc.pid").exists()
    assert stop_proc(run, "svc", log=lambda m: None) is False
    assert "started" in tail(tmp_path / "logs" / "svc.log")


def test_a_process_ignoring_sigterm_is_killed_after_the_timeout(tmp_path):
    run = tmp_path / "run"
    info = start_proc(_spec(tmp_path, "stubborn", "trap '' TERM; echo ready; while :; do sleep 1; done",
                            stop_timeout=0.5), run)
    assert _wait(lambda: "ready" in tail(tmp_path / "logs" / "stubborn.log"))
    msgs = []
    t = time.monotonic()
    assert stop_proc(run, "stubborn", log=msgs.append)
    assert time.monotonic() - t < 10
    assert not pid_alive(info)
    assert any("SIGKILL" in m for m in msgs)


@pytest.mark.parametrize("parent_ignores_sigint", [False, True])
def test_sigint_stop_for_servers_that_want_it(tmp_path, parent_ignores_sigint):
    # started from a background job of a script (nohup ... &), this process ignores SIGINT, and an
    # ignored signal is inherited through exec: the server must still get SIGINT's default back
    before = signal.signal(signal.SIGINT, signal.SIG_IGN) if parent_ignores_sigint else None
    try:
        _sigint_stop(tmp_path)
    finally:
        if parent_ignores_sigint:
            signal.signal(signal.SIGINT, before)


def _sigint_stop(tmp_path):
    run = tmp_path / "run"
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('up', flush=True)\n"
            "try:\n    time.sleep(300)\nexcept KeyboardInterrupt:\n    print('bye', flush=True)\n")
    spec = ProcSpec("py", [sys.executable, "-c", code], dict(os.environ),
                    tmp_path / "logs" / "py.log", stop_signal=signal.SIGINT, stop_timeout=10)
    info = start_proc(spec, run)
    assert _wait(lambda: "up" in tail(tmp_path / "logs" / "py.log"), 20)
    msgs = []
    stop_proc(run, "py", log=msgs.append)
    assert not pid_alive(info) and not any("SIGKILL" in m for m in msgs)
    assert "bye" in tail(tmp_path / "logs" / "py.log")


def test_a_reused_pid_is_not_taken_for_our_process(tmp_path):
    run = tmp_path / "run"
    info = start_proc(_spec(tmp_path, "x", "sleep 300"), run)
    try:
        assert pid_alive(info)
        assert not pid_alive(dict(info, start_ticks=info["start_ticks"] - 1))
        assert not pid_alive(None)
    finally:
        stop_proc(run, "x", log=lambda m: None)


def test_port_in_use_sees_a_listener_and_a_bound_socket():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert port_in_use("127.0.0.1", port)  # bound, not listening
        s.listen()
        assert port_in_use("127.0.0.1", port)
    assert not port_in_use("127.0.0.1", port)


def test_tail_of_a_missing_log():
    assert tail("/nonexistent/exfm.log") == "(no log yet)"


def test_pid_file_and_log_are_private_and_hide_passwords(tmp_path):
    import json
    import stat

    spec = ProcSpec("pw", ["/bin/sh", "-c", "sleep 30", "postgresql://u:s3cr3t-pw@h:5432/db"],
                    dict(os.environ, EXFM_TEST_MARK=f"{tmp_path}-pw"), tmp_path / "logs" / "pw.log")
    run = tmp_path / "run"
    start_proc(spec, run)
    try:
        pid = run / "pw.pid"
        assert "s3cr3t-pw" not in pid.read_text()
        assert json.loads(pid.read_text())["argv"][-1] == "postgresql://u:***@h:5432/db"
        assert stat.S_IMODE(pid.stat().st_mode) == 0o600
        assert stat.S_IMODE(spec.log.stat().st_mode) == 0o600
        assert stat.S_IMODE(run.stat().st_mode) == 0o700
        assert stat.S_IMODE(spec.log.parent.stat().st_mode) == 0o700
    finally:
        stop_proc(run, "pw", log=lambda m: None)
