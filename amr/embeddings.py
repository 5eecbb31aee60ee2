"""Sentence embeddings of function specs and code (sentence-transformers, normalised for cosine)."""

from __future__ import annotations

from functools import cached_property
from typing import Sequence

import numpy as np

from amr.model_store import resolve


class Embedder:
    """A sentence-transformers model by registry name, local path or hub id; loaded on first use."""

    def __init__(self, model: str = "all-minilm-l6-v2", model_store: str | None = None, batch_size: int = 64,
                 device: str = "cpu"):
        self.path = resolve(model, model_store)
        self.batch_size = batch_size
        self.device = device

    @cached_property
    def model(self):
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(self.path, device=self.device)

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text (cosine similarity is their dot product)."""
        if not len(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return vectors.astype(np.float32, copy=False)
