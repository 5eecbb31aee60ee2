"""What a distill job's stages share (``Job``): a streamed stage (``Job.streamed``), consecutive ones as one
pipeline (``Job.chain``), and counting a stage's rows from small columns."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from amr.config import DistillConfig
from amr.embeddings import EmbedderActors
from amr.engines import Teacher
from amr.lease import Lease
from amr.methods import Method
from amr.progress import StageProgress
from amr.runtime import ordered
from amr.sandbox.stage import SandboxActors
from amr.stages import calls, teacher_counts
from amr.storage import RunDir


@dataclass(frozen=True)
class Stream:
    """A streamed stage: its directory ``<name>.parquet`` holds ``run`` of the rows of the stage before it."""

    name: str
    run: Callable[[ray.data.Dataset], ray.data.Dataset]
    prefix: str | None = None
    """Its teacher columns' prefix."""
    passes: Callable[[dict[str, Any]], bool] | None = None
    """In a chain (``Job.chain``), the rows it hands on to the next stage there; that stage gets the others in its
    own step, once the step of this one has made them again (decompose's retry). Default: all."""


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
    chained: dict[str, tuple[set[str], float]] = field(default_factory=dict)
    """The directories ``chain`` made in this run: the ids a stage before each did not hand on to it, and its seconds
    (from the stage before it complete to it complete: the chain's stages overlap, these add up to its time)."""

    def chain(self, stages: Sequence[Stream], source: str, done: Callable[[str], None]) -> None:
        """Consecutive streamed stages over the rows of the stage ``source`` as one Ray Data pipeline, where none of
        them is done: a stage asks for a row as soon as the stage before it made the row, and each stage's rows are
        written into its directory as they pass (``_tee``); a directory is marked done once it holds all its rows,
        in stage order (``_ChainFiles``). Each stage's own step (``streamed``) then finds it made, and adds what
        the chain did not hand on to it (``Stream.passes``). ``done(name)`` is called (by an actor) as a stage is
        marked done: its fingerprint, while the chain goes on. Where a stage is done (a resume, R_d shared), the steps
        run one after another."""
        paths = [f"{stage.name}.parquet" for stage in stages]
        if len(stages) < 2 or any(self.run_dir.stage_done(p) or self.run_dir.stage_done(f"{p}.next") for p in paths):
            return
        began, total = time.time(), count(self.run_dir, source)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        names = {path: stage.name for stage, path in zip(stages, paths)}
        files = _ChainFiles.options(scheduling_strategy=here).remote(self.run_dir, names, total, done)
        try:
            asking = sum(stage.prefix is not None for stage in stages)  # the teacher's stages share its window
            with ordered(False), self.teacher.shared(asking):  # a row waits for no slower row before it
                rows = self.read(source)
                for number, (stage, path) in enumerate(zip(stages, paths)):
                    self.run_dir.begin_stage(path)
                    tokens = f"{stage.prefix}_output_tokens" if stage.prefix else None
                    made = self.progress.counted(stage.run(rows), stage.name, total, tokens)
                    passes = stage.passes if number + 1 < len(stages) else None
                    fn_kwargs = {"run_dir": self.run_dir, "path": path, "files": files, "passes": passes}
                    rows = made.map_batches(_tee, batch_format="pyarrow", zero_copy_batch=True, fn_kwargs=fn_kwargs)
                rows.count()
            ends = ray.get(files.ends.remote())
        finally:
            ray.kill(files)
        for stage, path in zip(stages, paths):
            written, expected, at, marked, left = ends[path]
            if written != expected:
                raise RuntimeError(f"{self.run_dir.path(path)}: the chain wrote {written} of its {expected} rows")
            self.chained[path] = (set(left), at - began)
            began = at
            if marked:
                self.progress.finished(stage.name)

    def streamed(self, stage: Stream, source: str) -> str:
        """Run a stage over the rows of the stage ``source`` once (the directory ``<name>.parquet``). Resumed, a
        finished stage asks again for the rows its teacher call failed for and the rows an earlier stage asked
        again for (``redo``), and only those. Made by ``chain`` in this run, it gets the rows the chain did not
        hand on to it. Returns the directory's name."""
        name, run, prefix = stage.name, stage.run, stage.prefix
        path = f"{name}.parquet"
        self.run_dir.finish_replace(path)
        began = time.perf_counter()
        tokens = f"{prefix}_output_tokens" if prefix else None
        if path in self.chained:
            left, seconds = self.chained.pop(path)
            if left:
                rows = self.progress.counted(
                    run(self.read(source).filter(lambda r: r["id"] in left)), name, None, tokens
                )
                self.run_dir.append_stage(path, rows)
                self.progress.finished(name)
                seconds += time.perf_counter() - began
            self.stages[name] = {"wall_time_s": round(seconds, 1), "chained": True}
        elif not self.run_dir.stage_done(path):
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


