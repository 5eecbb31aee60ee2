"""The sandbox of a job: Ray actors, each holding a pool of warm check servers, started once and fed by
every wave (``run``) and by streamed stages (``check_dataset``)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import pandas as pd
import ray
import ray.data

from amr.config import IsolationConfig, SandboxConfig
from amr.runtime import CALLER_TASK, on_cluster, shared_in_process, spread
from amr.sandbox.cluster import placement, required_level
from amr.sandbox.pool import RECORD_FIELDS, Check, Sandbox

T = TypeVar("T")


@ray.remote(max_restarts=-1, max_task_retries=-1)  # a lost node's actor restarts elsewhere; checks are idempotent
class _SandboxActor:
    def __init__(self, config: dict[str, Any]):
        self.sandbox = Sandbox(SandboxConfig(**config))

    def run(self, checks: list[Check]) -> list[dict[str, Any]]:
        return self.sandbox.run(checks)

    def close(self) -> None:
        self.sandbox.close()


class SandboxActors:
    """``config.actors`` sandbox actors, spread over the nodes that run checks (``amr.sandbox.cluster``: those
    that offer ``config.resource``, else every node; default one actor per such node), each running
    ``config.workers`` checks at once on as many units of the resource (default: what a node offers) or CPUs
    (default: this machine's count). On a Ray cluster a config that allows weaker isolation than bwrap is a
    ConfigError here, before any actor starts. Use as a context manager, or ``close()`` them."""

    def __init__(self, config: SandboxConfig):
        level = required_level(config, on_cluster())
        where = placement(config, config.workers)
        self.workers = where.workers
        settings = config.model_copy(update={"workers": self.workers, "require": level}).model_dump()
        self.actors = [
            _SandboxActor.options(**where.options, scheduling_strategy="SPREAD").remote(settings)
            for _ in range(config.actors or len(where.nodes))
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
            **CALLER_TASK,
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


_OPEN: dict[str, SandboxActors] = {}
"""The sandbox actors open in this process, by their settings: nested ``open_sandbox`` calls share them."""


@contextmanager
def open_sandbox(config: SandboxConfig) -> Iterator[SandboxActors]:
    """A job's sandbox actors for the ``with`` block. Inside an enclosing ``open_sandbox`` of the same settings (a
    caller that runs several distillations in one process), the enclosing block's actors, started once."""
    with shared_in_process(_OPEN, config.model_dump_json(), lambda: SandboxActors(config)) as actors:
        yield actors


def call_where_checks_run(config: IsolationConfig, cpus: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(config, *args)`` where untrusted code runs, for work that runs its own sandbox of up to ``cpus``
    CPUs (scoring): a Ray task on a node that offers ``config.resource``, asking ``cpus`` units of it, when Ray
    runs with such nodes; else in this process. When Ray runs, ``config.require`` is the level the cluster
    requires (``amr.sandbox.cluster``)."""
    if ray.is_initialized():
        config = config.model_copy(update={"require": required_level(config, on_cluster())})
        where = placement(config, cpus)
        if "resources" in where.options:
            return ray.get(ray.remote(fn).options(max_retries=0, **where.options).remote(config, *args))
    return fn(config, *args)


def _check_batch(batch: pd.DataFrame, actors: list[Any]) -> pd.DataFrame:
    entry_points = batch["entry_point"] if "entry_point" in batch else [None] * len(batch)
    checks = [
        {"code": code, "test": test, "entry_point": entry}
        for code, test, entry in zip(batch["code"], batch["test"], entry_points)
    ]
    records = ray.get(random.choice(actors).run.remote(checks))
    return batch.assign(**{field: [r[field] for r in records] for field in RECORD_FIELDS})
