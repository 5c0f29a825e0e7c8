"""DayStream (a day read chunk by chunk) and the streamed VM trainer / evaluation: the same rows,
batches, weights and figures as one call on the whole day, with memory for one chunk."""

from __future__ import annotations

import copy

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from exfm.data.io import thin
from exfm.data.stream import DayStream, rechunk


def _mixed(table: pa.Table) -> pa.Table:
    """``table`` with its rows spread over three domains."""
    doms = pa.array([f"d{i % 3}" for i in range(table.num_rows)])
    return table.set_column(table.column_names.index("domain"), "domain", doms)


def _parts(tmp_path, table: pa.Table, rows_per_part: int, row_group: int) -> list[str]:
    paths = []
    for i in range(0, table.num_rows, rows_per_part):
        p = tmp_path / f"part-{i:06d}.parquet"
        pq.write_table(table.slice(i, rows_per_part), p, row_group_size=row_group)
        paths.append(str(p))
    return paths


@pytest.mark.parametrize("per_part,row_group,chunk", [(100, 30, 64), (256, 256, 50),
                                                      (37, 5, 1000), (60, 7, 1)])
def test_chunks_are_the_filtered_rows_in_order(tmp_path, tiny_table, per_part, row_group, chunk):
    tiny_table = _mixed(tiny_table)
    paths = _parts(tmp_path, tiny_table, per_part, row_group)
    expr = pc.field("domain") == "d1"
    want = tiny_table.filter(expr)
    s = DayStream(paths, filter=expr, columns=["ts", "click"])
    got = list(s.chunks(chunk))
    n = want.num_rows
    assert 0 < n < tiny_table.num_rows
    assert [c.num_rows for c in got] == [chunk] * (n // chunk) + ([n % chunk] if n % chunk else [])
    assert pa.concat_tables(got).equals(want.select(["ts", "click"]))
    assert s.count() == n
    assert s.head(5).equals(want.select(["ts", "click"]).slice(0, 5))


@pytest.mark.parametrize("max_rows", [None, 10, 33, 1000])
def test_thin_keeps_the_rows_io_thin_keeps(tmp_path, tiny_table, max_rows):
    paths = _parts(tmp_path, tiny_table, 70, 9)
    assert DayStream(paths).thin(max_rows).equals(thin(tiny_table, max_rows))


def test_an_empty_slice_and_a_bad_file(tmp_path, tiny_table):
    paths = _parts(tmp_path, tiny_table, 128, 64)
    none = DayStream(paths, filter=pc.field("domain") == "nowhere")
    assert none.count() == 0 and list(none.chunks(10)) == []
    assert none.head(3).num_rows == 0 and none.head(3).schema == tiny_table.schema
    (tmp_path / "part-000128.parquet").write_bytes(b"not parquet")
    seen = []
    with pytest.raises(ValueError, match="part-000128"):
        list(DayStream(paths, on_error=lambda p, e: seen.append(p) or (_ for _ in ()).throw(
            ValueError(f"{p}: {e}"))).chunks(64))
    assert seen == [paths[1]]
    with pytest.raises(ValueError):
        rechunk([], 0).__next__()


def test_train_vm_stream_matches_one_call_on_the_whole_day(tiny_schema, tiny_cfg, tiny_table,
                                                            tmp_path):
    """Chunks of 100 rows (not a multiple of the batch) are cut down to a multiple of it, so the
    streamed VM (AH+SA: the Student Adapter carried in the state) gets the very batches, and so
    the very weights, of one call on the whole day."""
    from exfm.config import VMConfig
    from exfm.models import build_vm
    from exfm.train.trainer import (evaluate, evaluate_chunks, evaluate_many, train_vm_day,
                                    train_vm_stream)

    vm = VMConfig(name="s", model="deepfam", task="click", mode="ah_sa", control=False)
    table = tiny_table
    torch.manual_seed(0)
    whole = build_vm(vm, tiny_schema, tiny_cfg)
    streamed = copy.deepcopy(whole)
    res = train_vm_day(whole, table, tiny_schema, vm, tiny_cfg)
    day = DayStream(_parts(tmp_path, table, 90, 40))
    res_s = train_vm_stream(streamed, day, tiny_schema, vm, tiny_cfg, chunk_rows=100)
    assert res.metrics["batch_size"] < 100  # so the chunk really is rounded, not whole
    assert (res_s.steps, res_s.rows_seen) == (res.steps, table.num_rows)
    for (name, a), b in zip(whole.state_dict().items(), streamed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name
    for k, v in res.state["sa"].items():
        assert torch.allclose(v, res_s.state["sa"][k], atol=1e-5), k
    ev = evaluate(whole, table, task="click")
    ev_s = evaluate_chunks(streamed, day.chunks(37), task="click")
    assert ev_s["rows"] == ev["rows"] == table.num_rows
    for k in ("auc", "logloss", "ne", "calibration"):
        assert ev_s[k] == pytest.approx(ev[k], abs=1e-5), k
    other = build_vm(vm, tiny_schema, tiny_cfg)  # an untrained model scores differently
    both = evaluate_many([streamed, other], day.chunks(50), task="click")
    assert both[0]["auc"] == pytest.approx(ev["auc"], abs=1e-5)
    assert both[1]["auc"] != pytest.approx(ev["auc"], abs=1e-3)


def test_train_vm_stream_refuses_an_empty_day(tiny_schema, tiny_cfg, tiny_table, tmp_path):
    from exfm.config import VMConfig
    from exfm.models import build_vm
    from exfm.train.trainer import train_vm_stream

    vm = VMConfig(name="e", model="fam", task="click", mode="none", control=False)
    day = DayStream(_parts(tmp_path, tiny_table, 256, 256), filter=pc.field("domain") == "zz")
    with pytest.raises(ValueError, match="VM 'e': no rows"):
        train_vm_stream(build_vm(vm, tiny_schema, tiny_cfg), day, tiny_schema, vm, tiny_cfg)