def _tee(
    batch: pa.Table, run_dir: RunDir, path: str, files: Any, passes: Callable[[dict[str, Any]], bool] | None
) -> pa.Table:
    """A chained stage's batch written into its directory, in input order, as a file named by its first row's
    ``index`` and its ids (the files sort in input order; a retried task writes the same file again), and counted
    (``_ChainFiles``); the rows it hands on."""
    if not batch.num_rows:
        return batch
    batch = batch.sort_by("index")
    # a column null throughout the batch (no error in it) is text, as where a row has one: every file reads as one
    # table, also with pyarrow.parquet.read_table, which takes the first file's types
    text = [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in batch.schema]
    batch = batch.cast(pa.schema(text, batch.schema.metadata))
    ids = batch.column("id").to_pylist()
    digest = hashlib.sha1("\n".join(ids).encode()).hexdigest()[:12]
    key = f"{batch.column('index')[0].as_py():012d}-{digest}"
    file = run_dir.write_part(path, batch, key)
    handed = [True] * len(ids) if passes is None else [passes(r) for r in batch.to_pylist()]
    ray.get(files.wrote.remote(path, file, len(ids), [i for i, kept in zip(ids, handed) if not kept]))
    return batch.filter(pa.array(handed, pa.bool_()))


@ray.remote(num_cpus=0)
class _ChainFiles:
    """The files a chain's stages have written: a stage is complete once its files hold as many rows as the stage
    before it handed on (the first: the source's), and marked done (``_SUCCESS``) when it is complete and every stage
    before it handed on all its rows, so in stage order."""

    def __init__(self, run_dir: RunDir, names: dict[str, str], rows: int, done: Callable[[str], None]):
        self.run_dir, self.names, self.paths, self.rows, self.done = run_dir, names, list(names), rows, done
        self.files: dict[str, dict[str, int]] = {p: {} for p in names}
        self.written: dict[str, int] = dict.fromkeys(names, 0)
        """Each stage's rows in its files, kept as they come (a sum over the files at each batch grew with their
        number squared)."""
        self.left: dict[str, set[str]] = {p: set() for p in names}
        self.complete: dict[str, float] = {}
        self.marked: set[str] = set()

    def wrote(self, path: str, file: str, rows: int, left: list[str]) -> None:
        """A stage's file of ``rows`` rows, and the ids of them it did not hand on."""
        self.written[path] += rows - self.files[path].get(file, 0)  # a retried task's file replaces its first
        self.files[path][file] = rows
        self.left[path].update(left)
        expected, handed_all = self.rows, True
        for stage in self.paths:
            if self.written[stage] != expected:
                return
            self.complete.setdefault(stage, time.time())
            if handed_all and stage not in self.marked:
                self.run_dir.mark_done(stage)
                self.marked.add(stage)
                self.done(self.names[stage])
            expected, handed_all = self.written[stage] - len(self.left[stage]), handed_all and not self.left[stage]

    def ends(self) -> dict[str, tuple[int, int | None, float, bool, list[str]]]:
        """Per stage: rows written and expected, when it was complete (now, where not), whether it is marked done,
        the ids the stages before it did not hand on."""
        ends, expected, left = {}, self.rows, set()
        for path in self.paths:
            written = self.written[path]
            at = self.complete.get(path, time.time())
            ends[path] = (written, expected, at, path in self.marked, sorted(left))
            expected = None if expected is None or written != expected else written - len(self.left[path])
            left |= self.left[path]
        return ends


def count(run_dir: RunDir, path: str) -> int:
    """The rows of a stage directory (0 where it has none)."""
    dataset = run_dir.open_stage(path)
    return dataset.count_rows() if dataset else 0


def count_where(run_dir: RunDir, path: str, columns: list[str], predicate: Callable[[dict[str, Any]], bool]) -> int:
    """The rows of a stage directory for which ``predicate`` holds, read ``columns`` at a time."""
    return sum(
        predicate(dict(zip(b, values))) for b in run_dir.scan_columns(path, columns) for values in zip(*b.values())
    )
