"""Decontamination as a streamed Ray Data stage: each instruction gets ``contamination`` (the check that
flagged it: same-task, exact, ngram, embedding; None when clean), ``benchmark_id``, ``contamination_score``
and ``near``: its nearest benchmark items from ``judge_floor`` up to the embedding threshold (for the judge)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import ray

from amr.config import DecontamConfig, EmbeddingConfig
from amr.decontam import NgramIndex, benchmark_items, nearest, problem_statement
from amr.embeddings import Embedder


class _Checker:
    def __init__(self, config: dict, embedding: dict, model_store: str | None):
        self.config = DecontamConfig(**config)
        items = benchmark_items(self.config.benchmarks)
        self.index = NgramIndex.build(items, self.config.ngram)
        self.task_ids = {item["id"].lower(): item["id"] for item in items}
        self.embedder = None
        if self.config.embedding_threshold is not None:
            embedding = EmbeddingConfig(**embedding)
            self.embedder = Embedder(
                embedding.model, model_store, embedding.batch_size, trust_remote_code=embedding.trust_remote_code
            )
            self.ids = [item["id"] for item in items]
            self.vectors = _benchmark_vectors(self.embedder, [item["problem"] for item in items])

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        texts = batch["instruction"].tolist()
        found = [
            {"check": "same-task", "benchmark_id": self.task_ids[rid.lower()], "score": 1.0}
            if rid.lower() in self.task_ids
            else self.index.match(text, self.config.min_ngram_matches)
            for rid, text in zip(batch["id"].tolist(), texts)
        ]
        near: list[list[dict]] = [[] for _ in texts]
        todo = [i for i, f in enumerate(found) if f is None]
        if self.embedder is not None and todo:
            vectors = self.embedder.encode([problem_statement(texts[i]) for i in todo])
            top, cosines = nearest(vectors, self.vectors, self.config.judge_top_k)
            for i, indices, scores in zip(todo, top.tolist(), cosines.tolist()):
                if scores[0] >= self.config.embedding_threshold:
                    found[i] = {"check": "embedding", "benchmark_id": self.ids[indices[0]], "score": scores[0]}
                else:
                    near[i] = [
                        {"benchmark_id": self.ids[j], "score": round(c, 4)}
                        for j, c in zip(indices, scores)
                        if c >= self.config.judge_floor
                    ]
        return batch.assign(
            near=near,
            contamination=[f and f["check"] for f in found],
            benchmark_id=[f and f["benchmark_id"] for f in found],
            contamination_score=[f and round(f["score"], 4) for f in found],
        )


def _benchmark_vectors(embedder: Embedder, problems: list[str]) -> np.ndarray:
    """The benchmark statements' embeddings, computed once per model and benchmark set (~15 s on 2 CPUs) and
    kept in ``$AMR_CACHE`` (default ~/.cache/amr)/decontam."""
    key = hashlib.sha256("\0".join([embedder.path, *problems]).encode()).hexdigest()[:16]
    path = Path(os.environ.get("AMR_CACHE", "~/.cache/amr")).expanduser() / "decontam" / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    vectors = embedder.encode(problems)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy", delete=False) as f:
        np.save(f, vectors)
    os.replace(f.name, path)
    return vectors


def run(
    ds: ray.data.Dataset, config: DecontamConfig, embedding: EmbeddingConfig, model_store: str | None
) -> ray.data.Dataset:
    return ds.map_batches(
        _Checker,
        fn_constructor_kwargs={
            "config": config.model_dump(),
            "embedding": embedding.model_dump(),
            "model_store": model_store,
        },
        batch_format="pandas",
        batch_size=config.batch_size,
        num_cpus=1,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=config.actors),
    )
