"""Vector search over a growing LanceDB table that costs the same at 10k and 1M rows, and the table's upkeep.

``VectorIndex`` is an in-memory index (faiss) of a table's vectors; the table stays the store of record, and the
index is built from it when a process first searches it and follows it from then on (``sync``). A row's id in the
index is its offset in the table: the table only grows, by appends, and compaction keeps the rows' order, so a table
version of ``n`` rows is the ids below ``n`` and a search at a pinned version is a search of that id range. Below
``min_rows`` rows the index is exact (the vectors as float32: one matrix product answers a batch of queries). From
``min_rows`` on it is an IVF index: partitions of about ``PARTITION_ROWS`` rows, each row's vector product-quantised
to 4 bits per ``PQ_DIMS`` dimensions (32 bytes a 1024-d row, scanned by faiss's fast-scan kernels) and quantised to a
byte a dimension (1 GiB a million 1024-d rows, kept for re-ranking). A search visits ``NPROBES`` partitions, the same
number of rows at 1M as at 50k, re-ranks the ``CANDIDATES`` best of the 4-bit codes per hit by the 8-bit vectors,
then ``REFINE`` per hit by the vectors the table stores, so that every similarity returned is the exact cosine. The
index is trained anew from the table each time the table has doubled since it was trained, so that partitions stay
``PARTITION_ROWS`` large.

Every ``every`` commits, the table's writer ``refresh``-es it: the fragments added since the last refresh are
compacted (indexed fragments are never rewritten, nor fragments of ``COMPACT_ROWS``), the ``scalar`` columns get
B-tree indices from ``min_rows`` rows on (an equality or IN filter reads the index, not the column), extended by the
rows added, and the versions before ``keep_from`` that no tag pins are removed: a pinned version stays readable.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import faiss
import lancedb
import numpy as np
from lancedb.index import BTree

log = logging.getLogger(__name__)

PARTITION_ROWS = 1024
"""Rows per IVF partition when the index is trained."""
TRAIN_ROWS = 64
"""Rows per partition that k-means trains on (a sample of the table)."""
QUANTIZER_ROWS = 16_384
"""Rows the quantiser's ranges are trained on, at least (the same sample)."""
PQ_DIMS = 16
"""Dimensions per 4-bit code of the product quantiser (at most: a divisor of the vectors' size)."""
NPROBES = 24
CANDIDATES = 512
REFINE = 4
"""Search settings: recall@1 against brute force in docs/benchmarks.md, "The module table at scale"."""
MAX_DELTAS = 8
"""Deltas of a scalar index before they are merged into one."""
READ_ROWS = 65_536
"""Rows read from the table at a time when the index is built."""
COMPACT_ROWS = 16_384
"""Fragments of this many rows are left as they are by compaction: a refresh rewrites at most that many old rows."""


@dataclass(frozen=True)
class Upkeep:
    """When and what to index: the IVF index and B-tree indices on ``scalar`` columns from ``min_rows`` rows, a
    refresh every ``every`` commits."""

    min_rows: int = 50_000
    every: int = 8
    scalar: tuple[str, ...] = ()


