"""The sandbox of a job: Ray actors, each holding a pool of warm check servers, started once and fed by
every wave (``run``) and by streamed stages (``check_dataset``)."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any

import pandas as pd
import ray
import ray.data

from amr.config import SandboxConfig
from amr.runtime import spread
from amr.sandbox.pool import RECORD_FIELDS, Check, Sandbox


@ray.remote(max_restarts=-1, max_task_retries=-1)  # a lost node's actor restarts elsewhere; checks are idempotent
class _SandboxActor:
    def __init__(self, config: dict[str, Any]):
        self.sandbox = Sandbox(SandboxConfig(**config))

    def run(self, checks: list[Check]) -> list[dict[str, Any]]:
        return self.sandbox.run(checks)

    def close(self) -> None:
        self.sandbox.close()


class SandboxActors:
    """``config.actors`` sandbox actors (default: one per Ray node, spread), each running ``config.workers``
    checks at once (default: this machine's CPU count) on as many Ray CPUs. Use as a context manager, or ``close()`` them."""

    def __init__(self, config: SandboxConfig):
        self.workers = config.workers or os.cpu_count() or 1
        count = config.actors or sum(1 for node in ray.nodes() if node["Alive"])
        settings = config.model_copy(update={"workers": self.workers}).model_dump()
        self.actors = [
            _SandboxActor.options(num_cpus=self.workers, scheduling_strategy="SPREAD").remote(settings)
            for _ in range(count)
        ]

    def run(self, checks: Sequence[Check]) -> list[dict[str, Any]]:
        """One record per check, in order; the checks are split evenly over the actors."""
        return [r for part in spread(self.actors, "run", checks) for r in part] if checks else []

    def check_dataset(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        """Add the sandbox record columns to rows with ``code``, ``test`` and optional ``entry_point``."""
        return ds.map_batches(
            _check_batch,
            fn_kwargs={"actors": self.actors},
            batch_format="pandas",
            batch_size=16 * self.workers,
            num_cpus=0,
            compute=ray.data.TaskPoolStrategy(size=2 * len(self.actors)),
        )

    def close(self) -> None:
        ray.get([a.close.remote() for a in self.actors])
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

    def __enter__(self) -> SandboxActors:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_batch(batch: pd.DataFrame, actors: list[Any]) -> pd.DataFrame:
    entry_points = batch["entry_point"] if "entry_point" in batch else [None] * len(batch)
    checks = [
        {"code": code, "test": test, "entry_point": entry}
        for code, test, entry in zip(batch["code"], batch["test"], entry_points)
    ]
    records = ray.get(random.choice(actors).run.remote(checks))
    return batch.assign(**{field: [r[field] for r in records] for field in RECORD_FIELDS})
