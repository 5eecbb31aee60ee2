"""Single-file writes by path, kept for callers not yet on ``amr.storage.RunDir``, which does the work."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from amr.storage import RunDir

if TYPE_CHECKING:
    import ray


def _split(path: str | Path) -> tuple[RunDir, str]:
    parent, name = os.path.split(str(path))
    return RunDir(parent or "."), name


def write_parquet_file(ds: ray.data.Dataset, path: str | Path) -> pa.Table:
    """Execute ``ds`` once and write one Parquet file atomically; return the written table."""
    run_dir, name = _split(path)
    return run_dir.write_dataset(name, ds)


def write_jsonl(table: pa.Table, path: str | Path) -> None:
    run_dir, name = _split(path)
    run_dir.write_jsonl(name, table)


def write_rows(rows: list[dict], path: str | Path) -> None:
    """Write rows (dicts) to one Parquet file atomically (no rows: an empty file without columns)."""
    run_dir, name = _split(path)
    run_dir.write_table(name, pa.Table.from_pylist(rows))