class VectorIndex:
    """The vectors of one table in an in-memory index (the module docstring); safe to share between threads."""

    def __init__(self, dim: int, min_rows: int):
        self.dim, self.min_rows = dim, min_rows
        self.index: faiss.Index = faiss.IndexFlatIP(dim)
        self.trained = 0
        """The rows the IVF index was trained on; 0 while the index is exact."""
        self.version = 0
        """The table version the index last grew to."""
        self._lock = threading.Lock()

    @property
    def rows(self) -> int:
        return int(self.index.ntotal)

    @property
    def partitions(self) -> int:
        """The IVF index's partitions; 0 while the index is exact."""
        return int(faiss.downcast_index(self.index.base_index).nlist) if self.trained else 0

    def sync(self, dataset) -> dict[str, Any] | None:
        """Follow the table: add the rows of ``dataset`` (a Lance dataset at any version) that the index lacks, or
        build the index anew where they take the table to ``min_rows`` or double it since the index was trained.
        What was done, with its seconds, or None when nothing was new."""
        with self._lock:
            rows = dataset.count_rows()
            if rows < self.rows and dataset.version >= self.version:
                raise ValueError(
                    f"{dataset.uri}: version {dataset.version} has {rows} rows, fewer than the {self.rows} indexed: "
                    "the table lost rows, and a row's offset is no longer its id"
                )
            if rows <= self.rows:
                return None
            self.version = dataset.version
            began = time.perf_counter()
            if rows >= self.min_rows and rows >= 2 * self.trained:
                self.index, self.trained = _trained(dataset, rows), rows
                done = {"trained": rows, "partitions": self.partitions}
            else:
                self.index.add(_normalized(_read(dataset, self.rows, rows)))
                done = {"added": rows}
            done["seconds"] = round(time.perf_counter() - began, 2)
            if "trained" in done:
                log.info("vector index of %s trained on %d rows in %.1f s", dataset.uri, rows, done["seconds"])
            return done

    def search(self, dataset, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` rows of ``dataset``'s version nearest to each query by cosine, best first: their ids (-1 where
        the version has fewer rows) and cosines, each an array of shape (queries, k)."""
        self.sync(dataset)
        rows = dataset.count_rows()
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        if not rows or not k or not len(queries):
            return ids, scores
        queries = _normalized(queries)
        with self._lock:
            trained, want = self.trained, min(rows, k * REFINE if self.trained else k)
            # a pinned version is the ids below its rows (added in order: each partition's are sorted)
            within = faiss.IDSelectorRange(0, rows, True) if rows < self.rows else None
            if trained:
                probed = faiss.SearchParametersIVF(sel=within, nprobe=NPROBES)
                params = faiss.IndexRefineSearchParameters(k_factor=CANDIDATES / REFINE, base_index_params=probed)
            else:
                params = faiss.SearchParameters(sel=within)
            found, candidates = self.index.search(queries, want, params=params)
        if trained:  # the candidates re-ranked by their stored vectors: exact cosines
            known = np.unique(candidates[candidates >= 0])
            stored = _normalized(_take(dataset, known))
            at = np.searchsorted(known, np.maximum(candidates, 0))
            found = np.where(candidates >= 0, np.einsum("qd,qcd->qc", queries, stored[at]), -np.inf)
            order = np.argsort(-found, axis=1, kind="stable")
            candidates, found = np.take_along_axis(candidates, order, 1), np.take_along_axis(found, order, 1)
        take = min(k, want)
        ids[:, :take], scores[:, :take] = candidates[:, :take], found[:, :take]
        scores[ids < 0] = -np.inf
        return ids, scores


def _trained(dataset, rows: int) -> faiss.IndexRefine:
    """An IVF index of ``rows`` rows of ``dataset`` (4-bit codes, 8-bit vectors to re-rank by), its partitions and
    quantisers trained on a sample of them."""
    partitions = max(1, rows // PARTITION_ROWS)
    dim = dataset.schema.field("vector").type.list_size
    codes = next(m for m in range(max(1, dim // PQ_DIMS), 0, -1) if dim % m == 0)
    probed = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(dim), dim, partitions, codes, 4, faiss.METRIC_INNER_PRODUCT)
    probed.cp.max_points_per_centroid = TRAIN_ROWS
    index = faiss.IndexRefine(
        probed, faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    )
    sample = np.random.default_rng(0).choice(
        rows, min(rows, max(partitions * TRAIN_ROWS, QUANTIZER_ROWS)), replace=False
    )
    index.train(_normalized(_take(dataset, np.sort(sample))))
    for first in range(0, rows, READ_ROWS):
        index.add(_normalized(_read(dataset, first, min(rows, first + READ_ROWS))))
    return index


def max_cosine(dataset, queries: np.ndarray, first: int, last: int) -> np.ndarray:
    """The exact cosine of each query to its nearest row among rows ``first`` to ``last`` (excluded) of ``dataset``
    (-1 where there are none): for a few rows, such as what a few commits added."""
    if last <= first or not len(queries):
        return np.full(len(queries), -1.0, dtype=np.float32)
    return (_normalized(queries) @ _normalized(_read(dataset, first, last)).T).max(axis=1)


def _read(dataset, first: int, last: int) -> np.ndarray:
    """The vectors of rows ``first`` to ``last`` (excluded)."""
    table = dataset.to_table(columns=["vector"], offset=first, limit=last - first)
    return _matrix(table.column("vector"), dataset)


def _take(dataset, ids: np.ndarray) -> np.ndarray:
    """The vectors of the rows ``ids``."""
    return _matrix(dataset.take(ids, columns=["vector"]).column("vector"), dataset)


def _matrix(column, dataset) -> np.ndarray:
    dim = dataset.schema.field("vector").type.list_size
    return column.combine_chunks().flatten().to_numpy().reshape(-1, dim)


def _normalized(vectors: np.ndarray) -> np.ndarray:
    out = np.array(vectors, dtype=np.float32, order="C", copy=True).reshape(len(vectors), -1)
    faiss.normalize_L2(out)
    return out


def refresh(table: lancedb.table.Table, upkeep: Upkeep, keep_from: int | None = None) -> dict[str, Any]:
    """Compact, index and clean up ``table`` (the module docstring); what was done, with its seconds."""
    began, done = time.perf_counter(), {}
    dataset = table.to_lance()
    rows = dataset.count_rows()
    indexed = sorted(_fragments(dataset, upkeep.scalar))
    compacted = dataset.optimize.compact_files(target_rows_per_fragment=COMPACT_ROWS, excluded_fragment_ids=indexed)
    done["compacted"] = compacted.fragments_removed
    table.checkout_latest()
    if upkeep.scalar and not indexed and rows >= upkeep.min_rows:
        for column in upkeep.scalar:
            table.create_index(column, config=BTree(), replace=True)
        done["indexed"] = rows
    elif indexed:
        dataset = table.to_lance()
        deltas = max(len(i.segments) for i in dataset.describe_indices() if i.name in _names(upkeep.scalar)) - 1
        dataset.optimize.optimize_indices(num_indices_to_merge=deltas if deltas >= MAX_DELTAS else 0)
        done["merged"] = deltas >= MAX_DELTAS
    table.checkout_latest()
    if keep_from is not None:
        done["removed_versions"] = remove_versions(table, keep_from)
    done["seconds"] = round(time.perf_counter() - began, 2)
    return done


def remove_versions(table: lancedb.table.Table, keep_from: int) -> int:
    """Remove the versions before ``keep_from`` that no tag pins; how many went."""
    old = [v["version"] for v in table.list_versions() if v["version"] < keep_from]
    if not old:
        return 0
    stats = table.to_lance().cleanup_old_versions(
        older_than=timedelta(0), versions=old, error_if_tagged_old_versions=False
    )
    table.checkout_latest()
    return int(stats.old_versions)


def _names(columns: tuple[str, ...]) -> set[str]:
    """The names LanceDB gives the indices of ``columns``."""
    return {f"{column}_idx" for column in columns}


def _fragments(dataset, columns: tuple[str, ...]) -> set[int]:
    """The fragments the indices of ``columns`` cover (any of their segments)."""
    names = _names(columns)
    return {f for i in dataset.describe_indices() if i.name in names for s in i.segments for f in s.fragment_ids}
