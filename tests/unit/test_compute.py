"""Ray-jobs glue without a cluster: config -> resources/device, shard plan, submission helper."""

from __future__ import annotations

import json
import math
import stat
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exfm.config import ConfigError, load_config
from exfm.compute import submit as S
from exfm.compute.fm_worker import summarize_checkpoint_state
from exfm.compute.ingest import chunk_rows, equal_steps_batch_size, shard_bounds
from exfm.compute.scaling import (check_gpu_config, device_name, scaling_config, task_options,
                                  torch_threads, worker_resources)


def cfg_with(*sets: str):
    return load_config(None, list(sets), env={})


# -- config -> ScalingConfig / resources / device ---------------------------------------------
def test_cpu_default_mapping():
    cfg = cfg_with("ray.num_workers=2", "ray.cpus_per_worker=2")
    assert worker_resources(cfg) == {"CPU": 2.0}
    assert device_name(cfg) == "cpu"
    sc = scaling_config(cfg)
    assert (sc.num_workers, sc.use_gpu) == (2, False)
    assert sc.resources_per_worker == {"CPU": 2.0}
    assert torch_threads(cfg) == 2
    assert task_options(cfg)["num_gpus"] == 0


def test_gpu_mapping():
    cfg = cfg_with("ray.num_workers=4", "ray.use_gpu=true", "ray.gpus_per_worker=1",
                   "models.embedding_optimizer=adam")
    assert worker_resources(cfg) == {"CPU": 1.0, "GPU": 1.0}
    assert device_name(cfg) == "cuda"
    sc = scaling_config(cfg)
    assert (sc.num_workers, sc.use_gpu) == (4, True)
    assert sc.resources_per_worker["GPU"] == 1.0
    opts = task_options(cfg)
    assert (opts["num_cpus"], opts["num_gpus"]) == (1.0, 1.0)


def test_gpu_env_override_and_sparse_ddp_rejected():
    cfg = load_config(None, ["ray.num_workers=2"], env={"EXFM_USE_GPU": "true"})
    assert cfg.ray.use_gpu and device_name(cfg) == "cuda"
    with pytest.raises(ConfigError, match="embedding_optimizer=adam"):
        check_gpu_config(cfg)  # NCCL cannot all-reduce sparse gradients
    check_gpu_config(cfg_with("ray.use_gpu=true"))  # one GPU worker: no all-reduce, fine


