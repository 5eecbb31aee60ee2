"""Query embedding: each row's retrieval queries (its specs, or R_d's code without MD), embedded once in
a streamed stage ahead of the waves, so that a wave only searches."""

from __future__ import annotations

import pandas as pd
import ray

from amr.config import EmbeddingConfig
from amr.embeddings import Embedder
from amr.stages.retrieve import Query, queries


class _Encoder:
    def __init__(self, config: dict, model_store: str | None, query: Query):
        config = EmbeddingConfig(**config)
        self.embedder = Embedder(config.model, model_store, config.batch_size)
        self.query = query

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        texts = [queries(row, self.query) for row in batch.to_dict("records")]
        vectors = iter(self.embedder.encode([t for ts in texts for t in ts]).tolist())
        return batch.assign(query_vectors=[[next(vectors) for _ in ts] for ts in texts])


def run(ds: ray.data.Dataset, config: EmbeddingConfig, model_store: str | None, query: Query) -> ray.data.Dataset:
    """Rows -> + ``query_vectors``: one unit vector per retrieval query, in ``queries`` order."""
    return ds.map_batches(_Encoder, fn_constructor_kwargs={"config": config.model_dump(), "model_store": model_store,
                                                           "query": query},
                          batch_format="pandas", batch_size=config.batch_size, num_cpus=1,
                          compute=ray.data.ActorPoolStrategy(min_size=1, max_size=config.actors))
