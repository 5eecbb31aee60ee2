"""Sentence embeddings of function specs and code (sentence-transformers, normalised for cosine): in this process
(``Embedder``), or in a job's long-lived Ray actors (``EmbedderActors``, opened with ``open_embedders``)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import Any, Protocol

import numpy as np
import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from amr.config import EmbeddingConfig
from amr.model_store import resolve
from amr.runtime import shared_in_process, spread


class Embedder:
    """A sentence-transformers model by registry name, local path or hub id, computing in ``dtype``; loaded on first
    use. Its vectors are float32 whatever it computes in."""

    def __init__(
        self,
        model: str = "all-minilm-l6-v2",
        model_store: str | None = None,
        batch_size: int = 64,
        device: str = "cpu",
        trust_remote_code: bool = False,
        dtype: str = "float32",
    ):
        self.path = resolve(model, model_store)
        self.batch_size = batch_size
        self.device = device
        self.trust_remote_code = trust_remote_code
        self.dtype = dtype

    @classmethod
    def configured(cls, config: EmbeddingConfig, model_store: str | None = None, device: str | None = None) -> Embedder:
        """The embedder a job's actors run by ``config``, in the dtype they compute in, on ``device`` (None: theirs):
        a query embedded by it compares with the vectors the job stored as the job's own queries did."""
        return cls(
            config.model,
            model_store,
            config.batch_size,
            device or config.actor_device,
            config.trust_remote_code,
            config.actor_dtype,
        )

    @cached_property
    def model(self):
        import torch
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(
            self.path,
            device=self.device,
            trust_remote_code=self.trust_remote_code,
            model_kwargs={"torch_dtype": getattr(torch, self.dtype)},
        )

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text (cosine similarity is their dot product)."""
        if not len(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts), batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32, copy=False)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)  # in float32: unit length in any dtype


class Encoder(Protocol):
    """What embeds texts: an ``Embedder`` in this process, or a job's ``EmbedderActors``."""

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


@ray.remote(max_restarts=-1, max_task_retries=-1)  # a lost node's actor restarts elsewhere
class _EmbedderActor:
    def __init__(self, config: EmbeddingConfig, model_store: str | None):
        self.embedder = Embedder.configured(config, model_store)
        self.dim = self.embedder.dim  # the model loads now, while the job starts its teacher

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.embedder.encode(texts)

    def dimension(self) -> int:
        return self.dim


class EmbedderActors:
    """A job's embedders: ``embedding.actors`` Ray actors with the model loaded (one CPU each, and
    ``embedding.num_gpus`` of a GPU each where set), started once and fed by the query-embedding stage
    (``amr.stages.embed``) and every wave's novelty check (``encode``). They start in the background: created
    before the teacher, their model loads while its engine starts.

    On CPUs they spread over the nodes. On GPUs they are packed (one placement group, ``PACK``): shares of a GPU on
    as few GPUs as they fit, as the preflight counts them. Spread, four actors of a quarter of a GPU each took a GPU
    on each of 4 nodes, and the teacher's 2-GPU replicas then fitted 14 times where the preflight counted 15."""

    def __init__(self, config: EmbeddingConfig, model_store: str | None = None):
        self.batch_size = config.batch_size
        self.group = (
            placement_group([{"CPU": 1, "GPU": config.num_gpus}] * config.actors, strategy="PACK")
            if config.num_gpus
            else None
        )
        self.actors = [
            _EmbedderActor.options(num_cpus=1, num_gpus=config.num_gpus, scheduling_strategy=self._place(i)).remote(
                config, model_store
            )
            for i in range(config.actors)
        ]

    def _place(self, actor: int) -> Any:
        if self.group is None:
            return "SPREAD"
        return PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=actor)

    @cached_property
    def dim(self) -> int:
        return ray.get(self.actors[0].dimension.remote())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text, in order; the texts are split evenly over the actors."""
        if not len(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(spread(self.actors, "encode", texts))

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self.group is not None:
            remove_placement_group(self.group)
            self.group = None

    def __enter__(self) -> EmbedderActors:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_OPEN: dict[str, EmbedderActors] = {}
"""The embedding actors open in this process, by their settings: nested ``open_embedders`` calls share them."""


@contextmanager
def open_embedders(config: EmbeddingConfig, model_store: str | None = None) -> Iterator[EmbedderActors]:
    """A job's embedding actors for the ``with`` block. Inside an enclosing ``open_embedders`` of the same settings (a
    caller that runs several distillations in one process), the enclosing block's actors, started once: each start
    loads sentence-transformers and the model in a new process (~6 s of CPU)."""
    key = json.dumps([config.model_dump(mode="json"), model_store], sort_keys=True)
    with shared_in_process(_OPEN, key, lambda: EmbedderActors(config, model_store)) as actors:
        yield actors
