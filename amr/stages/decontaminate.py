"""Decontamination as a streamed Ray Data stage: each instruction gets ``contamination`` (the check that
flagged it: same-task, exact, ngram, embedding; None when clean), ``benchmark_id``, ``contamination_score``
and ``near``: its nearest benchmark items from ``judge_floor`` up to the embedding threshold (for the judge). The
statements are embedded by embedding actors (``embedders``), which the steps of a job share."""

from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import ray

from amr.config import DecontamConfig, EmbeddingConfig
from amr.decontam import NgramIndex, benchmark_items, nearest, problem_statement
from amr.embeddings import EmbedderActors, Encoder, open_embedders
from amr.model_store import resolve


def settings(config: DecontamConfig, embedding: EmbeddingConfig) -> EmbeddingConfig:
    """The checks' embedding actors: ``embedding``'s model on CPU, computing in float32, the dtype the threshold was
    set in (a bfloat16 model's vectors are within a cosine of 0.996 of them: rows near it would move), as many as
    ``embedding.actors`` or ``config.actors``, whichever is more."""
    update = {"num_gpus": 0, "device": None, "dtype": "float32", "actors": max(embedding.actors, config.actors)}
    return embedding.model_copy(update=update)


def embedders(
    config: DecontamConfig, embedding: EmbeddingConfig, model_store: str | None
) -> AbstractContextManager[EmbedderActors | None]:
    """The checks' embedding actors (``settings``) for the ``with`` block, None without the embedding check: an
    enclosing block's of the same settings (a job's steps share them: each start loads the model, ~9 s of 2 CPUs)."""
    if config.embedding_threshold is None:
        return nullcontext()
    return open_embedders(settings(config, embedding), model_store)


class _Checker:
    def __init__(self, config: dict, embedding: dict, model_store: str | None, embedder: Encoder | None):
        self.config = DecontamConfig(**config)
        items = benchmark_items(self.config.benchmarks)
        self.index = NgramIndex.build(items, self.config.ngram)
        self.task_ids = {item["id"].lower(): item["id"] for item in items}
        self.embedder = embedder if self.config.embedding_threshold is not None else None
        if self.embedder is not None:
            model = resolve(EmbeddingConfig(**embedding).model, model_store)
            self.ids = [item["id"] for item in items]
            self.vectors = _benchmark_vectors(self.embedder, model, [item["problem"] for item in items])

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


def _benchmark_vectors(embedder: Encoder, model: str, problems: list[str]) -> np.ndarray:
    """The benchmark statements' embeddings by ``embedder`` (of the model at path ``model``, in float32), computed
    once per model and benchmark set (~15 s on 2 CPUs) and kept in ``$AMR_CACHE`` (default ~/.cache/amr)/decontam."""
    key = hashlib.sha256("\0".join([model, *problems]).encode()).hexdigest()[:16]
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
    ds: ray.data.Dataset,
    config: DecontamConfig,
    embedding: EmbeddingConfig,
    model_store: str | None,
    embedder: Encoder | None,
) -> ray.data.Dataset:
    """The checks, ``embedder`` embedding the statements (the ``embedders`` open meanwhile; None without the
    embedding check)."""
    return ds.map_batches(
        _Checker,
        fn_constructor_kwargs={
            "config": config.model_dump(),
            "embedding": embedding.model_dump(),
            "model_store": model_store,
            "embedder": embedder,
        },
        batch_format="pandas",
        batch_size=config.batch_size,
        num_cpus=1,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=config.actors),
    )
