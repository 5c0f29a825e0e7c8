"""The format validator's rules added for issue #16: each fails alone, naming file/column/rule."""

import pyarrow as pa
import pytest
from click.testing import CliRunner

from exfm.data.io import read_day, write_day
from exfm.data.schema import DatasetError, DatasetSchema, SparseField, load_schema
from exfm.data.validate import day_bounds, validate_dataset

DAY = "2026-01-01"
T0 = 1767225600  # 2026-01-01T00:00:00Z
SCHEMA = DatasetSchema(name="t", timestamp="ts", request_id="rid", labels=["click"],
                       sparse=[SparseField(name="user_id", vocab=10)], dense=["price"])


def table(ts=None, n=4, **extra) -> pa.Table:
    cols = {
        "ts": pa.array(ts if ts is not None else [T0 + i for i in range(n)], pa.int64()),
        "rid": pa.array(list(range(n)), pa.int64()),
        "click": pa.array([i % 2 for i in range(n)], pa.int64()),
        "user_id": pa.array([i % 10 for i in range(n)], pa.int64()),
        "price": pa.array([0.5] * n, pa.float32()),
    }
    cols.update(extra)
    return pa.table(cols)


def errors_of(path, days=None) -> list[DatasetError]:
    with pytest.raises(DatasetError) as ei:
        validate_dataset(path, days=days)
    return getattr(ei.value, "errors", [ei.value])


def test_day_bounds():
    assert day_bounds(DAY) == (T0, T0 + 86400)
    assert day_bounds("2026-02-30") is None and day_bounds("2026-13-45") is None


@pytest.mark.parametrize("offset_days", [5, -10])
def test_timestamps_outside_the_day_folder_are_refused(tmp_path, offset_days):
    SCHEMA.write(tmp_path)
    shift = offset_days * 86400
    write_day(tmp_path, DAY, table(ts=[T0 + shift + i for i in range(4)]))
    errs = errors_of(tmp_path)
    assert len(errs) == 1, [str(e) for e in errs]
    e = errs[0]
    assert e.column == "ts" and e.file.endswith("part-00000.parquet")
    assert "4 timestamp(s) outside the folder's day 2026-01-01" in e.rule


def test_last_second_of_day_in_and_midnight_next_day_out(tmp_path):
    SCHEMA.write(tmp_path)
    write_day(tmp_path, DAY, table(ts=[T0, T0 + 1, T0 + 2, T0 + 86399]))
    validate_dataset(tmp_path)
    write_day(tmp_path, DAY, table(ts=[T0, T0 + 1, T0 + 2, T0 + 86400]))
    assert "1 timestamp(s) outside" in errors_of(tmp_path)[0].rule


@pytest.mark.parametrize("folder", ["2026-02-30", "2026-13-45"])
def test_impossible_day_folder_dates_are_refused(tmp_path, folder):
    SCHEMA.write(tmp_path)
    write_day(tmp_path, DAY, table())
    write_day(tmp_path, folder, table())
    errs = errors_of(tmp_path)
    hit = [e for e in errs if f"day={folder}" in e.file]
    assert hit and "not a calendar date" in hit[0].rule, [str(e) for e in errs]
    validate_dataset(tmp_path, days=[DAY])  # the good day alone still passes


def test_badly_named_day_folder_is_refused(tmp_path):
    SCHEMA.write(tmp_path)
    write_day(tmp_path, DAY, table())
    (tmp_path / "day=2026-1-2").mkdir()
    errs = errors_of(tmp_path)
    assert any("day=2026-1-2" in e.file and "day=YYYY-MM-DD" in e.rule for e in errs)


def test_a_day_with_zero_rows_is_refused(tmp_path):
    SCHEMA.write(tmp_path)
    write_day(tmp_path, DAY, table().slice(0, 0))
    errs = errors_of(tmp_path)
    assert len(errs) == 1 and "0 rows" in errs[0].rule and "day=2026-01-01" in errs[0].file


