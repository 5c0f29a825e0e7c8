"""Partition manifests without a store: JSON round trip, content-only digests, label windows."""

import pyarrow as pa

from exfm.config import load_config
from exfm.das.augment import label_days
from exfm.storage.partitions import Manifest, _parquet_bytes, arrow_schema_hash


def test_manifest_round_trip():
    m = Manifest(prefix="raw", day="2026-01-01", write_id="abc", parts=["raw/day=2026-01-01/_v=abc/part-00000.parquet"],
                 rows=3, schema_hash="h", digest="d", producer="t", fm_version="2", extra={"k": [1]})
    assert Manifest.from_json(m.to_json()) == m


def test_parquet_bytes_depend_on_content_only():
    t = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    assert _parquet_bytes(t) == _parquet_bytes(pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]}))
    assert _parquet_bytes(t) != _parquet_bytes(t.slice(0, 2))
    assert arrow_schema_hash(t.schema) != arrow_schema_hash(t.select(["a"]).schema)


def test_label_window_days():
    cfg = load_config(None, ["data.label_window_days=2"], env={})
    assert label_days(cfg, "2026-01-31") == ["2026-01-31", "2026-02-01", "2026-02-02"]


def test_version_ranges_name_each_rows_fm_version():
    from exfm.das.augment import version_ranges

    col = pa.chunked_array([["3", "3"], ["3", "4", "4"], ["4"]])
    assert version_ranges(col) == [[0, 3, "3"], [3, 6, "4"]]
    assert version_ranges(pa.chunked_array([["5"]])) == [[0, 1, "5"]]
    assert version_ranges(pa.chunked_array([[]], pa.string())) == []
    ranges = version_ranges(col)
    assert [v for a, b, v in ranges for _ in range(a, b)] == col.to_pylist()
