"""The functional module database: verified functions in one LanceDB table.

A module is a function that passed its test in the sandbox, stored with that test, an embedding of
its spec (cosine), and provenance (run, instruction id, stage). Rows are keyed by a hash of the
function's normalised source, and inserts are merge-inserts on that key, so a retried insert never
duplicates. LanceDB 0.40 duplicates rows when two writers merge-insert the same new keys at once:
callers keep one writer per commit (the driver commits each wave). Searches go through an in-memory vector index
built from the table (``amr.ann.VectorIndex``: rows only ever appended, a version is a range of row offsets). Reads
can pin a table version, and a tag keeps a pinned version readable while the table's upkeep (``amr.ann.refresh``: its
compaction, scalar indices, old versions removed) runs every few commits.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from amr import ann
from amr.ann import Upkeep, VectorIndex
from amr.parsing import normalized_source

# lancedb warns at every fork once imported; the job's forks are subprocess fork+exec (the vLLM
# server, sandbox servers), in which nothing touches lancedb
warnings.filterwarnings("ignore", message="lancedb fork support is experimental", category=RuntimeWarning)

TEXT_FIELDS = ("key", "name", "signature", "description", "code", "test", "run", "instruction_id", "stage", "verdict")
RESULT_FIELDS = tuple(f for f in TEXT_FIELDS if f != "key")


def schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            *(pa.field(name, pa.string(), nullable=False) for name in TEXT_FIELDS),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ]
    )


def spec_text(signature: str, description: str) -> str:
    """What is embedded for a function, as a query (a spec) and as a module: signature and description."""
    return f"{signature}\n{description}".strip()


def module_key(code: str) -> str:
    """Content hash of a function: formatting and comments do not change it."""
    return hashlib.sha256(normalized_source(code).encode()).hexdigest()


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def tag_name(text: str) -> str:
    """``text`` as a version tag's name (letters, digits, '.', '-', '_')."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", text)


UPKEEP = Upkeep(scalar=("instruction_id",))
"""The IVF index and a B-tree on ``instruction_id`` (a wave counts its inserts by it) from 50,000 rows, a refresh every
8 commits."""


class ModuleDBError(ValueError):
    """The table cannot be used as asked (wrong embedding size, missing fields)."""


