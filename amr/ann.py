"""Upkeep of a growing LanceDB vector table, so that a search and a filtered count cost the same at 10k and 1M rows.

Below ``min_rows`` a search is exact (LanceDB scans the vectors). From ``min_rows`` on, the vectors have an ANN index
(IVF partitions of about ``PARTITION_ROWS`` rows, product-quantised vectors; a search visits ``NPROBES`` partitions
and re-ranks ``REFINE`` candidates per hit with the full vectors) and the ``scalar`` columns B-tree indices (an
equality or IN filter reads the index, not the column). Every ``every`` commits, ``refresh``:

- compacts the fragments added since the last refresh (indexed fragments are never rewritten: no index is
  remapped), then indexes them as a new delta of each index (cost: the rows added);
- merges the deltas into one once there are ``MAX_DELTAS`` of them (cost: their rows' codes, 64 bytes a row);
- retrains the ANN index when the table has doubled since it was trained (cost: the table, once per doubling), so
  that partitions stay ``PARTITION_ROWS`` large and a search reads as many rows at 1M as at 50k;
- removes the versions before ``keep_from`` that no tag pins: a pinned version stays readable.

Rows added since the last refresh are searched exactly (LanceDB scans unindexed fragments): at most ``every``
commits of them. Uses pylance (``lance``), the format library LanceDB is built on, where LanceDB's ``optimize()``
cannot be bounded: it rewrites every fragment under 1M rows (the whole table) and merges every index.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from math import gcd
from typing import Any

import lancedb
import numpy as np
from lancedb.index import BTree, IvfPq

log = logging.getLogger(__name__)

VECTOR_INDEX = "vector_idx"
PARTITION_ROWS = 4096
"""Rows per IVF partition when the ANN index is trained."""
SUBVECTOR_DIMS = 8
"""Dimensions per product-quantisation sub-vector (one byte each): 128 bytes a row at 1024-d."""
MAX_DELTAS = 8
"""Delta indices searched besides the trained one before they are merged into one."""
NPROBES = 20
REFINE = 20
"""Search settings: recall@1 against brute force in docs/benchmarks.md, "The module table"."""


@dataclass(frozen=True)
class Upkeep:
    """When and what to index: the ANN index from ``min_rows`` rows, B-tree indices on ``scalar`` columns, a
    refresh every ``every`` commits."""

    min_rows: int = 50_000
    every: int = 8
    scalar: tuple[str, ...] = ()


def refresh(table: lancedb.table.Table, upkeep: Upkeep, keep_from: int | None = None) -> dict[str, Any]:
    """Index, compact and clean up ``table`` (the module docstring); what was done, with its seconds."""
    began, done = time.perf_counter(), {}
    dataset = table.to_lance()
    rows = dataset.count_rows()
    trained = _trained_rows(dataset)
    if rows >= upkeep.min_rows and rows >= 2 * trained:
        _train(table, rows, upkeep)
        done["trained"] = rows
    elif trained:
        indexed = sorted(_fragments(dataset, VECTOR_INDEX))
        done["compacted"] = dataset.optimize.compact_files(excluded_fragment_ids=indexed).fragments_removed
        table.checkout_latest()
        deltas = table.index_stats(VECTOR_INDEX).num_indices - 1
        table.to_lance().optimize.optimize_indices(num_indices_to_merge=deltas if deltas >= MAX_DELTAS else 0)
        done["merged"] = deltas >= MAX_DELTAS
    elif rows:  # below min_rows: at most min_rows rewritten
        done["compacted"] = dataset.optimize.compact_files().fragments_removed
    table.checkout_latest()
    if keep_from is not None:
        done["removed_versions"] = remove_versions(table, keep_from)
    done["seconds"] = round(time.perf_counter() - began, 2)
    return done


def search(table: lancedb.table.Table, vectors: np.ndarray, k: int, columns: list[str]) -> list[dict[str, Any]]:
    """The ``k`` nearest rows (by cosine) to each of ``vectors`` in one multi-vector query: ``columns``, with
    ``_distance`` and (for more than one vector) ``query_index``."""
    query = table.search(list(vectors)).distance_type("cosine").nprobes(NPROBES).refine_factor(REFINE)
    return query.limit(k).select([*columns, "_distance"]).to_list()


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


def _train(table: lancedb.table.Table, rows: int, upkeep: Upkeep) -> None:
    """The ANN index trained on all ``rows`` (replacing one trained on fewer), and the scalar indices."""
    partitions = max(1, rows // PARTITION_ROWS)
    dim = table.schema.field("vector").type.list_size
    began = time.perf_counter()
    config = IvfPq(distance_type="cosine", num_partitions=partitions, num_sub_vectors=gcd(dim, dim // SUBVECTOR_DIMS))
    table.create_index("vector", config=config, name=VECTOR_INDEX, replace=True)
    for column in upkeep.scalar:
        table.create_index(column, config=BTree(), replace=True)
    log.info("ANN index trained on %d rows (%d partitions) in %.1f s", rows, partitions, time.perf_counter() - began)


def _trained_rows(dataset) -> int:
    """The rows the ANN index was trained on: those of its largest segment (deltas hold fewer until a doubling
    retrains it); 0 without one."""
    if not any(i.name == VECTOR_INDEX for i in dataset.describe_indices()):
        return 0
    segments = dataset.stats.index_stats(VECTOR_INDEX)["indices"]
    return max(sum(p["size"] for p in segment["partitions"]) for segment in segments)


def _fragments(dataset, name: str) -> set[int]:
    """The fragments an index covers (any of its segments)."""
    return {f for i in dataset.describe_indices() if i.name == name for s in i.segments for f in s.fragment_ids}
