"""Ray jobs against the real stack (SeaweedFS + MLflow + Ray head), submitted through the Jobs API.

- FM on 2 workers: disjoint shards that cover every row of the day exactly once; the registered
  snapshot loads from the registry and predicts.
- Fault injection (through the test's own entry ``tests.integration.fault_train_fm``, not the
  product): rank 1 dies (``os._exit``) on the first attempt; Ray Train restarts the group,
  both ranks resume from the last checkpoint on S3, the day finishes with every row's update in
  the weights once (``rows_day`` == the manifest's rows, no row counted twice).
- 1 worker (the default config) warm-starts from the day before; rows_seen is cumulative.
- The data carries a dense column logged in raw units (``raw_len``, in the thousands): the
  chain's first FM and VM read it on the scale fitted on their first day's first rows
  (``exfm.data.dense_scale``), fitted once in the driver for every FM worker, and their
  registered snapshots keep it.
- The submission helper: a failing job raises with its error text; a caller killed with SIGTERM
  stops its job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exfm.compute.submit import RayJobError, job_client, submit_and_wait
from tests.integration.conftest import stack_env
from tests.integration.fault_train_fm import FAIL_ENV

pytestmark = pytest.mark.integration

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]
ROWS = 1201  # odd: the two shards differ by one row
SMALL = ["--set", "models.fm_embed_dim=8", "--set", "models.fm_hidden=[32,16]",
         "--set", "models.fm_cross_layers=2", "--set", "models.embed_dim=4",
         "--set", "models.vm_hidden=[16,8]", "--set", "ray.checkpoints_per_day=3"]


@pytest.fixture(scope="module")
def ray_data(stack_cfg, tmp_path_factory):
    """Three generated days committed to the stack's raw/; the config file jobs read."""
    from exfm.data.generator import generate
    from exfm.stack.services import config_dump_path
    from exfm.storage.partitions import ingest_dataset

    d = tmp_path_factory.mktemp("raydata")
    g = stack_cfg.data.generator.model_copy(update={"days": 3, "rows_per_day": ROWS, "seed": 11,
                                                    "n_users": 200, "n_items": 150})
    with stack_env(stack_cfg):
        generate(g, d / "data")
        add_raw_unit_column(d / "data")
        ingest_dataset(stack_cfg, d / "data", progress=lambda m: None)
    return {"config": str(config_dump_path(stack_cfg)), "dir": d}


RAW = "raw_len"  # a dense column in raw units (a length in characters)


