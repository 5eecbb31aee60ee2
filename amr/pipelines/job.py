"""What a distill job's stages share (``Job``), and counting a stage's rows from small columns."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray

from amr.config import DistillConfig
from amr.embeddings import EmbedderActors
from amr.engines import Teacher
from amr.lease import Lease
from amr.methods import Method
from amr.progress import StageProgress
from amr.sandbox.stage import SandboxActors
from amr.stages import calls, teacher_counts
from amr.storage import RunDir


@dataclass
class Job:
    """What a distill job's stages share: its settings, run directory, job-long resources and the manifest's
    stage and module-table entries they fill in."""

    config: DistillConfig
    method: Method
    run_dir: RunDir
    total: int
    teacher: Teacher
    sandbox: SandboxActors
    embedders: EmbedderActors | None
    lease: Lease | None
    """The module table's writer lease, for methods that grow it."""
    progress: StageProgress
    stages: dict[str, Any] = field(default_factory=dict)
    modules: dict[str, Any] = field(default_factory=dict)
    redo: set[str] = field(default_factory=set)
    """Ids asked again in this run (a resume): every later stage recomputes their rows."""

    def streamed(
        self,
        name: str,
        run: Callable[[ray.data.Dataset], ray.data.Dataset],
        source: str,
        prefix: str | None = None,
    ) -> str:
        """Run a stage over the rows of the stage ``source`` once (the directory ``<name>.parquet``); ``prefix``:
        its teacher columns' prefix. Resumed, a finished stage asks again for the rows its teacher call failed
        for and the rows an earlier stage asked again for (``redo``), and only those. Returns the directory's
        name."""
        path = f"{name}.parquet"
        self.run_dir.finish_replace(path)
        began = time.perf_counter()
        tokens = f"{prefix}_output_tokens" if prefix else None
        if not self.run_dir.stage_done(path):
            rows = self.progress.counted(run(self.read(source)), name, count(self.run_dir, source), tokens)
            self.run_dir.write_stage(path, rows)
            self.progress.finished(name)
            self.stages[name] = {"wall_time_s": round(time.perf_counter() - began, 1)}
        elif stale := self.redo | (failed := self._failed(path, prefix)):
            fresh = self.progress.counted(run(self.read(source).filter(lambda r: r["id"] in stale)), name, None, tokens)
            self.run_dir.replace_stage(path, self.read(path).filter(lambda r: r["id"] not in stale).union(fresh))
            self.progress.finished(name)
            self.redo |= stale
            self.stages[name] = {"wall_time_s": round(time.perf_counter() - began, 1), "resumed": True}
            self.stages[name]["asked_again"] = len(failed)
            self.stages[name]["recovered"] = len(failed - self._failed(path, prefix))
        self.stages.setdefault(name, {"resumed": True})
        self.stages[name].update(
            teacher_counts(self.run_dir.scan_columns(path, calls(prefix)), prefix)
            if prefix
            else {"rows": count(self.run_dir, path)}
        )
        return path

    def _failed(self, path: str, prefix: str | None) -> set[str]:
        """The ids of a finished stage's rows whose teacher call failed."""
        if not prefix:
            return set()
        return {
            rid
            for b in self.run_dir.scan_columns(path, ["id", f"{prefix}_error"])
            for rid, error in zip(b["id"], b[f"{prefix}_error"])
            if error
        }

    def read(self, path: str) -> ray.data.Dataset:
        return self.run_dir.read_stage(path)


def count(run_dir: RunDir, path: str) -> int:
    """The rows of a stage directory (0 where it has none)."""
    dataset = run_dir.open_stage(path)
    return dataset.count_rows() if dataset else 0


def count_where(run_dir: RunDir, path: str, columns: list[str], predicate: Callable[[dict[str, Any]], bool]) -> int:
    """The rows of a stage directory for which ``predicate`` holds, read ``columns`` at a time."""
    return sum(
        predicate(dict(zip(b, values))) for b in run_dir.scan_columns(path, columns) for values in zip(*b.values())
    )
