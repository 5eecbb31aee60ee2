"""Quality filters for generated instructions: each returns why a row is dropped, or None to keep it."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from amr.ann import Upkeep, refresh, search
from amr.config import FilterConfig
from amr.decontam import ngrams, words
from amr.embeddings import Embedder

TASK_CUE = re.compile(
    r"\b(write|implement|create|return|returns|given|function|program|compute|calculate|find|"
    r"check|design|develop|determine|count|convert|sort|generate)\b",
    re.IGNORECASE,
)


def text_reason(text: str, config: FilterConfig, parent: str | None = None) -> str | None:
    """Empty, not a task, too short or long, or a copy of its parent (word-trigram Jaccard)."""
    tokens = words(text)
    if not tokens:
        return "empty"
    if len(tokens) < config.min_words:
        return "too short"
    if len(tokens) > config.max_words:
        return "too long"
    if not TASK_CUE.search(text):
        return "not a task"
    if parent is not None and jaccard(tokens, words(parent)) >= config.parent_copy:
        return "copy of parent"
    return None


def jaccard(a: list[str], b: list[str], n: int = 3) -> float:
    grams_a, grams_b = ngrams(a, n) or {" ".join(a)}, ngrams(b, n) or {" ".join(b)}
    return len(grams_a & grams_b) / len(grams_a | grams_b)


class NearDuplicates:
    """A LanceDB table of the instructions kept so far (their embeddings, on disk: the driver holds a batch); a new
    one whose cosine to any of them, or to an earlier one of its batch, reaches ``threshold`` is a near-duplicate.
    The table gets an ANN index past ``upkeep.min_rows`` (``amr.ann``): a batch costs the same at 10k and 1M kept
    rows, each compared with its nearest kept one as the ANN finds it (recall@1 in docs/benchmarks.md)."""

    def __init__(self, embedder: Embedder, threshold: float, uri: str | None = None, upkeep: Upkeep = Upkeep()):
        import lancedb

        self._scratch = None if uri else tempfile.TemporaryDirectory(prefix="amr-dedup-")
        self.embedder = embedder
        self.table = lancedb.connect(uri or self._scratch.name).create_table(
            "kept", schema=pa.schema([("vector", pa.list_(pa.float32(), embedder.dim))]), mode="overwrite"
        )
        self.threshold, self.upkeep, self.commits = threshold, upkeep, 0

    def keep(self, texts: Sequence[str]) -> list[bool]:
        """Which of ``texts`` (in order) are novel; the novel ones join the table."""
        vectors = self.embedder.encode(texts)
        keep = [True] * len(vectors)
        if self.table.count_rows():
            for i, hits in enumerate(self._nearest(vectors)):
                keep[i] = not hits or 1 - hits[0] < self.threshold
        kept: list[int] = []
        for i in range(len(vectors)):
            if keep[i] and kept and float((vectors[kept] @ vectors[i]).max()) >= self.threshold:
                keep[i] = False
            if keep[i]:
                kept.append(i)
        if kept:
            self.table.add(
                pa.table({"vector": pa.array(list(vectors[kept]), type=pa.list_(pa.float32(), vectors.shape[1]))})
            )
            self.commits += 1
            if self.commits >= self.upkeep.every:  # no reader pins a version: only the latest is kept
                refresh(self.table, self.upkeep, keep_from=self.table.version)
                self.commits = 0
        return keep

    def _nearest(self, vectors: np.ndarray) -> list[list[float]]:
        """Cosine distances of each vector's nearest kept row (one multi-vector query)."""
        rows = search(self.table, vectors, 1, [])
        out: list[list[float]] = [[] for _ in range(len(vectors))]
        for row in rows:  # one query: no query_index
            out[row.get("query_index", 0)].append(row["_distance"])
        return out
