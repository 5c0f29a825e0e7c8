"""TableTensors: columns converted once, batches sliced, sequences padded/truncated."""

import numpy as np
import pyarrow as pa
import torch

from exfm.data.batches import TableTensors, pad_sequences
from exfm.data.schema import DatasetSchema, SparseField


def test_pad_sequences_keeps_most_recent_and_pads():
    arr = pa.array([[1, 2, 3, 4, 5, 6], [], None, [7]], pa.list_(pa.int64()))
    out = pad_sequences(arr, 4)
    assert out.tolist() == [[3, 4, 5, 6], [-1] * 4, [-1] * 4, [7, -1, -1, -1]]


def test_pad_sequences_on_a_slice_and_chunks():
    arr = pa.array([[1], [2, 3], [4, 5, 6]], pa.list_(pa.int64())).slice(1)
    assert pad_sequences(arr, 2).tolist() == [[2, 3], [5, 6]]
    chunked = pa.chunked_array([pa.array([[1, 2]], pa.list_(pa.int64())),
                                pa.array([[3]], pa.list_(pa.int64()))])
    assert pad_sequences(chunked, 3).tolist() == [[1, 2, -1], [3, -1, -1]]


def test_batches_shapes_and_slices(tiny_schema, tiny_table):
    tt = TableTensors.from_table(tiny_table, tiny_schema)
    assert len(tt) == 256 and tt.num_batches(100) == 3
    batches = list(tt.batches(100))
    assert [b["sparse"].shape for b in batches] == [(100, 4), (100, 4), (56, 4)]
    b = batches[1]
    assert b["sparse"].dtype == torch.int64 and b["dense"].dtype == torch.float32
    assert b["dense"].shape == (100, 2) and b["labels"].shape == (100, 2)
    assert b["fm_pred"].shape == (100, 2) and b["seq"]["hist_item"].shape == (100, 4)
    np.testing.assert_array_equal(b["sparse"][:, 0].numpy(),
                                  tiny_table.column("user_id").to_numpy()[100:200])
    np.testing.assert_allclose(b["labels"][:, 1].numpy(),
                               tiny_table.column("like").to_numpy()[100:200])
    # slicing is a view of the day's tensors, not a copy
    assert b["sparse"].untyped_storage().data_ptr() == tt.sparse.untyped_storage().data_ptr()


def test_shuffle_covers_every_row_once(tiny_schema, tiny_table):
    tt = TableTensors.from_table(tiny_table, tiny_schema)
    g = torch.Generator().manual_seed(0)
    ts = torch.cat([b["sparse"][:, 0] for b in tt.batches(50, shuffle=True, generator=g)])
    assert sorted(ts.tolist()) == sorted(tt.sparse[:, 0].tolist())


def test_tasks_fm_pred_and_missing_optional_parts(tiny_table):
    schema = DatasetSchema(name="s", timestamp="ts", labels=["click"],
                           sparse=[SparseField(name="user_id", vocab=30)])
    tt = TableTensors.from_table(tiny_table.drop(["fm_pred_like"]), schema, tasks=["click"])
    b = next(tt.batches(8))
    assert b["dense"].shape == (8, 0) and b["seq"] == {}
    assert b["labels"].shape == (8, 1) and b["fm_pred"].shape == (8, 1)
    tt = TableTensors.from_table(tiny_table.drop(["fm_pred_click"]), schema, tasks=["click"])
    assert "fm_pred" not in next(tt.batches(8))
    tt = TableTensors.from_table(tiny_table.drop(["click"]), schema, tasks=["click"])
    assert "labels" not in next(tt.batches(8))


def test_nulls_become_padding_and_zero():
    schema = DatasetSchema(name="s", timestamp="ts", labels=["click"], dense=["x"],
                           sparse=[SparseField(name="u", vocab=3)])
    t = pa.table({"ts": [0, 1], "click": [0, 1], "u": pa.array([1, None], pa.int64()),
                  "x": pa.array([None, 2.0], pa.float64())})
    b = next(TableTensors.from_table(t, schema).batches(2))
    assert b["sparse"][:, 0].tolist() == [1, -1] and b["dense"][:, 0].tolist() == [0.0, 2.0]