def test_vocab_zero_is_reported_by_the_fields_name(tmp_path):
    (tmp_path / "schema.yaml").write_text(
        "name: x\ntimestamp: ts\nlabels: [click]\n"
        "sparse:\n  - {name: user_id, vocab: 10}\n  - {name: item_id, vocab: 0}\n")
    with pytest.raises(DatasetError) as ei:
        load_schema(tmp_path)
    assert ei.value.column == "sparse[item_id].vocab"
    assert "sparse.1" not in str(ei.value) and "greater than or equal to 1" in ei.value.rule


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_schema_yaml_gets_a_readable_message(tmp_path, text):
    (tmp_path / "schema.yaml").write_text(text)
    with pytest.raises(DatasetError) as ei:
        load_schema(tmp_path)
    assert "schema.yaml is empty" in str(ei.value)
    assert "valid dictionary" not in str(ei.value)


def test_schema_yaml_that_is_a_list_is_refused_readably(tmp_path):
    (tmp_path / "schema.yaml").write_text("- a\n- b\n")
    with pytest.raises(DatasetError, match="must be a mapping of keys"):
        load_schema(tmp_path)


def test_columns_not_in_the_schema_are_allowed_and_listed_once(tmp_path):
    SCHEMA.write(tmp_path)
    extra = dict(debug_blob=pa.array(["x"] * 4), score=pa.array([1.0] * 4))
    write_day(tmp_path, DAY, table(**extra), rows_per_part=2)
    write_day(tmp_path, "2026-01-02", table(ts=[T0 + 86400 + i for i in range(4)],
                                            **extra).set_column(1, "rid", pa.array(
                                                [10, 11, 12, 13], pa.int64())))
    report = validate_dataset(tmp_path)
    assert sorted(report.ignored) == ["debug_blob", "score"]
    assert report.rows == 8 and report.days == [DAY, "2026-01-02"]
    res = CliRunner().invoke(_data_group(), ["validate", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert res.output.count("ignored 2 column(s) not in schema.yaml: debug_blob, score") == 1


def test_column_named_only_under_fm_only_is_a_dense_float(tmp_path):
    (tmp_path / "schema.yaml").write_text(
        "name: x\ntimestamp: ts\nrequest_id: rid\nlabels: [click]\n"
        "sparse:\n  - {name: user_id, vocab: 10}\ndense: [price]\nfm_only: [xsvc_ctr]\n")
    s = load_schema(tmp_path)
    assert "xsvc_ctr" in s.dense and s.fm_only == ["xsvc_ctr"]
    assert "xsvc_ctr" not in s.fields_for("vm").dense
    write_day(tmp_path, DAY, table(xsvc_ctr=pa.array([0.1, 0.2, 0.3, 0.4], pa.float32())))
    validate_dataset(tmp_path)
    assert read_day(tmp_path, DAY, columns=s.columns).column("xsvc_ctr").type == pa.float32()
    write_day(tmp_path, DAY, table(xsvc_ctr=pa.array([1, 2, 3, 4], pa.int64())))
    errs = errors_of(tmp_path)
    assert errs[0].column == "xsvc_ctr" and "float" in errs[0].rule


def test_fm_only_naming_a_label_is_still_refused(tmp_path):
    (tmp_path / "schema.yaml").write_text(
        "name: x\ntimestamp: ts\nlabels: [click]\nfm_only: [click]\n")
    with pytest.raises(DatasetError, match="fm_only 'click'"):
        load_schema(tmp_path)


def _data_group():
    from exfm.commands.data import data

    return data


def test_dense_columns_in_raw_units_are_named_as_read_rescaled(tmp_path):
    """Not an error: a note naming each dense column beyond +-16 (models read it log-scaled)."""
    SCHEMA.write(tmp_path)
    write_day(tmp_path, DAY, table(price=pa.array([0.5, 1999.0, -3.0, 12.0], pa.float32())),
              rows_per_part=2)
    report = validate_dataset(tmp_path)
    assert report.dense_max == {"price": 1999.0}
    res = CliRunner().invoke(_data_group(), ["validate", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "note: 1 dense column(s) reach beyond +-16" in res.output
    assert "price (max |x| 1999)" in res.output
    write_day(tmp_path, DAY, table(price=pa.array([0.5, 15.0, -16.0, 1.0], pa.float32())))
    assert validate_dataset(tmp_path).rescaled_line() is None  # on a unit-ish scale: no note
