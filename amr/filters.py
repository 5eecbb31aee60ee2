"""Quality filters for generated instructions: each returns why a row is dropped, or None to keep it."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence

import pyarrow as pa

from amr.ann import Upkeep, VectorIndex, refresh
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
    """A LanceDB table of the instructions kept so far (their embeddings, on disk) and its vector index
    (``amr.ann.VectorIndex``); a new one whose cosine to any of them, or to an earlier one of its batch, reaches
    ``threshold`` is a near-duplicate. Past ``upkeep.min_rows`` the index is an IVF one: a batch costs the same at 10k
    and 1M kept rows, each compared with its nearest kept one as the index finds it (recall@1 in
    docs/benchmarks.md)."""

    def __init__(self, embedder: Embedder, threshold: float, uri: str | None = None, upkeep: Upkeep = Upkeep()):
        import lancedb

        self._scratch = None if uri else tempfile.TemporaryDirectory(prefix="amr-dedup-")
        self.embedder = embedder
        self.table = lancedb.connect(uri or self._scratch.name).create_table(
            "kept", schema=pa.schema([("vector", pa.list_(pa.float32(), embedder.dim))]), mode="overwrite"
        )
        self.index = VectorIndex(embedder.dim, upkeep.min_rows)
        self.threshold, self.upkeep, self.commits = threshold, upkeep, 0

    def keep(self, texts: Sequence[str]) -> list[bool]:
        """Which of ``texts`` (in order) are novel; the novel ones join the table."""
        vectors = self.embedder.encode(texts)
        _, nearest = self.index.search(self.table.to_lance(), vectors, 1)
        keep = [bool(similarity < self.threshold) for similarity in nearest[:, 0]]
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
