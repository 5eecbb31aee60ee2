"""A modelled sentence-embedding model for the simulated cluster: the job's real embedding actors load it as any
sentence-transformers model directory (``embedding.model``, ``embedding.trust_remote_code``), and it costs them
what the configured model costs on one CPU, in the engine's time.

Its vectors come from each text's hash: distinct texts get unrelated unit vectors (cosine ~0 in 384 dimensions), the
same text the same vector. With the scripted answers every new function is novel, so the module table grows by every
verified function, the most it can: the table-scale figures are an upper bound. Each ``encode`` holds its actor
``seconds_per_text / time_scale`` wall seconds a text (``cost``): for actors on GPUs (``embedding.num_gpus``) the
model's published GPU rate, for actors on CPUs the configured model measured here on one CPU thread.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers.base.modules.input_module import InputModule

SAMPLE = [
    f"def {name}_{i}(x: int) -> int: {doc} {i}."
    for i in range(96)
    for name, doc in [("scale", "Multiply x by"), ("solve", "Task: scale x and add one, for")]
]
"""Spec texts like the job's queries and new functions (``amr.modules.spec_text``)."""


class ModelledEmbedding(InputModule):
    config_keys = ["dimension", "seconds_per_text", "time_scale"]

    def __init__(self, dimension: int = 384, seconds_per_text: float = 0.0, time_scale: float = 1.0, **kwargs: Any):
        super().__init__()
        self.dimension, self.seconds_per_text, self.time_scale = dimension, seconds_per_text, time_scale

    def preprocess(self, inputs: list[str], prompt: str | None = None, **kwargs: Any) -> dict[str, torch.Tensor]:
        seeds = [int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1 for text in inputs]
        return {"seeds": torch.tensor(seeds, dtype=torch.int64)}

    def forward(self, features: dict[str, torch.Tensor], **kwargs: Any) -> dict[str, torch.Tensor]:
        seeds = features["seeds"].tolist()
        time.sleep(len(seeds) * self.seconds_per_text / self.time_scale)
        vectors = np.stack([np.random.default_rng(s).standard_normal(self.dimension) for s in seeds])
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        features["sentence_embedding"] = torch.from_numpy(vectors.astype(np.float32))
        return features

    def get_embedding_dimension(self) -> int:
        return self.dimension

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        self.save_config(output_path)

    @classmethod
    def load(cls, model_name_or_path: str, **kwargs: Any) -> ModelledEmbedding:
        return cls(**cls.load_config(model_name_or_path))


GPU_TEXTS_PER_S = {"all-minilm-l6-v2": 14200}
"""Published GPU encoding rates: the sentence-transformers documentation's table of its pretrained models
(https://www.sbert.net/docs/sentence_transformer/pretrained_models.html, "Speed", measured on a V100): a quarter of an
H100 (the GPU configs' ``embedding.num_gpus: 0.25``) taken as fast as that V100."""


def cost(config: Any, model_store: str | None) -> tuple[float, int, str]:
    """Seconds a text costs the job's embedding actors, the model's dimension, and where the cost comes from."""
    cpu, dimension = measure(config.model, model_store)
    if not config.num_gpus:
        return cpu, dimension, f"{config.model} measured here on one CPU thread"
    if config.model not in GPU_TEXTS_PER_S:
        raise ValueError(
            f"no published GPU encoding rate for embedding.model {config.model!r} (known: {', '.join(GPU_TEXTS_PER_S)})"
        )
    rate = GPU_TEXTS_PER_S[config.model]
    return 1 / rate, dimension, f"{config.model} on a GPU share, {rate} texts/s (sentence-transformers' published rate)"


def measure(model: str, model_store: str | None, texts: list[str] = SAMPLE) -> tuple[float, int]:
    """Seconds a text of ``model`` takes on one CPU thread of this machine (after a warm-up), and its dimension."""
    from amr.embeddings import Embedder

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        embedder = Embedder(model, model_store)
        embedder.encode(texts[:16])
        began = time.perf_counter()
        embedder.encode(texts)
        return (time.perf_counter() - began) / len(texts), embedder.dim
    finally:
        torch.set_num_threads(threads)


def build(folder: Path, dimension: int, seconds_per_text: float, time_scale: float) -> Path:
    """A sentence-transformers model directory of the modelled embedding."""
    from sentence_transformers import SentenceTransformer

    SentenceTransformer(modules=[ModelledEmbedding(dimension, seconds_per_text, time_scale)]).save(str(folder))
    return folder
