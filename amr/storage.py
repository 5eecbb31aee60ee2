"""A run directory on a local disk or an object store (s3://, gs://, ...), through ``pyarrow.fs``.

Every write is atomic: locally a hidden temporary file next to the target, then ``os.replace``; on an
object store one upload of the whole object, which becomes visible only once complete. Object-store
credentials and endpoints come from the usual environment variables (see the README).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

if TYPE_CHECKING:
    import ray

T = TypeVar("T")


class RunDir:
    """Files under ``uri``: a local path (relative or absolute) or an object-store URI."""

    def __init__(self, uri: str):
        if "://" in uri:
            self.fs, root = pafs.FileSystem.from_uri(uri)
        else:
            self.fs, root = pafs.LocalFileSystem(), uri
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)
        self._root = os.path.abspath(root) if self.is_local else root.rstrip("/")
        self.uri = self._root if self.is_local else uri.rstrip("/")

    def __repr__(self) -> str:
        return f"RunDir({self.uri!r})"

    def path(self, *parts: str) -> str:
        """The URI (or absolute path) of a child, for display and for libraries that take URIs."""
        return "/".join([self.uri, *(p.strip("/") for p in parts)])

    def _fs_path(self, name: str) -> str:
        return f"{self._root}/{name.strip('/')}"

    def exists(self, name: str) -> bool:
        return self.fs.get_file_info(self._fs_path(name)).type != pafs.FileType.NotFound

    def _read(self, name: str, reader: Callable[[str], T]) -> T:
        try:
            return reader(self._fs_path(name))
        except OSError:
            if not self.exists(name):
                raise FileNotFoundError(errno.ENOENT, "no such file", self.path(name)) from None
            raise

    def read_text(self, name: str) -> str:
        def read(path: str) -> str:
            with self.fs.open_input_stream(path) as f:
                return f.read().decode()

        return self._read(name, read)

    def read_json(self, name: str) -> Any:
        return json.loads(self.read_text(name))

    def read_table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """A Parquet file, optionally only some columns."""
        return self._read(name, lambda path: pq.read_table(path, columns=columns, filesystem=self.fs))

    def _write(self, name: str, data: bytes | pa.Buffer) -> None:
        path = self._fs_path(name)
        if not self.is_local:  # one upload: the object appears whole or not at all
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return
        parent, base = os.path.split(path)
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{base}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def write_text(self, name: str, text: str) -> None:
        self._write(name, text.encode())

    def write_json(self, name: str, obj: Any) -> None:
        self.write_text(name, json.dumps(obj, indent=2) + "\n")

    def write_table(self, name: str, table: pa.Table) -> None:
        """One Parquet file."""
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        self._write(name, sink.getvalue())

    def write_rows(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Rows (dicts) as one Parquet file; there must be at least one (no rows, no schema)."""
        if not rows:
            raise ValueError(f"{self.path(name)}: no rows to write")
        self.write_table(name, pa.Table.from_pylist(rows))

    def write_dataset(self, name: str, ds: ray.data.Dataset) -> pa.Table:
        """Execute ``ds`` once and write it as one Parquet file; return the written table.

        Batches are unified before writing: a column that is all null in one batch (no errors yet) and
        typed in another is promoted, not a failure.
        """
        batches = [b for b in ds.iter_batches(batch_format="pyarrow", batch_size=None) if b.num_rows]
        if not batches:
            raise ValueError(f"{self.path(name)}: nothing to write, the dataset is empty")
        table = pa.concat_tables(batches, promote_options="permissive")
        self.write_table(name, table)
        return table

    def write_jsonl(self, name: str, table: pa.Table) -> None:
        """One JSON object per row."""
        self.write_text(name, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in table.to_pylist()))

    def scratch(self) -> Path:
        """A local directory for files that must be local (a server log): the run directory itself when
        local, else a stable directory under the system's temporary directory."""
        if self.is_local:
            path = Path(self.uri)
        else:
            path = Path(tempfile.gettempdir()) / f"amr-run-{hashlib.sha256(self.uri.encode()).hexdigest()[:16]}"
        path.mkdir(parents=True, exist_ok=True)
        return path