class ModuleDB:
    """One LanceDB table of verified functions at ``uri`` (a directory or an object-store URI)."""

    def __init__(
        self,
        uri: str,
        dim: int,
        table: str = "modules",
        before_write: Callable[[], None] | None = None,
        upkeep: Upkeep = UPKEEP,
    ):
        """``before_write``: called before every insert (a writer's lease check, ``amr.lease``); ``upkeep``: when the
        vector index is trained and the writer's ``upkeep`` calls index and compact the table."""
        self.uri, self.name, self.dim, self.before_write, self.upkeeping = uri, table, dim, before_write, upkeep
        self.commits = 0  # since the last upkeep
        self.db = lancedb.connect(uri)
        try:
            self.table = self.db.open_table(table)
        except ValueError:  # not found
            self.table = self.db.create_table(table, schema=schema(dim), exist_ok=True)
        have = self.table.schema.field("vector").type
        if have != pa.list_(pa.float32(), dim):
            raise ModuleDBError(
                f"{uri}/{table}: vectors are {have}, the embedder makes {dim}-d vectors; "
                f"use another table or the embedding model the table was built with"
            )
        self.vectors = VectorIndex(dim, upkeep.min_rows)
        self._lance = self.table.to_lance()  # read-only: versions are checked out from it

    @classmethod
    def open(cls, uri: str, table: str = "modules") -> ModuleDB:
        """An existing table, its vector size read from its schema."""
        try:
            existing = lancedb.connect(uri).open_table(table)
        except ValueError:
            raise ModuleDBError(f"{uri}: no module table {table!r}") from None
        return cls(uri, existing.schema.field("vector").type.list_size, table)

    def export(self, path: str | Path) -> int:
        """Write the latest version to Parquet or JSON lines (by suffix), vectors included."""
        data = self.at().to_arrow()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".parquet":
            pq.write_table(data, path)
        elif path.suffix == ".jsonl":
            with path.open("w") as f:
                for row in data.to_pylist():
                    f.write(json.dumps({**row, "created_at": row["created_at"].isoformat()}) + "\n")
        else:
            raise ModuleDBError(f"{path}: export writes .parquet or .jsonl")
        return data.num_rows

    @property
    def version(self) -> int:
        self.table.checkout_latest()
        return self.table.version

    def count(self, **equal: str | list[str]) -> int:
        """Rows of the latest version, optionally only those whose fields equal (or are in) values."""
        self.table.checkout_latest()
        clauses = [
            f"{field} IN ({', '.join(map(_quote, value))})" if isinstance(value, list) else f"{field} = {_quote(value)}"
            for field, value in equal.items()
        ]
        return self.table.count_rows(" AND ".join(clauses) or None)

    def at(self, version: int | None = None):
        """A read handle on ``version`` (None: the latest)."""
        handle = self.db.open_table(self.name)
        if version is not None:
            handle.checkout(version)
        return handle

    def dataset(self, version: int | None = None):
        """The table's Lance dataset at ``version`` (None: the latest), for reads."""
        return self._lance.checkout_version(self._lance.latest_version if version is None else version)

    def index(self) -> dict[str, Any] | None:
        """The vector index brought up to the latest version (built from the table on a first call): what was done,
        or None when it was up to date."""
        return self.vectors.sync(self.dataset())

    def search(self, vectors: np.ndarray, k: int = 1, version: int | None = None) -> list[list[dict[str, Any]]]:
        """The ``k`` most similar modules to each vector, best first, each with its ``similarity`` (cosine)."""
        dataset = self.dataset(version)
        ids, scores = self.vectors.search(dataset, np.asarray(vectors, dtype=np.float32), k)
        found = np.unique(ids[ids >= 0])
        rows = (
            dict(zip(found.tolist(), dataset.take(found, columns=list(RESULT_FIELDS)).to_pylist()))
            if len(found)
            else {}
        )
        return [
            [{**rows[i], "similarity": float(s)} for i, s in zip(hit_ids.tolist(), hit_scores.tolist()) if i >= 0]
            for hit_ids, hit_scores in zip(ids, scores)
        ]

    def max_similarity(self, vectors: np.ndarray, version: int | None = None) -> list[float]:
        """Cosine similarity of each vector to its nearest module (-1 when the table is empty)."""
        return [hits[0]["similarity"] if hits else -1.0 for hits in self.search(vectors, 1, version)]

    def max_similarity_added(self, vectors: np.ndarray, since: int, until: int) -> list[float]:
        """Cosine similarity of each vector to its nearest module among those version ``until`` added after version
        ``since`` (-1 where it added none): exact, over the row offsets between the two versions' row counts."""
        dataset = self.dataset(until)
        return ann.max_cosine(dataset, vectors, self.dataset(since).count_rows(), dataset.count_rows()).tolist()

    def insert(self, modules: Iterable[dict[str, Any]]) -> int:
        """Merge-insert modules (``TEXT_FIELDS`` but ``key``, plus ``vector``); returns rows added."""
        now = datetime.now(UTC)
        rows, seen = [], set()
        for module in modules:
            missing = [f for f in (*RESULT_FIELDS, "vector") if module.get(f) is None]
            if missing:
                raise ModuleDBError(f"module {module.get('name')!r}: missing {', '.join(missing)}")
            key = module_key(module["code"])
            if key not in seen:
                seen.add(key)
                rows.append(
                    {
                        **{f: module[f] for f in RESULT_FIELDS},
                        "key": key,
                        "vector": np.asarray(module["vector"], dtype=np.float32),
                        "created_at": now,
                    }
                )
        if not rows:
            return 0
        if self.before_write:
            self.before_write()
        data = pa.Table.from_pylist(rows, schema=schema(self.dim))
        result = self.table.merge_insert("key").when_not_matched_insert_all().execute(data)
        self.commits += 1
        self.index()  # the writer's index follows its inserts (or is trained anew, as the table grows)
        return int(result.num_inserted_rows)

    def upkeep(self, keep_from: int | None, force: bool = False) -> dict[str, Any] | None:
        """The writer's call after a commit: every ``upkeep.every`` commits (or when ``force``), the indices
        refreshed, new fragments compacted, and the versions before ``keep_from`` that no tag pins removed
        (``amr.ann.refresh``). ``keep_from``: the oldest version a reader that has not pinned yet may still read
        (None: no version is removed). What was done, or None when it was not yet time."""
        if not force and self.commits < self.upkeeping.every:
            return None
        if self.before_write:
            self.before_write()
        self.table.checkout_latest()
        done = ann.refresh(self.table, self.upkeeping, keep_from)
        self.commits = 0
        return done

    def pin(self, name: str, version: int) -> None:
        """Keep ``version`` readable under the tag ``name`` (made a valid tag name) until ``unpin``."""
        name = tag_name(name)
        if name in self.table.tags.list():
            self.table.tags.update(name, version)
        else:
            self.table.tags.create(name, version)

    def unpin(self, name: str) -> None:
        """Drop the tag ``name``: its version goes with the next upkeep unless a later reader needs it."""
        name = tag_name(name)
        if name in self.table.tags.list():
            self.table.tags.delete(name)

    def stats(self) -> dict[str, Any]:
        rows = self.at().to_arrow().select(["stage", "run"]).to_pylist()
        by_stage: dict[str, int] = {}
        for row in rows:
            by_stage[row["stage"]] = by_stage.get(row["stage"], 0) + 1
        return {
            "uri": self.uri,
            "table": self.name,
            "rows": len(rows),
            "version": self.version,
            "dim": self.dim,
            "by_stage": by_stage,
            "indexed": bool(self.table.list_indices()),
        }
