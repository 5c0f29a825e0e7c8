"""``exfm demo --break-day N``'s corruption: the broken day is still in the dataset format (``land``
accepts it) but the raw gate refuses it with a readable rule; the original day is kept and a second
break starts from it. The same broken day through the real scheduler: tests/integration/
test_dag_failures.py."""

import pyarrow.compute as pc

from exfm.commands.demo import BACKUP_DIR, break_day
from exfm.config import GeneratorConfig
from exfm.config.validation import ValidationConfig
from exfm.data.generator import generate
from exfm.data.io import read_day
from exfm.data.schema import load_schema
from exfm.data.validate import validate_dataset
from exfm.validation.gates import check_raw

D1, D2 = "2026-01-01", "2026-01-02"


def test_a_broken_day_passes_the_format_and_fails_the_raw_gate(tmp_path):
    data = tmp_path / "data"
    generate(GeneratorConfig(days=2, rows_per_day=400, seed=3), data)
    schema = load_schema(data)
    label = schema.labels[0]
    before, other = read_day(data, D2), read_day(data, D1)
    positives = int(pc.sum(before.column(label)).as_py())
    assert positives > 0

    line = break_day(data, D2)
    assert f"every '{label}' label set to 0 ({positives} of {before.num_rows}" in line
    after = read_day(data, D2)
    assert after.num_rows == before.num_rows and int(pc.sum(after.column(label)).as_py()) == 0
    assert after.drop_columns([label]).equals(before.drop_columns([label]))  # only the label
    assert read_day(data / BACKUP_DIR, D2).equals(before)  # the original day, kept
    validate_dataset(data, days=[D2])  # land accepts it: the format is intact

    res = check_raw(after, schema, D2, [], ValidationConfig(), tmp_path / "gx")
    assert not res.ok
    [f] = [f for f in res.failures if f.column == label]
    assert f.rule == "label rate within configured bounds"
    assert f"raw gate failed for day {D2}" in res.reason and label in res.reason
    assert check_raw(before, schema, D2, [], ValidationConfig(), tmp_path / "gx").ok

    assert break_day(data, D2) == line  # from the kept original: the same break again
    assert read_day(data, D1).equals(other)  # the other day untouched


def test_the_next_demo_puts_a_broken_day_back(tmp_path):
    from exfm.commands.demo import restore_broken

    data = tmp_path / "data"
    generate(GeneratorConfig(days=2, rows_per_day=200, seed=3), data)
    before = read_day(data, D2)
    assert restore_broken(data) == []  # nothing broken
    break_day(data, D2)
    assert restore_broken(data) == [D2]
    assert read_day(data, D2).equals(before) and not (data / BACKUP_DIR).exists()
