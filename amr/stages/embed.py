"""Query embedding: each row's retrieval queries (its specs, or R_d's code without MD), embedded once in
a streamed stage ahead of the waves, so that a wave only searches."""

from __future__ import annotations

import random
from typing import Any

import pandas as pd
import ray

from amr.embeddings import EmbedderActors
from amr.runtime import CALLER_TASK
from amr.stages.retrieve import Query, queries


def run(ds: ray.data.Dataset, embedders: EmbedderActors, query: Query) -> ray.data.Dataset:
    """Rows -> + ``query_vectors``: one unit vector per retrieval query, in ``queries`` order, embedded by the
    job's embedder actors."""
    return ds.map_batches(
        _embedded,
        fn_kwargs={"actors": embedders.actors, "query": query},
        batch_format="pandas",
        batch_size=embedders.batch_size,
        **CALLER_TASK,
        compute=ray.data.TaskPoolStrategy(size=2 * len(embedders.actors)),
    )


def _embedded(batch: pd.DataFrame, actors: list[Any], query: Query) -> pd.DataFrame:
    texts = [queries(row, query) for row in batch.to_dict("records")]
    flat = [t for ts in texts for t in ts]
    vectors = iter(ray.get(random.choice(actors).encode.remote(flat)).tolist() if flat else [])
    return batch.assign(query_vectors=[[next(vectors) for _ in ts] for ts in texts])
