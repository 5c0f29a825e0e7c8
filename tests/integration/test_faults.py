"""Faults on real SeaweedFS: two writers on one day, a reader holding the replaced manifest.

- Two writers interleaved on one day (the second takes the day while the first is staging): the
  first is fenced (``WriterFenced``, its staged parts deleted), the second's manifest names only
  parts that exist, and the day reads back whole. Without the fence the second writer's cleanup
  deleted the first one's parts and the first then committed a manifest naming them.
- Two writers truly concurrent, several rounds: whichever wins, every part its manifest names
  exists and the day reads back as exactly the winner's rows; a loser fails with WriterFenced.
- A reader holding yesterday's manifest still reads its parts after a re-run commits (kept for
  ``storage.superseded_grace_s``); once the grace has passed a later collect deletes them.
- A registration SIGKILLed after its registry version exists but before it is marked complete:
  no lookup sees the version, and the retry completes that same version (no duplicate).
- The caller of ``submit_and_wait`` SIGKILLed while its Ray job runs (an Airflow zombie): the job
  keeps running; the retry with the same submission id re-attaches to it (no second submission)
  and gets its result; the job's side effect happened once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from exfm.paths import project_root
from exfm.storage.partitions import PartitionStore, WriterFenced
from exfm.storage.s3 import arrow_fs, ensure_bucket, s3_client

pytestmark = pytest.mark.integration

DAY = "2026-04-01"


def _table(n: int, tag: int) -> pa.Table:
    return pa.table({"rid": pa.array(range(n), pa.int64()),
                     "writer": pa.array([tag] * n, pa.int64()),
                     "x": pa.array([float(i + tag) for i in range(n)], pa.float32())})


def _parquet_keys(cfg, store: PartitionStore, day: str) -> list[str]:
    out = s3_client(cfg).list_objects_v2(Bucket=cfg.storage.bucket, Prefix=store.day_prefix(day))
    return sorted(o["Key"] for o in out.get("Contents", []) if o["Key"].endswith(".parquet"))


def _read_parts(cfg, parts: list[str]) -> pa.Table:
    paths = [f"{cfg.storage.bucket}/{k}" for k in parts]
    return ds.dataset(paths, format="parquet", filesystem=arrow_fs(cfg)).to_table()


def _with_grace(cfg, seconds: float):
    return cfg.model_copy(update={"storage": cfg.storage.model_copy(
        update={"superseded_grace_s": seconds})})


def _assert_day_whole(cfg, store: PartitionStore, day: str, tables: dict[int, pa.Table]) -> int:
    """Every part the manifest names exists; the day is exactly one writer's rows. -> that writer."""
    m = store.manifest(day)
    present = set(_parquet_keys(cfg, store, day))
    assert set(m.parts) <= present, f"manifest names deleted parts: {set(m.parts) - present}"
    got = store.read_day(day)
    winner = got.column("writer")[0].as_py()
    assert got.equals(tables[winner])
    return winner


def test_interleaved_writers_the_earlier_is_fenced(stack_cfg):
    cfg = _with_grace(stack_cfg, 0)
    ensure_bucket(cfg)
    store = PartitionStore(cfg, "t_fence")
    tables = {1: _table(900, 1), 2: _table(600, 2)}
    a_staged, b_done = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def hold_a(i: int) -> None:  # writer A pauses after its first part until B has committed
        if i == 0:
            a_staged.set()
            assert b_done.wait(120)

    def writer_a():
        try:
            outcome["a"] = store.write_day(DAY, tables[1], producer="a", rows_per_part=300,
                                           _before_commit=hold_a)
        except Exception as e:  # noqa: BLE001 - asserted below
            outcome["a"] = e

    t = threading.Thread(target=writer_a)
    t.start()
    assert a_staged.wait(120)
    try:
        outcome["b"] = store.write_day(DAY, tables[2], producer="b", rows_per_part=300)
    finally:
        b_done.set()
    t.join(180)
    assert isinstance(outcome["a"], WriterFenced), outcome["a"]
    assert "committed nothing" in str(outcome["a"])
    assert store.manifest(DAY) == outcome["b"]
    assert _assert_day_whole(cfg, store, DAY, tables) == 2
    # the fenced writer left nothing behind: only the winner's parts are in the day
    assert _parquet_keys(cfg, store, DAY) == sorted(outcome["b"].parts)


def test_concurrent_writers_day_always_whole(stack_cfg):
    cfg = _with_grace(stack_cfg, 0)
    store = PartitionStore(cfg, "t_race")
    tables = {1: _table(1200, 1), 2: _table(700, 2)}
    for _round in range(3):
        results: dict[int, object] = {}
        start = threading.Barrier(2)

        def write(tag: int):
            start.wait(30)
            try:
                results[tag] = store.write_day(DAY, tables[tag], producer=str(tag),
                                               rows_per_part=200)
            except Exception as e:  # noqa: BLE001 - asserted below
                results[tag] = e

        threads = [threading.Thread(target=write, args=(tag,)) for tag in tables]
        [t.start() for t in threads]
        [t.join(180) for t in threads]
        errors = [r for r in results.values() if isinstance(r, Exception)]
        assert all(isinstance(e, WriterFenced) for e in errors), errors
        assert len(errors) < 2
        winner = _assert_day_whole(cfg, store, DAY, tables)
        assert not isinstance(results[winner], Exception)
        assert store.manifest(DAY).write_id == results[winner].write_id


