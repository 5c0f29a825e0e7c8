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
    st = read_state_secrets(cfg.state_path)
    out = [cfg.s3_credentials()[1], st.get("ray_auth_token", "")]
    return [s for s in out if s and len(s) >= 8]


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
    # the job proves it can still reach S3 with the keys from its 0600 secrets file
    job = ("import json; from exfm.config import load_config; "
           "from exfm.storage.s3 import ensure_bucket; cfg = load_config(); ensure_bucket(cfg); "
           "print('EXFM_RESULT ' + json.dumps({'ok': True}), flush=True)")
    lines: list[str] = []
    assert submit_and_wait(stack_cfg, ["-c", job], sid, log=lines.append, timeout_s=180) == {
        "ok": True}
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
