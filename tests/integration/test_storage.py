"""Day partitions on the real SeaweedFS: manifest commit, re-runs, crashes, bad input.

- A committed day reads back whole, with column selection and a row filter (a VM's slice), and
  streamed in chunks (the same rows in the same order).
- A re-run replaces the day whole with identical content (same rows, same manifest digest) and
  garbage-collects the old version's parts.
- Crash injection: the writer process is SIGKILLed between two parts, and after the last part but
  before the manifest; the day stays exactly as it was (readers follow the manifest).
- Bad input: a missing column, a corrupt part, an unreachable endpoint: a clear error naming
  what and where, nothing committed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from exfm.storage.partitions import DayNotFound, PartitionStore, ingest_dataset, load_remote_schema
from exfm.storage.s3 import StorageError, ensure_bucket, s3_client

pytestmark = pytest.mark.integration

DAY = "2026-02-01"


def _table(n: int, seed: int = 0) -> pa.Table:
    return pa.table({"rid": pa.array(range(seed, seed + n), pa.int64()),
                     "domain": pa.array([f"d{i % 3}" for i in range(n)]),
                     "x": pa.array([float(i) * 0.5 for i in range(n)], pa.float32()),
                     "click": pa.array([i % 2 for i in range(n)], pa.int64())})


def _keys(cfg, prefix: str) -> list[str]:
    out = s3_client(cfg).list_objects_v2(Bucket=cfg.storage.bucket, Prefix=prefix)
    return sorted(o["Key"] for o in out.get("Contents", []))


def _no_grace(cfg):
    """Replaced versions collected at the commit (the grace is tested in test_faults.py)."""
    return cfg.model_copy(update={"storage": cfg.storage.model_copy(
        update={"superseded_grace_s": 0})})


def test_write_read_filter_rerun_identical(stack_cfg):
    ensure_bucket(stack_cfg)
    store = PartitionStore(_no_grace(stack_cfg), "t_rw")
    with pytest.raises(DayNotFound):
        store.read_day(DAY)
    m1 = store.write_day(DAY, _table(1000), producer="test", rows_per_part=300)
    assert m1.rows == 1000 and len(m1.parts) == 4
    assert store.list_days() == [DAY]
    assert store.read_day(DAY).equals(_table(1000))
    d1 = store.read_day(DAY, columns=["rid", "click"], filter=pc.field("domain") == "d1")
    assert d1.column_names == ["rid", "click"]
    assert d1.num_rows == 333 and all(r % 3 == 1 for r in d1.column("rid").to_pylist())
    # the same slice streamed (what VM days and the promotion gate read): chunks of exactly 100
    # rows across the 4 parts, the same rows in the same order as the whole-day read
    stream = store.stream_day(DAY, filter=pc.field("domain") == "d1", columns=["rid", "click"])
    chunks = list(stream.chunks(100))
    assert [c.num_rows for c in chunks] == [100, 100, 100, 33] and stream.count() == 333
    assert pa.concat_tables(chunks).equals(d1)
    assert stream.thin(50).column("rid").to_pylist() == d1.column("rid").to_pylist()[::7]
    # a re-run over the same rows: a new write id, the same content digest, old parts collected
    m2 = store.write_day(DAY, _table(1000), producer="test", rows_per_part=300)
    assert m2.write_id != m1.write_id and m2.digest == m1.digest
    assert store.read_day(DAY).equals(_table(1000))
    parts = [k for k in _keys(stack_cfg, store.day_prefix(DAY)) if k.endswith(".parquet")]
    assert parts == sorted(m2.parts)
    # different content: different digest, the day replaced whole
    m3 = store.write_day(DAY, _table(10, seed=5), producer="test")
    assert m3.digest != m1.digest and store.read_day(DAY).num_rows == 10


_CRASHER = textwrap.dedent("""
    import os, signal, sys
    import pyarrow as pa
    from exfm.config import load_config
    from exfm.storage.partitions import PartitionStore
    crash_after = int(sys.argv[1])
    n = 1000
    t = pa.table({"rid": pa.array(range(n), pa.int64()), "domain": pa.array(["z"] * n),
                  "x": pa.array([1.0] * n, pa.float32()), "click": pa.array([1] * n, pa.int64())})
    def hook(i):
        if i == crash_after:
            os.kill(os.getpid(), signal.SIGKILL)  # the writer dies here, no cleanup
    PartitionStore(load_config(), "t_crash").write_day("%s", t, rows_per_part=250,
                                                       _before_commit=hook)
