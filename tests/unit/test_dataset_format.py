"""validate_dataset catches every broken rule, naming file, column and rule; IO round-trips."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from exfm.data.io import read_day, write_day
from exfm.data.schema import DatasetError, DatasetSchema, SequenceField, SparseField
from exfm.data.validate import DatasetErrors, validate_dataset

DAY = "2026-01-01"
T0 = 1767225600  # 2026-01-01T00:00:00Z: timestamps must fall inside their day folder's day
SCHEMA = DatasetSchema(
    name="t", timestamp="ts", request_id="rid", domain="domain", stage="stage",
    labels=["click"], sparse=[SparseField(name="user_id", vocab=10),
                              SparseField(name="item_id", vocab=5)],
    dense=["price"], sequences=[SequenceField(name="hist", of="item_id", max_len=3)],
)


def good(**over) -> dict:
    cols = {
        "ts": pa.array([T0 + 1, T0 + 2, T0 + 3, T0 + 4], pa.int64()),
        "rid": pa.array([10, 11, 12, 13], pa.int64()),
        "domain": pa.array(["d0", "d1", "d0", "d1"]),
        "stage": pa.array(["retrieval", "early", "late", "late"]),
        "click": pa.array([0, 1, 0, 0], pa.int64()),
        "user_id": pa.array([0, 1, 2, 9], pa.int64()),
        "item_id": pa.array([0, 1, 2, 4], pa.int64()),
        "price": pa.array([0.1, 0.2, 0.3, 0.4], pa.float32()),
        "hist": pa.array([[], [0], [0, 1], [1, 2, 4]], pa.list_(pa.int64())),
    }
    cols.update(over)
    return cols


def make(tmp_path, **over):
    SCHEMA.write(tmp_path)
    cols = {k: v for k, v in good(**over).items() if v is not None}
    write_day(tmp_path, DAY, pa.table(cols))
    return tmp_path


def errors_of(path) -> list[DatasetError]:
    with pytest.raises(DatasetError) as ei:
        validate_dataset(path)
    return getattr(ei.value, "errors", [ei.value])


def test_good_dataset_passes_and_round_trips(tmp_path):
    make(tmp_path)
    validate_dataset(tmp_path)
    write_day(tmp_path, "2026-01-02", pa.table(good()).slice(0, 3), rows_per_part=1)
    assert len(list((tmp_path / "day=2026-01-02").glob("part-*.parquet"))) == 3
    assert read_day(tmp_path, "2026-01-02").column("ts").to_pylist() == [T0 + 1, T0 + 2, T0 + 3]
    assert read_day(tmp_path, DAY, columns=["ts"]).column_names == ["ts"]
    with pytest.raises(DatasetError):
        read_day(tmp_path, DAY, columns=["nope"])


@pytest.mark.parametrize("column, over, rule", [
    ("price", {"price": None}, "column is missing"),
    ("user_id", {"user_id": pa.array([0, 1, 2, 10], pa.int64())}, "outside [0, 10)"),
    ("user_id", {"user_id": pa.array([0, 1, 2, -1], pa.int64())}, "outside [0, 10)"),
    ("user_id", {"user_id": pa.array([0, 1, 2, 3], pa.int32())}, "must be int64"),
    ("click", {"click": pa.array([0, 2, 0, 0], pa.int64())}, "0 or 1"),
    ("click", {"click": pa.array([0.0, 1.0, 0.0, 0.0])}, "integer 0/1"),
    ("price", {"price": pa.array([0.1, float("nan"), 0.3, float("inf")], pa.float32())},
     "finite"),
    ("price", {"price": pa.array([1, 2, 3, 4], pa.int64())}, "float"),
    ("hist", {"hist": pa.array([[], [0], [0, 5], [1]], pa.list_(pa.int64()))},
     "'item_id' id(s) outside"),
    ("hist", {"hist": pa.array([[], [0], [0], [1, 2, 3, 4]], pa.list_(pa.int64()))},
     "longer than max_len"),
    ("hist", {"hist": pa.array([[], [0], [0], [1]], pa.list_(pa.int32()))}, "list<int64>"),
    ("ts", {"ts": pa.array([T0 + 1, T0 + 3, T0 + 2, T0 + 4], pa.int64())}, "sorted"),
    ("ts", {"ts": pa.array([1.0, 2.0, 3.0, 4.0])}, "int64"),
    ("rid", {"rid": pa.array([10, 11, 11, 13], pa.int64())}, "unique"),
    ("stage", {"stage": pa.array(["retrieval", "early", "final", "late"])}, "retrieval|early|late"),
    ("user_id", {"user_id": pa.array([0, None, 2, 3], pa.int64())}, "null"),
])
def test_each_broken_rule_is_named(tmp_path, column, over, rule):
    errs = errors_of(make(tmp_path, **over))
    hit = [e for e in errs if e.column == column and rule in e.rule]
    assert hit, [str(e) for e in errs]
    assert hit[0].file.endswith("part-00000.parquet")
    assert column in str(hit[0]) and "part-00000.parquet" in str(hit[0])


def test_all_errors_are_collected(tmp_path):
    errs = errors_of(make(tmp_path, click=pa.array([0, 2, 0, 0], pa.int64()),
                          item_id=pa.array([0, 1, 2, 7], pa.int64()), price=None))
    assert {e.column for e in errs} >= {"click", "item_id", "price"}


def test_unsorted_across_parts_and_duplicate_ids_across_days(tmp_path):
    SCHEMA.write(tmp_path)
    t = pa.table(good(ts=pa.array([T0 + 3, T0 + 4, T0 + 1, T0 + 2], pa.int64())))
    write_day(tmp_path, DAY, t, rows_per_part=2)
    write_day(tmp_path, "2026-01-02", pa.table(good()))
    errs = errors_of(tmp_path)
    assert any(e.column == "ts" and "sorted" in e.rule and e.file.endswith("part-00001.parquet")
               for e in errs)
    assert any(e.column == "rid" and "unique" in e.rule for e in errs)


def test_bad_schema_yaml(tmp_path):
    make(tmp_path)
    (tmp_path / "schema.yaml").write_text("name: x\ntimestamp: ts\nlabels: [click]\nbogus: 1\n")
    with pytest.raises(DatasetError) as ei:
        validate_dataset(tmp_path)
    assert "schema.yaml" in ei.value.file and ei.value.column == "bogus"
    (tmp_path / "schema.yaml").unlink()
    with pytest.raises(DatasetError, match="missing"):
        validate_dataset(tmp_path)


def test_a_misspelt_schema_key_is_named_with_the_key_it_meant(tmp_path):
    make(tmp_path)
    (tmp_path / "schema.yaml").write_text("name: x\ntimestamp: ts\nlables: [click]\n")
    with pytest.raises(DatasetError) as ei:
        validate_dataset(tmp_path)
    assert str(ei.value).endswith("schema.yaml: key 'lables': unknown key (did you mean 'labels'?)")
    (tmp_path / "schema.yaml").write_text("name: x\ntimestamp: ts\n")
    with pytest.raises(DatasetError, match="key 'labels': required key is missing"):
        validate_dataset(tmp_path)


def test_cli_validate_prints_every_error(tmp_path):
    from click.testing import CliRunner

    from exfm.commands.data import data

    make(tmp_path, click=pa.array([0, 2, 0, 0], pa.int64()),
         item_id=pa.array([0, 1, 2, 7], pa.int64()))
    res = CliRunner().invoke(data, ["validate", str(tmp_path)])
    assert res.exit_code != 0
    assert "'click'" in res.output and "'item_id'" in res.output
    assert isinstance(DatasetErrors, type)
