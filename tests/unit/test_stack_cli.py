"""``exfm stack`` without starting services: status of a stopped stack, a taken port, env."""

from __future__ import annotations

import socket

from exfm.cli import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_status_of_a_stopped_stack_exits_1_and_lists_every_service(tmp_path, capsys):
    rc = main(["stack", "status", "--set", f"state_dir={tmp_path}"])
    out = capsys.readouterr().out
    assert rc == 1
    for name in ("s3", "mlflow", "ray", "airflow"):
        assert name in out
    assert out.count("DOWN") == 4


def test_up_names_the_taken_port_and_the_service(tmp_path, capsys):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        rc = main(["stack", "up", "s3", "--set", f"state_dir={tmp_path}",
                   "--set", f"ports.s3={port}"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"port {port}" in err and "s3" in err and "already in use" in err
    assert not list((tmp_path / "run").glob("*.pid"))  # nothing was started


def test_down_of_a_stopped_stack_is_a_no_op(tmp_path, capsys):
    assert main(["stack", "down", "--set", f"state_dir={tmp_path}",
                 "--set", f"ports.s3={_free_port()}"]) == 0
    assert "not running" in capsys.readouterr().out


def test_env_prints_exports_for_a_shell(tmp_path, capsys):
    from exfm.stack import services as S
    from exfm.config import load_config

    S.ensure_secrets(load_config(None, [f"state_dir={tmp_path}"], env={}))
    assert main(["stack", "env", "--set", f"state_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "export MLFLOW_TRACKING_URI=" in out and "export RAY_ADDRESS=" in out