def test_reader_of_the_replaced_manifest_keeps_its_parts_for_the_grace(stack_cfg):
    cfg = _with_grace(stack_cfg, 3600)
    store = PartitionStore(cfg, "t_grace")
    old = store.write_day(DAY, _table(500, 1), rows_per_part=200)
    held = store.manifest(DAY)  # a reader has planned its read from this manifest
    new = store.write_day(DAY, _table(300, 2), rows_per_part=200)
    assert store.manifest(DAY) == new and new.retired[-1]["parts"] == old.parts
    # the reader goes on with the manifest it holds: every part is still there
    assert _read_parts(cfg, held.parts).equals(_table(500, 1))
    # within the grace nothing of the old version is collected; after it, a collect deletes it
    assert store.collect(DAY) == 0
    assert store.collect(DAY, now=time.time() + 3601) == len(old.parts)
    assert _parquet_keys(cfg, store, DAY) == sorted(new.parts)
    assert store.read_day(DAY).equals(_table(300, 2))
    # the next commit drops the expired entry from ``retired``
    later = PartitionStore(_with_grace(stack_cfg, 0), "t_grace").write_day(DAY, _table(300, 2))
    assert [r["parts"] for r in later.retired] == [new.parts]


# --- a registration killed between its steps (real MLflow) ---------------------------------------
_REGISTER = textwrap.dedent("""
    import os, signal, sys
    from exfm.config import load_config
    import exfm.registry.mlflow_registry as reg
    from tests.integration.test_registry import tiny_fm
    cfg = load_config(None, ["das.fm_model=exfm-fm-killtest"])
    if sys.argv[1] == "kill":  # the test's fault: die after the version exists, before 'complete'
        reg._mark_complete = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
    v = reg.register_fm(cfg, tiny_fm(cfg), "2026-04-02", 64, ["s3://b/raw/day=2026-04-02/"],
                        tags={"train_run": "fm-2026-04-02-killtest"})
    print("VERSION", v)
""")


def _register_in_subprocess(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _REGISTER, mode], env=dict(os.environ),
                          cwd=str(project_root()), capture_output=True, text=True, timeout=300)


def test_registration_killed_between_steps_is_invisible_then_completed_once(stack_cfg):
    from exfm.registry.mlflow_registry import (COMPLETE_TAG, connect, ensure_experiments,
                                               find_version, latest_version)

    cfg = stack_cfg.model_copy(update={"das": stack_cfg.das.model_copy(
        update={"fm_model": "exfm-fm-killtest"})})
    ensure_experiments(cfg, vms=[])
    name = cfg.das.fm_model
    killed = _register_in_subprocess("kill")
    assert killed.returncode == -9, killed.stderr[-3000:]
    [half] = connect(cfg).search_model_versions(f"name='{name}'")
    assert half.tags.get(COMPLETE_TAG) is None and half.tags.get("day") == "2026-04-02"
    # readers never see the half-registered version
    assert latest_version(cfg, name) is None
    assert find_version(cfg, name, train_run="fm-2026-04-02-killtest") is None
    # the retry completes that same version: no duplicate
    retry = _register_in_subprocess("ok")
    assert retry.returncode == 0, retry.stderr[-3000:]
    assert f"VERSION {half.version}" in retry.stdout
    versions = connect(cfg).search_model_versions(f"name='{name}'")
    assert [v.version for v in versions] == [half.version]
    assert versions[0].tags[COMPLETE_TAG] == "true"
    assert latest_version(cfg, name) == str(half.version)
    assert find_version(cfg, name, train_run="fm-2026-04-02-killtest") == str(half.version)


# --- a caller killed with SIGKILL (an Airflow zombie), then retried (real Ray) --------------------
_JOB = ("import json, sys, time; time.sleep(30); "
        "open(sys.argv[1], 'a').write('done\\n'); "
        "print('EXFM_RESULT ' + json.dumps({'day': '2026-04-03', 'rows': 7}), flush=True)")


def test_sigkilled_caller_retry_reattaches_and_the_result_appears_once(stack_cfg, tmp_path):
    from exfm.compute.submit import job_client, submit_and_wait
    from exfm.stack.services import config_dump_path

    sid = f"test-zombie-{int(time.time())}"
    marker = tmp_path / "results.txt"
    caller = (
        "from exfm.config import load_config\n"
        "from exfm.compute.submit import submit_and_wait\n"
        f"submit_and_wait(load_config({str(config_dump_path(stack_cfg))!r}), "
        f"['-c', {_JOB!r}, {str(marker)!r}], {sid!r}, log=lambda m: print(m, flush=True))\n")
    proc = subprocess.Popen([sys.executable, "-c", caller], env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = job_client(stack_cfg)
    try:
        deadline, status = time.time() + 120, None
        while time.time() < deadline and status != "RUNNING":
            try:
                status = str(client.get_job_status(sid).value)
            except Exception:  # noqa: BLE001 - not submitted yet
                status = None
            time.sleep(0.3)
        assert status == "RUNNING"
        proc.kill()  # SIGKILL: no handler runs, the job is left running
        assert proc.wait(30) == -9
        assert str(client.get_job_status(sid).value) == "RUNNING"
        # the retry (same submission id, as the DAG's retry uses) re-attaches, never re-submits
        lines: list[str] = []
        result = submit_and_wait(stack_cfg, ["-c", _JOB, str(marker)], sid, log=lines.append,
                                 timeout_s=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert result == {"day": "2026-04-03", "rows": 7}
    assert any("re-attaching" in line for line in lines), lines[:5]
    assert not any("submitted to" in line for line in lines)
    assert marker.read_text() == "done\n"  # the job ran once: one result
    assert [j.submission_id for j in client.list_jobs() if (j.submission_id or "").startswith(sid)] == [sid]
