"""Files on a local disk or in an object store (s3://, gs://, ...), through ``pyarrow.fs``: the one layer every
job reads and writes its files through.

``RunDir`` is a directory (a run directory, a job's output); the functions below take one file's or
directory's path or URI: ``exists``, ``is_file``, ``read_json``/``read_text``/``read_lines``/``open_input``,
``write_json``/``write_text``/``write_bytes``, ``find`` (files of a name under a directory), ``copy_to`` (a
local file or directory to a path or URI), ``remove``, ``local_dir`` (a local directory for a library that
writes local files, copied to a URI at the end), and the path arithmetic that works on both (``is_uri``,
``normalize``, ``join``, ``parent``, ``name``).

Every write is atomic: locally a hidden temporary file next to the target, then ``os.replace``; on an
object store one upload of the whole object, which becomes visible only once complete (and is deleted
when the write fails). Object-store credentials and endpoints come from the usual environment variables
(see docs/concepts.md, object storage).
"""

from __future__ import annotations

import errno
import hashlib
import io
import itertools
import json
import math
import os
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

if TYPE_CHECKING:
    import ray

T = TypeVar("T")

DONE = "_SUCCESS"
"""The marker a stage directory gets once all its files are written."""
ROWS_PER_FILE = 50_000
BATCH_ROWS = 4096
"""Rows per Parquet row group written, and per batch the driver reads: what the driver holds of a stage."""
JSONL_ROWS = 256
"""Rows turned into Python objects at a time when writing JSONL."""
PYTHON_ROWS = 1024
"""Rows (dicts) the driver gathers into one table when it makes a stage from Python objects."""
READ_BUFFER = 1 << 20
"""Bytes read at a time from a streamed text file."""


