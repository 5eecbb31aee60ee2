"""The sandbox as a Ray Data stage: actors, each holding a pool of warm check servers."""

from __future__ import annotations

from typing import Any

import pandas as pd
import ray.data

from amr.config import SandboxConfig
from amr.sandbox.pool import RECORD_FIELDS, Sandbox


class _Checker:
    def __init__(self, config: dict[str, Any]):
        self.sandbox = Sandbox(SandboxConfig(**config))

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        entry_points = batch["entry_point"] if "entry_point" in batch else [None] * len(batch)
        records = self.sandbox.run(
            {"code": code, "test": test, "entry_point": entry}
            for code, test, entry in zip(batch["code"], batch["test"], entry_points)
        )
        return batch.assign(**{field: [r[field] for r in records] for field in RECORD_FIELDS})


def check_dataset(ds: ray.data.Dataset, config: SandboxConfig, *, max_actors: int = 1) -> ray.data.Dataset:
    """Add the sandbox record columns to rows with ``code``, ``test`` and optional ``entry_point``.

    Each actor asks Ray for ``config.workers`` CPUs (default one) and runs that many checks at once;
    the actor pool scales from one to ``max_actors`` across the cluster.
    """
    workers = config.workers or 1
    return ds.map_batches(
        _Checker,
        fn_constructor_kwargs={"config": config.model_copy(update={"workers": workers}).model_dump()},
        batch_format="pandas",
        batch_size=16 * workers,
        num_cpus=workers,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max_actors),
    )