""" % DAY)


@pytest.mark.parametrize("crash_after", [1, 3], ids=["between-parts", "before-manifest"])
def test_crash_mid_write_leaves_the_day_as_it_was(stack_cfg, crash_after):
    store = PartitionStore(_no_grace(stack_cfg), "t_crash")
    before = store.write_day(DAY, _table(100), producer="good")
    proc = subprocess.run([sys.executable, "-c", _CRASHER, str(crash_after)], env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    # the killed writer did upload parts, but no reader sees them
    staged = [k for k in _keys(stack_cfg, store.day_prefix(DAY)) if k not in before.parts]
    assert any(k.endswith(".parquet") for k in staged)
    assert store.manifest(DAY) == before
    assert store.read_day(DAY).equals(_table(100))
    # the next successful write commits and collects the orphans of the crashed one
    after = store.write_day(DAY, _table(100), producer="good")
    assert after.digest == before.digest
    assert [k for k in _keys(stack_cfg, store.day_prefix(DAY)) if k.endswith(".parquet")] == after.parts


def test_missing_column_commits_nothing(stack_cfg):
    store = PartitionStore(stack_cfg, "t_missing")
    with pytest.raises(StorageError, match=r"required columns \['click'\] missing"):
        store.write_day(DAY, _table(10).drop_columns(["click"]), required_columns=["rid", "click"])
    assert store.manifest(DAY) is None and _keys(stack_cfg, store.day_prefix(DAY)) == []


def test_corrupt_part_is_named(stack_cfg):
    store = PartitionStore(stack_cfg, "t_corrupt")
    m = store.write_day(DAY, _table(600), rows_per_part=200)
    s3_client(stack_cfg).put_object(Bucket=stack_cfg.storage.bucket, Key=m.parts[1], Body=b"garbage")
    with pytest.raises(StorageError, match=m.parts[1]):
        store.read_day(DAY)
    with pytest.raises(StorageError, match=m.parts[1]):
        store.check_parts(m)
    stream = store.stream_day(DAY)
    first = next(iter(stream.chunks(200)))  # the good first part reads
    assert first.num_rows == 200
    with pytest.raises(StorageError, match=m.parts[1]):
        list(stream.chunks(200))


def test_unreachable_endpoint_names_it(stack_cfg):
    bad = stack_cfg.model_copy(update={"storage": stack_cfg.storage.model_copy(
        update={"endpoint": "http://127.0.0.1:9"})})
    with pytest.raises(StorageError, match=r"http://127.0.0.1:9 is unreachable"):
        ensure_bucket(bad)
    with pytest.raises(StorageError, match=r"http://127.0.0.1:9"):
        PartitionStore(bad, "raw").manifest(DAY)


def test_ingest_uploads_days_and_schema(stack_cfg, tmp_path):
    from exfm.data.generator import generate

    g = stack_cfg.data.generator.model_copy(update={"days": 2, "rows_per_day": 300, "seed": 3,
                                                    "n_users": 50, "n_items": 40})
    schema = generate(g, tmp_path / "data")
    ms = ingest_dataset(stack_cfg, tmp_path / "data", progress=lambda m: None)
    raw = PartitionStore(stack_cfg, "raw")
    assert [m.rows for m in ms] == [300, 300]
    assert set(m.day for m in ms) <= set(raw.list_days())
    assert load_remote_schema(stack_cfg) == schema
    assert raw.read_day(ms[0].day, columns=schema.labels).num_rows == 300