class RunDir:
    """Files under ``uri``: a local path (relative or absolute) or an object-store URI."""

    def __init__(self, uri: str):
        if "://" in uri:
            self.fs, root = pafs.FileSystem.from_uri(uri)
        else:
            self.fs, root = pafs.LocalFileSystem(), os.path.expanduser(uri)
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

    def read_lines(self, name: str) -> Iterator[str]:
        """A text file's lines, streamed (read a MiB at a time: one request each on an object store)."""
        with self._read(name, lambda path: self.fs.open_input_stream(path, buffer_size=READ_BUFFER)) as f:
            yield from io.TextIOWrapper(f, encoding="utf-8")

    def read_json(self, name: str) -> Any:
        return json.loads(self.read_text(name))

    def read_table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """A Parquet file, optionally only some columns."""
        return self._read(name, lambda path: pq.read_table(path, columns=columns, filesystem=self.fs))

    def _write(self, name: str, data: bytes | pa.Buffer) -> None:
        self._write_chunks(name, [data])

    def _write_chunks(self, name: str, chunks: Iterable[bytes | pa.Buffer]) -> None:
        with self._open_atomic(name) as f:
            for chunk in chunks:
                f.write(chunk)

    @contextmanager
    def _open_atomic(self, name: str) -> Iterator[BinaryIO]:
        """A writable file for ``name`` that appears whole once the block ends, or not at all (on an object
        store, an upload cut off by an error is deleted)."""
        path = self._fs_path(name)
        if not self.is_local:  # the object appears on close
            try:
                with self.fs.open_output_stream(path) as f:
                    yield f
            except BaseException:
                with suppress(OSError):
                    self.fs.delete_file(path)
                raise
            return
        parent, base = os.path.split(path)
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{base}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            with open(tmp, "wb") as f:
                yield f
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def write_text(self, name: str, text: str) -> None:
        self._write(name, text.encode())

    def write_bytes(self, name: str, data: bytes) -> None:
        self._write(name, data)

    def write_json(self, name: str, obj: Any) -> None:
        self.write_text(name, json.dumps(obj, indent=2) + "\n")

    def write_table(self, name: str, table: pa.Table) -> None:
        """One Parquet file."""
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, row_group_size=BATCH_ROWS)
        self._write(name, sink.getvalue())

    def write_rows(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Rows (dicts) as one Parquet file; there must be at least one (no rows, no schema)."""
        if not rows:
            raise ValueError(f"{self.path(name)}: no rows to write")
        self.write_table(name, pa.Table.from_pylist(rows))

    def write_dataset(self, name: str, ds: ray.data.Dataset) -> pa.Table:
        """Execute ``ds`` once and write it as one Parquet file through the driver; return the table
        (a command's single output file; pipeline stages use ``write_stage``).

        Batches are unified before writing: a column that is all null in one batch (no errors yet) and
        typed in another is promoted, not a failure.
        """
        batches = [b for b in ds.iter_batches(batch_format="pyarrow", batch_size=None) if b.num_rows]
        if not batches:
            raise ValueError(f"{self.path(name)}: nothing to write, the dataset is empty")
        table = pa.concat_tables(batches, promote_options="permissive")
        self.write_table(name, table)
        return table

    # Stage directories: ``name/`` holds Parquet files written by the workers that produced the rows,
    # then the ``_SUCCESS`` marker. Nothing of a stage passes through the driver.

    def stage_done(self, name: str) -> bool:
        return self.exists(f"{name}/{DONE}")

    def write_stage(self, name: str, ds: ray.data.Dataset) -> None:
        """Execute ``ds`` once into the stage directory ``name`` (a cut-off earlier write is removed
        first); the marker comes last."""
        self.begin_stage(name)
        self.append_stage(name, ds)

    def begin_stage(self, name: str) -> None:
        """The stage directory ``name``, empty (a cut-off earlier write is removed)."""
        self._clear(name)
        self.fs.create_dir(self._fs_path(name))

    def append_stage(self, name: str, ds: ray.data.Dataset) -> None:
        """Execute ``ds`` once into more files of the unfinished stage directory ``name``; then mark it done."""
        ds.write_parquet(
            self._fs_path(name), filesystem=self.fs, min_rows_per_file=ROWS_PER_FILE, row_group_size=BATCH_ROWS
        )
        self.mark_done(name)

    def write_part(self, name: str, table: pa.Table, key: str) -> str:
        """``table`` as the file ``part-<key>.parquet`` of the unfinished stage directory ``name`` (written again
        whole by a retried writer of the same key, never twice); the file's name."""
        file = f"part-{key}.parquet"
        self.write_table(f"{name}/{file}", table)
        return file

    def mark_done(self, name: str) -> None:
        """Mark the stage directory ``name`` done: all its files are written."""
        self._write(f"{name}/{DONE}", b"")

    def write_stage_tables(self, name: str, tables: Iterable[pa.Table], schema: pa.Schema | None = None) -> None:
        """Tables produced here as the stage directory ``name``: files of about ``ROWS_PER_FILE`` rows,
        each written a table at a time. Without ``schema`` a file takes its first table's, and a table
        whose columns do not fit it starts the next file (``open_stage`` unifies them)."""
        self.begin_stage(name)
        tables = iter(tables)
        table, number = next(tables, None), 0
        while table is not None:
            file_schema = schema or table.schema
            with (
                self._open_atomic(f"{name}/part-{number:05d}.parquet") as f,
                pq.ParquetWriter(f, file_schema) as writer,
            ):
                rows = 0
                while table is not None and rows < ROWS_PER_FILE:
                    if (fits := _cast(table, file_schema)) is None:
                        if schema is not None:
                            raise ValueError(
                                f"{self.path(name)}: columns {table.schema} do not fit the schema {schema}"
                            )
                        break
                    writer.write_table(fits, row_group_size=BATCH_ROWS)
                    rows += table.num_rows
                    table = next(tables, None)
            number += 1
        self.mark_done(name)

    def write_stage_rows(self, name: str, rows: Iterable[dict[str, Any]], schema: pa.Schema | None = None) -> None:
        """Rows (dicts) produced here as the stage directory ``name``, ``PYTHON_ROWS`` at a time; the first
        of them are made before anything is written (bad input fails before the stage is touched)."""
        batches = chunks(rows)
        first = next(batches, None)
        tables = (pa.Table.from_pylist(c, schema) for c in itertools.chain([first] if first else [], batches))
        self.write_stage_tables(name, tables, schema)

    def write_parquet_tables(self, name: str, tables: Iterable[pa.Table], schema: pa.Schema) -> None:
        """One Parquet file, written a table at a time."""
        with self._open_atomic(name) as f, pq.ParquetWriter(f, schema) as writer:
            for table in tables:
                writer.write_table(table.cast(schema), row_group_size=BATCH_ROWS)

    def copy_stage(self, name: str, source: RunDir, source_name: str | None = None) -> None:
        """``source``'s finished stage ``name`` (or ``source_name``) as this directory's ``name`` (its files copied
        as they are)."""
        self.begin_stage(name)
        for file in source._stage_files(source_name or name):
            pafs.copy_files(
                source._fs_path(file),
                self._fs_path(f"{name}/{file.rsplit('/', 1)[-1]}"),
                source_filesystem=source.fs,
                destination_filesystem=self.fs,
            )
        self.mark_done(name)

    def replace_stage(self, name: str, ds: ray.data.Dataset) -> None:
        """Replace the finished stage ``name`` with ``ds``, which may read it: ``ds`` is written beside it
        (``name.next``) first, then copied over it; ``finish_replace`` completes a replacement cut off in
        between."""
        self.write_stage(f"{name}.next", ds)
        self.finish_replace(name)

    def finish_replace(self, name: str) -> None:
        """Complete a replacement of ``name`` whose new rows are written (nothing when there is none)."""
        if self.stage_done(f"{name}.next"):
            self.copy_stage(name, self, f"{name}.next")
        self._clear(f"{name}.next")

    def _clear(self, name: str) -> None:
        if self.exists(name):
            self.fs.delete_dir(self._fs_path(name))

    def _stage_files(self, name: str) -> list[str]:
        """The Parquet files of a stage directory (or of any directory of Parquet files), relative, sorted;
        a Parquet file's own name."""
        if name.endswith(".parquet") and self.fs.get_file_info(self._fs_path(name)).is_file:
            return [name]
        infos = self.fs.get_file_info(pafs.FileSelector(self._fs_path(name), allow_not_found=True))
        root = len(self._root) + 1
        return sorted(
            i.path[root:]
            for i in infos
            if i.is_file and i.path.endswith(".parquet") and not i.base_name.startswith((".", "_"))
        )

    def open_stage(self, name: str) -> pds.Dataset | None:
        """The stage directory (or a Parquet file) as one Arrow dataset, ``None`` when it has no rows. Column
        types are unified across files: a column all null in one (no errors there) and typed in another reads
        as the type."""
        files = [self._fs_path(f) for f in self._stage_files(name)]
        if not files:
            return None
        schema = pa.unify_schemas([pq.read_schema(f, filesystem=self.fs) for f in files], promote_options="permissive")
        return pds.dataset(files, schema=schema, filesystem=self.fs, format="parquet")

    def scan_stage(
        self, name: str, columns: list[str] | None = None, filter: pds.Expression | None = None
    ) -> Iterator[pa.RecordBatch]:
        """The stage directory's rows as ``scan`` reads them; of ``columns``, those some file has."""
        dataset = self.open_stage(name)
        if dataset is not None:
            yield from scan(
                dataset, None if columns is None else [c for c in columns if c in dataset.schema.names], filter
            )

    def scan_columns(self, name: str, columns: list[str]) -> Iterator[dict[str, list[Any]]]:
        """A stage directory's ``columns`` as Python lists, a batch at a time (a column no file has reads as
        nulls)."""
        for batch in self.scan_stage(name, columns):
            names = batch.schema.names
            yield {c: batch.column(c).to_pylist() if c in names else [None] * batch.num_rows for c in columns}

    def read_stage(self, name: str) -> ray.data.Dataset:
        """The stage directory as a Ray Dataset, read by the workers (file order kept)."""
        import ray.data

        dataset = self.open_stage(name)
        if dataset is None:
            raise ValueError(f"{self.path(name)}: the stage has no rows")
        return ray.data.read_parquet(dataset.files, filesystem=self.fs, schema=dataset.schema)

    def write_jsonl(self, name: str, table: pa.Table) -> None:
        """One JSON object per row."""
        self.write_jsonl_batches(name, table.to_batches())

    def write_jsonl_batches(self, name: str, batches: Iterable[pa.RecordBatch | pa.Table]) -> None:
        """One JSON object per row, written a batch at a time."""
        self._write_chunks(
            name,
            (
                "".join(
                    json.dumps(row, ensure_ascii=False) + "\n" for row in b.slice(start, JSONL_ROWS).to_pylist()
                ).encode()
                for b in batches
                for start in range(0, b.num_rows, JSONL_ROWS)
            ),
        )

    def scratch(self) -> Path:
        """A local directory for files that must be local (a server log): the run directory itself when
        local, else a stable directory under the system's temporary directory."""
        if self.is_local:
            path = Path(self.uri)
        else:
            path = Path(tempfile.gettempdir()) / f"amr-run-{hashlib.sha256(self.uri.encode()).hexdigest()[:16]}"
        path.mkdir(parents=True, exist_ok=True)
        return path


# One file's or directory's path or URI.


def is_uri(path: str | os.PathLike) -> bool:
    """Whether ``path`` is in an object store (``s3://``, ``gs://``, ...): not a local path nor ``file://``."""
    return "://" in str(path) and not str(path).startswith("file://")


def normalize(path: str | os.PathLike) -> str:
    """One spelling per location, for comparing them: a URI without its trailing slash; a local path (or
    ``file://`` URI) absolute, ``~`` expanded and symbolic links resolved."""
    path = str(path)
    if is_uri(path):
        return path.rstrip("/")
    if path.startswith("file://"):
        path = pafs.FileSystem.from_uri(path)[1]
    return os.path.realpath(os.path.expanduser(path))


def join(base: str | os.PathLike, *parts: str) -> str:
    """``base``'s child: ``os.path.join`` for a local path (a relative one stays relative), ``/`` in a URI."""
    base = str(base)
    if is_uri(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(base, *parts)


def parent(path: str | os.PathLike) -> str:
    """The directory ``path`` is in (``.`` for a bare local name), as ``Path.parent`` for a URI too."""
    path = str(path)
    if is_uri(path):
        scheme, rest = path.split("://", 1)
        rest = rest.rstrip("/")
        return f"{scheme}://{rest.rsplit('/', 1)[0]}" if "/" in rest else path
    return os.path.dirname(path.rstrip(os.sep)) or "."


def name(path: str | os.PathLike) -> str:
    """The last part of ``path``: a file's or directory's name."""
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def _located(path: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path in it."""
    location = RunDir(str(path))
    return location.fs, location._root


def _info(path: str | os.PathLike) -> pafs.FileInfo:
    fs, located = _located(path)
    return fs.get_file_info(located)


def exists(path: str | os.PathLike) -> bool:
    """Whether a file or directory (on an object store: any object under the prefix) is at ``path``."""
    return _info(path).type != pafs.FileType.NotFound


def is_file(path: str | os.PathLike) -> bool:
    return _info(path).type == pafs.FileType.File


def _in_parent(path: str | os.PathLike) -> tuple[RunDir, str]:
    return RunDir(parent(path)), name(path)


def read_text(path: str | os.PathLike) -> str:
    return RunDir.read_text(*_in_parent(path))


def read_json(path: str | os.PathLike) -> Any:
    return RunDir.read_json(*_in_parent(path))


def read_lines(path: str | os.PathLike) -> Iterator[str]:
    """A text file's lines, streamed."""
    return RunDir.read_lines(*_in_parent(path))


def open_input(path: str | os.PathLike) -> pa.NativeFile:
    """A file open for random-access reading (a Parquet file's footer first): ``with open_input(p) as f``."""
    folder, child = _in_parent(path)
    return folder._read(child, folder.fs.open_input_file)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically (see the module's documentation), as every write here."""
    RunDir.write_text(*_in_parent(path), text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    RunDir.write_json(*_in_parent(path), obj)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    RunDir.write_bytes(*_in_parent(path), data)


def find(root: str | os.PathLike, filename: str) -> list[str]:
    """The files called ``filename`` anywhere under the directory ``root`` (or ``root`` itself when it is such
    a file), normalized, sorted; none when nothing is at ``root``. Locally, links to directories are not
    followed (a run's ``logs/ray/`` links to Ray's logs)."""
    root = normalize(root)
    if not is_uri(root):
        if os.path.isfile(root):
            return [root] if os.path.basename(root) == filename else []
        return sorted(os.path.join(folder, filename) for folder, _, files in os.walk(root) if filename in files)
    fs, located = _located(root)
    info = fs.get_file_info(located)
    if info.type != pafs.FileType.Directory:
        return [root] if info.type == pafs.FileType.File and info.base_name == filename else []
    below = fs.get_file_info(pafs.FileSelector(located, recursive=True, allow_not_found=True))
    return sorted(join(root, i.path[len(located) :]) for i in below if i.is_file and i.base_name == filename)


def copy_to(local: str | os.PathLike, destination: str | os.PathLike) -> None:
    """A local file, or a local directory's files (recursively), copied to ``destination`` (a path or URI; a
    directory's files keep their relative paths under it); nothing to do when it is ``local`` itself."""
    source = os.path.realpath(local)
    if normalize(destination) == source:
        return
    fs, located = _located(destination)
    if os.path.isdir(source):
        fs.create_dir(located)
    pafs.copy_files(source, located, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def remove(path: str | os.PathLike) -> None:
    """The file or directory (with everything under it) at ``path``; nothing when there is none."""
    fs, located = _located(path)
    kind = fs.get_file_info(located).type
    if kind == pafs.FileType.Directory:
        fs.delete_dir(located)
    elif kind != pafs.FileType.NotFound:
        fs.delete_file(located)


@contextmanager
def local_dir(destination: str | os.PathLike) -> Iterator[Path]:
    """A local directory for files a library writes only locally (evalplus): ``destination`` itself when it is
    local (created), else a temporary directory whose files are copied to ``destination`` when the block ends
    without an error, then removed."""
    if not is_uri(destination):
        folder = Path(RunDir(str(destination)).uri)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="amr-") as folder:
        yield Path(folder)
        copy_to(folder, destination)


def chunks(items: Iterable[T], size: int | None = None) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (default ``PYTHON_ROWS``)."""
    items = iter(items)
    return iter(lambda: list(itertools.islice(items, size or PYTHON_ROWS)), [])


def scan(
    dataset: pds.Dataset, columns: list[str] | None = None, filter: pds.Expression | None = None
) -> Iterator[pa.RecordBatch]:
    """Rows as the driver reads them: ``BATCH_ROWS`` at a time in the dataset's (unified) schema, a file at
    a time, the row groups whose statistics may match ``filter`` (then the filter is applied to the rows).

    Read with ``ParquetFile``, its freed memory handed back after each batch: pyarrow's dataset scanner grows
    the driver's memory with the rows it has read (JSON lines of 10k and 100k rows: +12 and +35 MiB
    there, +26 and +30 here; bench/scale.py measures the job)."""
    schema = dataset.schema if columns is None else pa.schema([dataset.schema.field(c) for c in columns])
    read = schema if filter is None else dataset.schema  # the filter may name any column
    for fragment in dataset.get_fragments():
        groups = (
            None
            if filter is None
            else [
                g.id for piece in fragment.split_by_row_group(filter, schema=dataset.schema) for g in piece.row_groups
            ]
        )
        with dataset.filesystem.open_input_file(fragment.path) as f:
            file = pq.ParquetFile(f, pre_buffer=False)
            present = [n for n in read.names if n in file.schema_arrow.names]
            for batch in file.iter_batches(BATCH_ROWS, row_groups=groups, columns=present, use_threads=False):
                table = _conformed(pa.Table.from_batches([batch]), read)
                if filter is not None:
                    table = table.filter(filter).select(schema.names)
                yield from table.to_batches()
                pa.default_memory_pool().release_unused()


class Slices:
    """A dataset's rows by ranges of an integer column (a stage's ``index``): each range reads only the row groups
    whose statistics overlap it. The row groups' ranges are read once, one footer per file, so that reading a stage
    a slice at a time costs what the slices hold, not a pass over every file's footer per slice."""

    def __init__(self, dataset: pds.Dataset, column: str):
        self.dataset, self.column = dataset, column
        self.groups: list[tuple[float, float, str, int]] = []
        for fragment in dataset.get_fragments():
            meta = fragment.metadata
            leaf = next((k for k in range(meta.num_columns) if meta.schema.column(k).path == column), None)
            for group in range(meta.num_row_groups):
                stats = None if leaf is None else meta.row_group(group).column(leaf).statistics
                low, high = (stats.min, stats.max) if stats is not None and stats.has_min_max else (-math.inf, math.inf)
                self.groups.append((low, high, fragment.path, group))

    def read(self, low: int, high: int) -> Iterator[pa.RecordBatch]:
        """The rows whose ``column`` is in ``[low, high)``, in the dataset's schema."""
        wanted: dict[str, list[int]] = {}
        for first, last, path, group in self.groups:
            if first < high and last >= low:
                wanted.setdefault(path, []).append(group)
        schema, value = self.dataset.schema, pc.field(self.column)
        for path, groups in wanted.items():
            with self.dataset.filesystem.open_input_file(path) as f:
                file = pq.ParquetFile(f, pre_buffer=False)
                present = [n for n in schema.names if n in file.schema_arrow.names]
                for batch in file.iter_batches(BATCH_ROWS, row_groups=groups, columns=present, use_threads=False):
                    table = _conformed(pa.Table.from_batches([batch]), schema).filter((value >= low) & (value < high))
                    yield from table.to_batches()


def _conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``: its columns cast, the ones it lacks null."""
    return pa.table(
        [
            table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
            for f in schema
        ],
        schema=schema,
    )


def _cast(table: pa.Table, schema: pa.Schema) -> pa.Table | None:
    """``table`` as ``schema``, or None where its columns do not fit."""
    if table.schema.names != schema.names:
        return None
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
