"""Single-file writes of Ray Datasets."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from amr.io import write_parquet_file


def test_a_column_null_in_one_block_and_typed_in_another_is_promoted(ray_local, tmp_path):
    blocks = [pa.table({"id": ["a"], "error": pa.array([None])}), pa.table({"id": ["b"], "error": ["boom"]})]
    write_parquet_file(ray_local.data.from_arrow(blocks), tmp_path / "out.parquet")
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.field("error").type == pa.string()
    assert sorted(table.to_pylist(), key=lambda r: r["id"]) == [{"id": "a", "error": None}, {"id": "b", "error": "boom"}]


def test_an_empty_dataset_is_an_error(ray_local, tmp_path):
    with pytest.raises(ValueError, match="nothing to write"):
        write_parquet_file(ray_local.data.from_items([{"x": 1}]).filter(lambda r: False), tmp_path / "e.parquet")
