"""Writing Ray Datasets to single files, streamed through the driver one batch at a time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray


def write_parquet_file(ds: ray.data.Dataset, path: str | Path) -> pa.Table:
    """Execute ``ds`` once and write one Parquet file atomically; return the written table.

    Batches are unified before writing: a column that is all null in one batch (no errors yet) and
    typed in another is promoted, not a failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    batches = [b for b in ds.iter_batches(batch_format="pyarrow", batch_size=None) if b.num_rows]
    if not batches:
        raise ValueError(f"{path}: nothing to write, the dataset is empty")
    table = pa.concat_tables(batches, promote_options="permissive")
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return table


def write_jsonl(table: pa.Table, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        for row in table.to_pylist():
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_rows(rows: list[dict], path: str | Path) -> None:
    """Write rows (dicts) to one Parquet file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    os.replace(tmp, path)