def add_raw_unit_column(folder: Path) -> None:
    """Every day of ``folder`` gets ``raw_len`` (log-normal, median ~400), declared dense."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    rng = np.random.default_rng(5)
    for part in sorted(folder.glob("day=*/part-*.parquet")):
        t = pq.read_table(part)
        pq.write_table(t.append_column(RAW, pa.array(rng.lognormal(6.0, 1.0, t.num_rows))), part)
    spec = yaml.safe_load((folder / "schema.yaml").read_text())
    spec["dense"] = [*spec["dense"], RAW]
    (folder / "schema.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def expected_scale(stack_cfg, day: str):
    """``raw_len``'s scale fitted here on the day's first rows, as the jobs must have."""
    from exfm.data.dense_scale import FIT_ROWS, fit_scale
    from exfm.storage.partitions import PartitionStore

    t = PartitionStore(stack_cfg, "raw").read_day(day, columns=[RAW]).slice(0, FIT_ROWS)
    return fit_scale(RAW, t.column(RAW).to_numpy())


def fm_job(stack_cfg, ray_data, day, sid, workers, row_log=None, env=None, log=None,
           entry="ray_jobs.train_fm"):
    argv = ["-m", entry, "--day", day, "--config", ray_data["config"], *SMALL,
            "--set", f"ray.num_workers={workers}"]
    if row_log:
        argv += ["--row-log-dir", str(row_log)]
    return submit_and_wait(stack_cfg, argv, sid, env=env, log=log or (lambda m: None),
                           timeout_s=420)


def read_row_log(folder: Path) -> dict[int, list[dict]]:
    out = {}
    for f in sorted(folder.glob("rank*.jsonl")):
        out[int(f.stem[4:])] = [json.loads(line) for line in f.read_text().splitlines()]
    return out


def test_fm_two_workers_disjoint_shards_and_registered_snapshot(stack_cfg, ray_data, tmp_path):
    from exfm.models.snapshot import predict_table
    from exfm.registry.mlflow_registry import load_fm
    from exfm.storage.partitions import PartitionStore

    res = fm_job(stack_cfg, ray_data, DAYS[0], "test-fm-d1", 2, row_log=tmp_path / "rows")
    assert res["rows_day"] == ROWS and res["rows_seen"] == ROWS and res["restarts"] == 0
    logs = read_row_log(tmp_path / "rows")
    seen = {r: [rid for e in entries for rid in e["rids"]] for r, entries in logs.items()}
    assert sorted(seen) == [0, 1]
    assert not set(seen[0]) & set(seen[1])  # disjoint
    day = PartitionStore(stack_cfg, "raw").read_day(DAYS[0], columns=["rid"])
    all_ids = day.column("rid").to_pylist()
    assert sorted(seen[0] + seen[1]) == sorted(all_ids)  # every row exactly once
    # each rank's shard is a contiguous slice of the day in arrival order
    assert seen[0] + seen[1] == all_ids
    assert abs(len(seen[0]) - len(seen[1])) <= 1

    model, version = load_fm(stack_cfg, res["version"])
    assert version == res["version"]
    # fitted in the driver on the day's first rows; without it the workers read raw units
    assert model.schema.scales() == {RAW: expected_scale(stack_cfg, DAYS[0])}
    p = predict_table(model, PartitionStore(stack_cfg, "raw").read_day(DAYS[0]).slice(0, 100))
    assert p.shape == (100, len(model.tasks)) and ((p >= 0) & (p <= 1)).all()


def test_fm_resumes_from_checkpoint_after_a_worker_dies(stack_cfg, ray_data, tmp_path):
    lines: list[str] = []
    res = fm_job(stack_cfg, ray_data, DAYS[1], "test-fm-d2-fault", 2, row_log=tmp_path / "rows",
                 env={FAIL_ENV: "1:2"}, log=lines.append,
                 entry="tests.integration.fault_train_fm")  # the fault comes in through the test
    assert res["restarts"] == 1, "the group should have been restarted once"
    assert res["rows_day"] == ROWS  # every row's update in the weights once
    assert res["rows_seen"] == 2 * ROWS  # warm-started from day 1's snapshot
    assert res["warm_start"] is not None
    logs = read_row_log(tmp_path / "rows")
    for rank, entries in logs.items():
        resumed = [e for e in entries if e["resumed"]]
        assert resumed, f"rank {rank} did not resume"
        first_resumed = resumed[0]["chunk"]
        assert 1 <= first_resumed <= 2  # resumed from a checkpoint, not from the day's start
        # the final weights hold: chunks before the resume point (first attempt) + resumed chunks
        final = [e for e in entries if not e["resumed"] and e["chunk"] < first_resumed] + resumed
        assert [e["chunk"] for e in final] == list(range(len(final)))
    final_ids = [rid for entries in logs.values() for e in entries for rid in e["rids"]
                 if e["resumed"] or e["chunk"] < min(x["chunk"] for x in entries if x["resumed"])]
    assert len(final_ids) == ROWS and len(set(final_ids)) == ROWS
    assert any("RETRY" in ln or "Error count: 1" in ln for ln in lines)


def test_fm_one_worker_warm_start_chain_and_idempotent_retry(stack_cfg, ray_data):
    res = fm_job(stack_cfg, ray_data, DAYS[2], "test-fm-d3", 1)
    assert res["rows_day"] == ROWS and res["rows_seen"] == 3 * ROWS and not res["reused"]
    # the same task retried after its job was lost: same run, no second registration
    again = fm_job(stack_cfg, ray_data, DAYS[2], "test-fm-d3-again", 1)
    assert again["reused"] and again["version"] == res["version"]


def test_failing_job_raises_with_its_error_text(stack_cfg, ray_data):
    with pytest.raises(RayJobError) as e:
        fm_job(stack_cfg, ray_data, "2031-01-01", "test-fm-missing-day", 1)
    assert "DayNotFound" in str(e.value) and "raw/day=2031-01-01" in str(e.value)


def test_killed_caller_stops_its_job(stack_cfg, ray_data, tmp_path):
    sid = f"test-cancel-{int(time.time())}"
    script = (
        "import sys\n"
        "from exfm.config import load_config\n"
        "from exfm.compute.submit import submit_and_wait\n"
        f"submit_and_wait(load_config({ray_data['config']!r}), ['-c', "
        "'import time; print(\"sleeping\", flush=True); time.sleep(600)'], "
        f"{sid!r}, log=lambda m: print(m, flush=True))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = job_client(stack_cfg)
    try:
        deadline = time.time() + 90
        status = None
        while time.time() < deadline:
            try:
                status = str(client.get_job_status(sid).value)
            except Exception:  # noqa: BLE001 - not submitted yet
                status = None
            if status == "RUNNING":
                break
            time.sleep(0.5)
        assert status == "RUNNING"
        proc.send_signal(signal.SIGTERM)  # what Airflow does to a task marked failed
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode != 0
        assert "stopping ray job" in out
        deadline = time.time() + 60
        while time.time() < deadline and str(client.get_job_status(sid).value) != "STOPPED":
            time.sleep(0.5)
        assert str(client.get_job_status(sid).value) == "STOPPED"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_vm_job_progressive_metric_then_one_pass(stack_cfg, ray_data):
    def vm_job(day, sid):
        argv = ["-m", "ray_jobs.train_vm", "--day", day, "--vm", "d0-click",
                "--config", ray_data["config"], *SMALL]
        return submit_and_wait(stack_cfg, argv, sid, log=lambda m: None, timeout_s=300)

    from exfm.registry.mlflow_registry import load_snapshot_version, vm_model_name

    first = vm_job(DAYS[0], "test-vm-d1")
    assert first["source"] == "raw" and first["fm_version"] is None  # no augmented day yet
    vm, _, _ = load_snapshot_version(stack_cfg, vm_model_name("d0-click"),
                                     first["arms"]["fm"]["version"])
    assert set(vm.schema.scales()) == {RAW}  # the VM's own fit, on its slice of day 1
    assert first["arms"]["fm"]["progressive"] is None  # nothing to score before the first day
    second = vm_job(DAYS[1], "test-vm-d2")
    arm = second["arms"]["fm"]
    assert arm["previous_version"] == first["arms"]["fm"]["version"]
    assert 0 <= arm["progressive"]["auc"] <= 1  # yesterday's snapshot scored on today first
    assert arm["rows"] == second["rows"] > 0
    again = vm_job(DAYS[1], "test-vm-d2-again")  # a retried task: no second version
    assert again["arms"]["fm"]["reused"] and again["arms"]["fm"]["version"] == arm["version"]


def test_vm_job_tunes_amplifiers_on_an_earlier_augmented_day(stack_cfg, ray_data):
    """An AH+SA VM (d1-click) over three augmented days in its own bucket: day 1 has nothing
    earlier (configured gs/ls/lw), day 2 tunes on day 1 -> day 2 and records the choice on its
    version and in MLflow, day 3 keeps it (within tune_every_days). The control arm never tunes.
    The augmented partitions carry a label-informed fm_pred column written here (the VM job's
    input contract); the FM and DAS themselves are covered by the other tests."""
    import numpy as np
    import pyarrow as pa

    from exfm.data.generator import generate
    from exfm.registry.mlflow_registry import connect
    from exfm.storage.partitions import PartitionStore, ingest_dataset

    from exfm.data.generator import generator_schema
    from exfm.models.build import build_fm
    from exfm.registry.mlflow_registry import ensure_experiments, register_fm

    bucket, fm_name = "exfm-tune-test", "exfm-fm-tune-test"
    cfg = stack_cfg.model_copy(update={
        "storage": stack_cfg.storage.model_copy(update={"bucket": bucket}),
        "das": stack_cfg.das.model_copy(update={"fm_model": fm_name})})
    g = stack_cfg.data.generator.model_copy(update={"days": 3, "rows_per_day": ROWS, "seed": 12,
                                                    "n_users": 200, "n_items": 150})
    d = ray_data["dir"] / "tune"
    rng = np.random.default_rng(0)
    with stack_env(cfg):
        generate(g, d)
        ingest_dataset(cfg, d, progress=lambda m: None)
        # the FM snapshot the augmented days name (its own registered model, trained the day
        # before DAYS[0]): the VM job reads its day for the freshness gap
        schema = generator_schema(g)
        ensure_experiments(cfg, vms=[])
        fm_version = register_fm(cfg, build_fm(schema, list(schema.labels), cfg), "2025-12-31",
                                 0, [])
        raw, aug = PartitionStore(cfg, "raw"), PartitionStore(cfg, "augmented")
        for day in DAYS:
            t = raw.read_day(day)
            for task in ("click", "like"):
                y = t.column(task).to_numpy().astype(np.float64)
                p = np.clip(0.02 + 0.3 * y + rng.normal(0, 0.05, len(y)), 0.001, 0.999)
                t = t.append_column(f"fm_pred_{task}", pa.array(p.astype(np.float32)))
            t = t.append_column("fm_version", pa.array([fm_version] * t.num_rows))
            aug.write_day(day, t, producer="test", fm_version=fm_version)

    def vm_job(day):
        argv = ["-m", "ray_jobs.train_vm", "--day", day, "--vm", "d1-click",
                "--config", ray_data["config"], *SMALL, "--set", f"storage.bucket={bucket}",
                "--set", f"das.fm_model={fm_name}",
                "--set", "distillation.tune_gs=[1,4]", "--set", "distillation.tune_ls=[1]",
                "--set", "distillation.tune_lw=[1,3]"]
        return submit_and_wait(stack_cfg, argv, f"test-vm-tune-{day}", log=lambda m: None,
                               timeout_s=300)

    first, second, third = (vm_job(day) for day in DAYS)
    assert first["source"] == "augmented"
    assert first["arms"]["fm"]["tune"] == {"tune": "none"}
    assert first["arms"]["control"]["tune"] == {"tune": "off"}
    tuned = second["arms"]["fm"]["tune"]
    assert tuned["tune"] == "tuned" and tuned["train_day"] == DAYS[0]
    assert tuned["tuned_on"] == DAYS[1]
    with stack_env(stack_cfg):
        client = connect(stack_cfg)
        v = client.get_model_version("exfm-vm-d1-click", second["arms"]["fm"]["version"])
        assert v.tags["tuned_on"] == DAYS[1]
        assert float(v.tags["tuned_gs"]) == tuned["gs"] and float(v.tags["tuned_lw"]) == tuned["lw"]
        run = client.get_run(second["arms"]["fm"]["run_id"])
        assert float(run.data.params["distillation.gs"]) == tuned["gs"]  # trained with the choice
        assert run.data.tags["tune"] == "tuned"
        local = client.download_artifacts(run.info.run_id, "tuning.json")
        trials = json.loads(Path(local).read_text())["trials"]
    assert [(t["gs"], t["ls"], t["lw"]) for t in trials][0] == (2.0, 1.0, 1.0)  # configured first
    # configured (2,1,1) + the 2x1x2 grid + the step-back pulls gs=0.5 and gs=0 at ls=1, lw=1
    assert len(trials) == 7 and sum(t["chosen"] for t in trials) == 1
    assert {t["gs"] for t in trials[-2:]} == {0.5, 0.0}
    best = max(trials, key=lambda t: t["auc"])
    assert (best["gs"], best["ls"], best["lw"]) == (tuned["gs"], tuned["ls"], tuned["lw"])
    kept = third["arms"]["fm"]["tune"]
    assert kept["tune"] == "reused" and kept["tuned_on"] == DAYS[1]
    assert (kept["gs"], kept["ls"], kept["lw"]) == (tuned["gs"], tuned["ls"], tuned["lw"])