# -- the shard plan ---------------------------------------------------------------------------
@given(rows=st.integers(1, 100_000), world=st.integers(1, 16), bs=st.integers(1, 4096))
def test_shards_cover_every_row_once_with_equal_steps(rows, world, bs):
    if rows < world:
        return
    bounds = shard_bounds(rows, world)
    assert bounds[0][0] == 0 and bounds[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, disjoint
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1
    ebs = equal_steps_batch_size(sizes, bs)
    assert ebs >= bs
    assert len({math.ceil(s / ebs) for s in sizes}) == 1
    c = chunk_rows(max(sizes), ebs, 4)
    assert c % ebs == 0
    # chunks of every rank hold the same number of batches
    assert len({tuple(math.ceil(min(c, s - k) / ebs) for k in range(0, s, c)) for s in sizes}) == 1


def test_equal_steps_bumps_batch_when_one_shard_has_an_extra_row():
    assert equal_steps_batch_size([1000, 1001], 100) == 101


def test_checkpoint_summary():
    s = summarize_checkpoint_state({"metric_sums": {"rows": 10.0, "loss/total": 5.0},
                                    "day_rows": 10, "chunks_done": 2, "restarts": 1})
    assert s["metrics"] == {"loss/total": 0.5} and s["restarts"] == 1 and s["day_rows"] == 10


def test_run_name_is_deterministic_per_day_data_and_warm_start():
    from exfm.jobs.fm_day import run_name

    assert run_name("2026-01-02", "abcdef0123", "3") == run_name("2026-01-02", "abcdef0123", "3")
    assert run_name("2026-01-02", "abcdef0123", "3") != run_name("2026-01-02", "ffffff0123", "3")
    assert run_name("2026-01-02", "abcdef0123", None).endswith("-w0")
    plan = {"world": 2, "batch": 64}
    assert run_name("d", "abcdef0123", "3", plan) == run_name("d", "abcdef0123", "3", dict(plan))
    assert run_name("d", "abcdef0123", "3", plan) != run_name("d", "abcdef0123", "3",
                                                               {**plan, "world": 1})


# -- submission: runtime_env ------------------------------------------------------------------
SECRET = "s3cr3t-value-never-logged"


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("EXFM_S3_ACCESS_KEY", "AKTEST")
    monkeypatch.setenv("EXFM_S3_SECRET_KEY", SECRET)


def test_local_submission_uses_this_venv_and_pythonpath(keys, tmp_path):
    cfg = cfg_with(f"state_dir={tmp_path}")
    cmd, renv = S.build_submission(cfg, ["-m", "ray_jobs.train_fm", "--day", "2026-01-01"], None)
    assert cmd.startswith(sys.executable)
    assert "working_dir" not in renv
    assert str(S.project_root()) in renv["env_vars"]["PYTHONPATH"].split(":")
    # no secret in the runtime_env (the Jobs API shows it): a path to a 0600 file instead
    assert SECRET not in cmd and SECRET not in json.dumps(renv)
    path = Path(renv["env_vars"]["EXFM_SECRETS_FILE"])
    assert json.loads(path.read_text())["s3_secret_key"] == SECRET
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_remote_submission_ships_checkout_and_config(keys, tmp_path):
    cfg = cfg_with("ray.address=http://ray-head.example:8265")
    conf = tmp_path / "resolved.yaml"
    conf.write_text("ray: {num_workers: 2}\n")
    staging = tmp_path / "stage"
    cmd, renv = S.build_submission(cfg, ["-m", "ray_jobs.train_fm", "--config", str(conf)], None,
                                   staging)
    assert cmd.startswith("python -m ray_jobs.train_fm --config " + S.SHIPPED_CONFIG)
    assert renv["working_dir"] == str(staging)
    assert (staging / S.SHIPPED_CONFIG).read_text() == conf.read_text()
    assert (staging / "ray_jobs" / "train_fm.py").exists() and not (staging / ".venv").exists()
    assert "EXFM_STATE_DIR" not in renv["env_vars"]  # the local state folder means nothing there
    assert SECRET not in json.dumps(renv)  # the pods hold the keys (a Kubernetes Secret)
    assert cfg.ray_dashboard_url == "http://ray-head.example:8265"


# -- submission: the protocol against a fake Jobs API ---------------------------------------------
class FakeClient:
    def __init__(self, jobs=None, script=None):
        self.jobs = dict(jobs or {})  # id -> [statuses to walk through]
        self.logs = {}
        self.submitted, self.stopped = [], []
        self.script = script or ["RUNNING", "SUCCEEDED"]

    def get_job_status(self, job_id):
        if job_id not in self.jobs:
            raise RuntimeError(f"Job {job_id} does not exist")
        seq = self.jobs[job_id]
        status = seq.pop(0) if len(seq) > 1 else seq[0]

        class St:
            value = status
        return St()

    def submit_job(self, entrypoint, submission_id, runtime_env):
        self.submitted.append((entrypoint, submission_id, runtime_env))
        self.jobs[submission_id] = list(self.script)
        self.logs[submission_id] = 'hello\nEXFM_RESULT {"version": "7"}\n'

    def get_job_logs(self, job_id):
        return self.logs.get(job_id, "")

    def stop_job(self, job_id):
        self.stopped.append(job_id)
        self.jobs[job_id] = ["STOPPED"]

    def get_job_info(self, job_id):
        class Info:
            message = "Job entrypoint command failed with exit code 1"
        return Info()


def _run(monkeypatch, client, **kw):
    monkeypatch.setattr(S, "job_client", lambda cfg: client)
    lines: list[str] = []
    cfg = cfg_with("ray.pending_timeout_s=5")
    out = S.submit_and_wait(cfg, ["-m", "x"], "exfm-fm-2026-01-01", log=lines.append, poll_s=0.01,
                            **kw)
    return out, lines


def test_submit_streams_logs_and_returns_result_without_leaking_secrets(monkeypatch, keys):
    client = FakeClient()
    out, lines = _run(monkeypatch, client)
    assert out == {"version": "7"}
    assert any("hello" in ln for ln in lines)
    assert client.submitted[0][1] == "exfm-fm-2026-01-01"
    assert not any(SECRET in ln for ln in lines)


def test_retry_reattaches_running_and_reuses_succeeded(monkeypatch, keys):
    client = FakeClient(jobs={"exfm-fm-2026-01-01": ["RUNNING", "SUCCEEDED"]})
    client.logs["exfm-fm-2026-01-01"] = 'EXFM_RESULT {"version": "3"}\n'
    out, lines = _run(monkeypatch, client)
    assert out == {"version": "3"} and client.submitted == []
    assert any("re-attaching" in ln for ln in lines)


def test_retry_after_failure_uses_next_deterministic_id(monkeypatch, keys):
    client = FakeClient(jobs={"exfm-fm-2026-01-01": ["FAILED"],
                              "exfm-fm-2026-01-01-r2": ["STOPPED"]})
    out, _ = _run(monkeypatch, client)
    assert client.submitted[0][1] == "exfm-fm-2026-01-01-r3" and out == {"version": "7"}


def test_failed_job_raises_with_its_error_line(monkeypatch, keys):
    client = FakeClient(script=["RUNNING", "FAILED"])
    orig = client.submit_job

    def submit(**kw):
        orig(**kw)
        client.logs[kw["submission_id"]] = "Traceback...\nERROR DayNotFound: s3://exfm/raw/day=x\n"
    client.submit_job = submit
    with pytest.raises(S.RayJobError, match="ERROR DayNotFound: s3://exfm/raw/day=x"):
        _run(monkeypatch, client)


def test_pending_too_long_is_stopped(monkeypatch, keys):
    client = FakeClient(script=["PENDING"])
    monkeypatch.setattr(S.time, "monotonic", iter(range(0, 10_000, 3)).__next__)
    with pytest.raises(S.RayJobError, match="still PENDING"):
        _run(monkeypatch, client)
    assert client.stopped == ["exfm-fm-2026-01-01"]


def test_interrupted_caller_stops_the_job(monkeypatch, keys):
    client = FakeClient(script=["RUNNING"])
    calls = {"n": 0}

    def sleep(_):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(S.time, "sleep", sleep)
    with pytest.raises(KeyboardInterrupt):
        _run(monkeypatch, client)
    assert client.stopped == ["exfm-fm-2026-01-01"]


def test_unreachable_cluster_is_a_clear_error(keys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    cfg = cfg_with(f"ray.address=http://127.0.0.1:{port}")
    with pytest.raises(S.RayJobError, match="unreachable"):
        S.job_client(cfg)


def test_safe_and_retry_ids():
    assert S.safe_submission_id("exfm", "exfm_daily", "manual__2026-01-01T00:00+00:00", "vm", 3) \
        == "exfm_exfm_daily_manual__2026-01-01T00-00-00-00_vm_3"
    ids = list(S.retry_ids("a"))
    assert ids[:3] == ["a", "a-r2", "a-r3"] and len(ids) == S.MAX_RETRY_IDS



def test_step_ids_outside_airflow_are_per_run_when_tagged():
    from exfm.pipeline import step_submission_id

    assert step_submission_id("fm", "2026-01-01") == "exfm-fm-2026-01-01"
    assert step_submission_id("vm", "2026-01-01", "d0-click") == "exfm-vm-d0-click-2026-01-01"
    a = step_submission_id("das", "2026-01-01", run_tag="r20261201T100000")
    b = step_submission_id("das", "2026-01-01", run_tag="r20261201T100001")
    assert a == "exfm-das-2026-01-01_r20261201T100000" and a != b


def test_vm_slice_filter_selects_domain_and_stage():
    import pyarrow as pa

    from exfm.config import VMConfig
    from exfm.data.schema import DatasetSchema, SparseField
    from exfm.data.slices import vm_slice_filter

    schema = DatasetSchema(name="t", timestamp="ts", domain="domain", stage="stage",
                           labels=["click"], sparse=[SparseField(name="u", vocab=3)])
    t = pa.table({"domain": ["d0", "d1", "d0"], "stage": ["late", "late", "early"]})
    vm = VMConfig(name="x", domain="d0", stage="late")
    assert t.filter(vm_slice_filter(vm, schema)).num_rows == 1
    assert vm_slice_filter(VMConfig(name="y"), schema) is None
    no_stage = schema.model_copy(update={"stage": None})
    with pytest.raises(ValueError, match="no such column"):
        vm_slice_filter(vm, no_stage)
