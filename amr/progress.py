"""What a long job shows while it works: a bar per stage (rows done of total, rate, ETA, teacher output tokens
per second) on a terminal, and one log line per finished stage or wave everywhere (``amr`` loggers).

The Ray workers that make a stage's rows report each batch to one counter actor (a call per batch, waited
for, so that a finished stage's count is exact); the driver reads it twice a second. Ray Data's own progress
bars are off (``amr.runtime``): one display.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

console = Console(stderr=True)
"""The terminal: progress bars and the ``amr`` loggers' lines (``jobs.common.setup_logging``) share it."""
log = logging.getLogger(__name__)


@ray.remote(num_cpus=0)
class _Counter:
    """Rows and teacher output tokens done, per stage."""

    def __init__(self) -> None:
        self.done: dict[str, list[int]] = {}

    def add(self, stage: str, rows: int, tokens: int) -> None:
        counts = self.done.setdefault(stage, [0, 0])
        counts[0] += rows
        counts[1] += tokens

    def read(self) -> dict[str, list[int]]:
        return self.done


class StageProgress:
    """``with StageProgress() as progress``: ``progress.counted(ds, stage, total, tokens)`` counts a stage's rows
    as the workers make them; ``progress.advance`` counts rows the driver makes (a wave); ``progress.finished``
    logs the stage's line."""

    def __init__(self, poll_s: float = 0.5):
        self.poll_s = poll_s
        self.bars = Progress(
            TextColumn("{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[tokens]}"),
            console=console,
            disable=not console.is_terminal,
        )
        self.tasks: dict[str, tuple[TaskID, float]] = {}  # stage: (bar, start)
        self.counts: dict[str, list[int]] = {}  # rows and tokens per stage (the counter's, or the driver's)
        self._counter: Any = None
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="stage-progress", daemon=True)

    def __enter__(self) -> StageProgress:
        self.bars.start()
        self._poller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._poller.join()
        self.bars.stop()
        if self._counter is not None:
            ray.kill(self._counter)

    def counted(self, ds: ray.data.Dataset, stage: str, total: int | None, tokens: str | None) -> ray.data.Dataset:
        """``ds`` with its rows counted as they are made; ``tokens``: the column of teacher output tokens."""
        self.start(stage, total)
        if self._counter is None:  # on the driver's node: a worker node lost mid-job does not take it along
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
            self._counter = _Counter.options(scheduling_strategy=here).remote()
        counter = self._counter

        def report(batch: pa.Table) -> pa.Table:
            made = pa.compute.sum(batch.column(tokens)).as_py() if tokens and tokens in batch.column_names else 0
            try:
                ray.get(counter.add.remote(stage, batch.num_rows, int(made or 0)))
            except ray.exceptions.RayActorError:  # the display loses a count, the stage loses nothing
                pass
            return batch

        return ds.map_batches(report, batch_format="pyarrow", zero_copy_batch=True)

    def start(self, stage: str, total: int | None) -> None:
        if stage not in self.tasks:
            bar = self.bars.add_task(stage, total=total, rate="", tokens="")
            self.tasks[stage] = (bar, time.perf_counter())
            self.counts.setdefault(stage, [0, 0])

    def advance(self, stage: str, rows: int, tokens: int = 0) -> None:
        counts = self.counts[stage]
        counts[0] += rows
        counts[1] += tokens
        self._show(stage)

    def finished(self, stage: str, line: Callable[[], str] | None = None) -> None:
        """Log the stage's line: its rows, time, rate and tokens/s (and ``line()``, what else it did)."""
        if stage not in self.tasks:
            return
        self._read()
        rows, tokens = self.counts[stage]
        seconds = time.perf_counter() - self.tasks[stage][1]
        self._show(stage)
        rate = f", {tokens / seconds:.0f} output tokens/s" if tokens else ""
        extra = f"; {line()}" if line else ""
        log.info(
            "%s: %d rows in %.0f s (%.2f rows/s%s)%s", stage, rows, seconds, rows / max(seconds, 1e-9), rate, extra
        )

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            if self._counter is not None:
                self._read()
                for stage in self.tasks:
                    self._show(stage)

    def _read(self) -> None:
        if self._counter is None:
            return
        try:
            for stage, counts in ray.get(self._counter.read.remote(), timeout=10).items():
                self.counts[stage] = list(counts)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
            pass  # the display skips a beat; the stage's rows are counted from its files at the end

    def _show(self, stage: str) -> None:
        bar, began = self.tasks[stage]
        rows, tokens = self.counts[stage]
        seconds = max(time.perf_counter() - began, 1e-9)
        self.bars.update(
            bar,
            completed=rows,
            rate=f"{rows / seconds:.2f} rows/s",
            tokens=f"{tokens / seconds:.0f} tok/s" if tokens else "",
        )
