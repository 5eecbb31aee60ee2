"""Writing Ray Datasets to single files, streamed through the driver one batch at a time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray


def write_parquet_file(ds: ray.data.Dataset, path: str | Path) -> pa.Table:
    """Execute ``ds`` once, writing one Parquet file atomically; return the written table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    writer = None
    try:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            if writer is None:
                writer = pq.ParquetWriter(tmp, batch.schema)
            writer.write_table(batch.cast(writer.schema) if batch.schema != writer.schema else batch)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ValueError(f"{path}: nothing to write, the dataset is empty")
    os.replace(tmp, path)
    return pq.read_table(path)


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
