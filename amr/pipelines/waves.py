"""Waves: retrieval, adaptive response evolution (ARE) and the module table's growth, over a method's rows in input
order, ``wave_size`` rows a wave; and the table's bootstrap (``amr modules bootstrap``).

Each wave retrieves from one pinned table version and commits the next: its answers' novel functions get
teacher-written tests, run in the sandbox, and those that pass are inserted under the job's lease, by one writer in
wave order. Waves overlap: wave k retrieves from the version that wave k-1-s committed (``modules.staleness`` s), so
its rewrites, and then its tests, are with the teacher while the waves before it still test and insert theirs: the
tests of s+1 waves share the engines, and no wave waits for another's slowest answer unless it reads what that wave
adds. At most s+1 waves are in flight (evolving, testing, or waiting for their turn to insert). s = 0 is the strict
order: each wave sees every earlier wave's functions (with wave_size 1, the paper's sequence).
A wave's novelty check is in two steps: before its tests, against the version it retrieved from; at its turn to
insert, its verified functions against what the waves before it inserted since (``version_novelty``: its
predecessor's commit), so that what an earlier wave inserted, even while this one tested it, is not inserted again.
(A function whose twin in its own wave was dropped by the second step is not inserted either: it was never tested.)

A wave's files: ``waves/NNNNN.json`` (its pin: the versions it read, its timings and inserts), ``growth/NNNNN.parquet``
(every candidate function's outcome) and ``waves/NNNNN.parquet`` (its rows, written last: the wave is done). A rerun
resumes: done waves are read back, a cut-off wave reads the versions it pinned, inserts are merge-inserts (a function
is inserted once however often its wave runs). The versions a wave reads stay readable while a rerun may read them
again: tagged until its rows are written and none of them can be asked again (``amr.modules.ModuleDB.pin``); the
table's upkeep every ``modules.upkeep_every`` waves removes the others.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from amr import preflight
from amr.ann import Upkeep
from amr.config import ConfigError, DistillConfig
from amr.data import load_instructions
from amr.embeddings import EmbedderActors, open_embedders
from amr.engines import Teacher, fault_counts, open_teacher
from amr.lease import Lease
from amr.modules import UPKEEP, ModuleDB
from amr.pipelines.job import Job
from amr.runtime import init_ray
from amr.sandbox.stage import SandboxActors, open_sandbox
from amr.stages import calls, grow, response_evolution, retrieve, teacher_counts
from amr.storage import RunDir, Slices

log = logging.getLogger(__name__)
WAVES, GROWTH = "waves", "growth"


@dataclass(frozen=True)
class Wave:
    """The rows of input indices ``first`` to ``last`` (excluded), the ``number``-th wave, and its files."""

    number: int
    first: int
    last: int

    @property
    def rows_path(self) -> str:
        return f"{WAVES}/{self.number:05d}.parquet"

    @property
    def growth_path(self) -> str:
        return f"{GROWTH}/{self.number:05d}.parquet"

    @property
    def pin_path(self) -> str:
        return f"{WAVES}/{self.number:05d}.json"

    def tag(self, run_id: str, read: str) -> str:
        """The table tag that keeps the version this wave reads for ``read`` (retrieval, novelty) readable."""
        return f"{run_id}.wave-{self.number:05d}.{read}"


def run(job: Job, source: str) -> dict[str, Any]:
    """The waves over the rows of the stage ``source``, each read as one slice of it, overlapping as
    ``modules.staleness`` allows; the table is read and grown under the job's lease (the ablation without retrieval
    has none). Returns the manifest's module-table entry (empty without a table)."""
    config, run_dir, stages = job.config, job.run_dir, job.stages
    db, run_id = (None, "") if not (job.lease and job.embedders) else _table(config, run_dir, job.embedders, job.lease)
    if db:
        stages["bootstrap"] = _bootstrap(config, job.teacher, job.sandbox, db, job.embedders, run_dir, run_id)
    size, staleness = config.wave_size, config.modules.staleness
    waves = [Wave(n, first, min(first + size, job.total)) for n, first in enumerate(range(0, job.total, size))]
    slices = Slices(run_dir.open_stage(source), "index")
    start, began = db.version if db else None, time.perf_counter()
    job.progress.start("waves", job.total)
    committed: list[Future] = []
    with ThreadPoolExecutor(staleness + 1, "evolve") as evolving, ThreadPoolExecutor(1, "grow") as growing:
        try:
            for wave in waves:
                done = run_dir.read_table(wave.rows_path).to_pylist() if run_dir.exists(wave.rows_path) else None
                stale = None if done is None else {r["id"] for r in done if r["are_error"] or r["id"] in job.redo}
                if done is not None and not stale:
                    committed.append(growing.submit(_resumed, job, wave))
                    continue
                before = wave.number - 1 - staleness  # the wave whose commit this one reads
                read = start if before < 0 else committed[before].result()["version_after"]
                evolved = evolving.submit(_evolve, job, db, run_id, wave, slices, read, stale)
                committed.append(growing.submit(_commit, job, db, run_id, wave, evolved, done, stale, len(waves)))
            pins = [c.result() for c in committed]
        except BaseException:
            evolving.shutdown(cancel_futures=True)
            growing.shutdown(cancel_futures=True)
            raise
    job.progress.finished("waves")
    stages["waves"] = {"wall_time_s": round(time.perf_counter() - began, 1)}  # the waves overlap: not their sum
    stages["evolve"] = teacher_counts(run_dir.scan_columns(WAVES, calls("are")), "are")
    stages["evolve"]["kept_direct"] = dict(
        Counter(why for b in run_dir.scan_columns(WAVES, ["are_kept"]) for why in b["are_kept"] if why)
    )
    if not job.method.gated:  # the paper's answer heading: answers without it were taken whole
        stages["evolve"]["without_heading"] = sum(
            heading is False and not error
            for b in run_dir.scan_columns(WAVES, ["are_heading", "are_error"])
            for heading, error in zip(b["are_heading"], b["are_error"])
        )
    if not db:
        return {}  # no table: nothing to report of one
    db.upkeep(keep_from=None, force=True)  # indexed for the next job; its periodic upkeeps remove old versions
    stages["grow"] = _growth_counts(run_dir.scan_columns(GROWTH, GROWTH_COLUMNS))
    listed = [{"wave": w.number, "rows": w.last - w.first, **pin} for w, pin in zip(waves, pins)]
    return {"uri": db.uri, "table": db.name, "rows": db.count(), "version": db.version, "waves": listed}


def _resumed(job: Job, wave: Wave) -> dict[str, Any]:
    """A wave done before this run: its pin (in order with the waves committed now)."""
    job.progress.advance("waves", wave.last - wave.first)
    return job.run_dir.read_json(wave.pin_path)


def _evolve(
    job: Job,
    db: ModuleDB | None,
    run_id: str,
    wave: Wave,
    slices: Slices,
    version: int | None,
    stale: set[str] | None,
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, float], list[dict[str, Any]]]:
    """A wave's rows (``stale``: only those, of a wave done before) retrieved for from the table at ``version`` (or
    the version its pin names, for a wave cut off before), evolved, and their answers' functions that are novel at
    that version tested: its pin, the answered rows in input order, the seconds each step took, and every candidate's
    outcome (the verified ones with their vectors), all before the wave's turn to insert."""
    run_dir, config, chosen = job.run_dir, job.config, job.method
    began = time.perf_counter()
    pin = run_dir.read_json(wave.pin_path) if run_dir.exists(wave.pin_path) else {"version_read": version}
    run_dir.write_json(wave.pin_path, pin)
    if db:
        db.pin(wave.tag(run_id, "read"), pin["version_read"])
    rows = sorted(
        (r for b in slices.read(wave.first, wave.last) for r in b.to_pylist() if stale is None or r["id"] in stale),
        key=lambda r: r["index"],
    )
    seconds: dict[str, float] = {}
    read = pin["version_read"]
    embedded = {
        text: vector
        for r in rows
        for text, vector in zip(retrieve.queries(r, chosen.query), r.get("query_vectors") or ())
    }
    with _timed(seconds, "retrieve"):
        if not chosen.retrieves:
            rows = [{**r, "retrieved": "[]", "module_version": read} for r in rows]
        else:
            rows = [
                {k: v for k, v in r.items() if k != "query_vectors"}
                for r in retrieve.run(
                    rows, db, read, k=config.modules.top_k, min_similarity=config.modules.min_similarity
                )
            ]
    with _timed(seconds, "evolve"):
        answered = response_evolution.run(rows, job.teacher, use_retrieved=chosen.retrieves, gated=chosen.gated)
    tested = (
        _tested(grow.candidates(answered), config, job.teacher, job.sandbox, db, job.embedders, read, seconds, embedded)
        if db
        else []
    )
    seconds["began"] = began
    return pin, answered, seconds, tested


def _commit(
    job: Job,
    db: ModuleDB | None,
    run_id: str,
    wave: Wave,
    evolved: Future,
    done: list[dict[str, Any]] | None,
    stale: set[str] | None,
    count: int,
) -> dict[str, Any]:
    """A wave's turn to insert, after the waves before it committed theirs: its verified functions that are still
    novel (against what they inserted since its tests began) inserted; then its files, the wave's rows last. Returns
    its pin."""
    run_dir = job.run_dir
    pin, answered, seconds, outcomes = evolved.result()
    began = seconds.pop("began")
    if db:
        pin.setdefault("version_novelty", db.version)  # what the waves before it inserted, all of it
        run_dir.write_json(wave.pin_path, pin)
        db.pin(wave.tag(run_id, "novelty"), pin["version_novelty"])
        outcomes = _inserted(
            outcomes, job.config, db, pin["version_read"], pin["version_novelty"], run_id, "growth", seconds
        )
    tokens = sum(r["are_output_tokens"] or 0 for r in answered)
    if stale:  # the rows kept, and their growth, with the new ones
        answered = sorted([r for r in done if r["id"] not in stale] + answered, key=lambda r: r["index"])
        kept = run_dir.read_table(wave.growth_path).to_pylist() if run_dir.exists(wave.growth_path) else []
        outcomes = [o for o in kept if o["instruction_id"] not in stale] + outcomes
        pin["asked_again"] = len(stale)
        job.redo |= stale
    pin["seconds"] = seconds
    # counted, not returned: a rerun of a cut-off wave finds its inserts already there
    pin["inserted"] = db.count(run=run_id, stage="growth", instruction_id=[r["id"] for r in answered]) if db else 0
    pin["version_after"] = db.version if db else None
    if db:  # the waves after it read this wave's version_read or later
        with _timed(seconds, "upkeep"):
            pin["upkeep"] = db.upkeep(keep_from=pin["version_read"])  # what it did (None: not yet its turn)
    pin["wall_time_s"] = round(time.perf_counter() - began, 1)
    run_dir.write_json(wave.pin_path, pin)
    if outcomes:
        run_dir.write_rows(wave.growth_path, outcomes)
    run_dir.write_rows(wave.rows_path, answered)  # last: its presence marks the wave done
    if db and not _redoable(answered):
        for read in ("read", "novelty"):
            db.unpin(wave.tag(run_id, read))
    job.progress.advance("waves", wave.last - wave.first, tokens)
    log.info("wave %d/%d: %s", wave.number + 1, count, _wave_line(answered, outcomes, pin, stale))
    return pin


def _redoable(rows: list[dict[str, Any]]) -> bool:
    """Whether a rerun may ask some of a wave's rows again (a teacher call of theirs failed, at any stage): it then
    reads the table versions the wave pinned."""
    return any(value for row in rows for column, value in row.items() if column.endswith("_error"))


def _wave_line(
    answered: list[dict[str, Any]], outcomes: list[dict[str, Any]], pin: dict[str, Any], stale: set[str] | None
) -> str:
    """A wave's line: its rows, those that retrieved a function, its new functions and what became of them."""
    retrieved = sum(response_evolution.matched(r) for r in answered)
    kept = sum(r["are_kept"] is not None for r in answered)
    verdicts = Counter(o["outcome"] for o in outcomes)
    again = f" ({len(stale)} asked again)" if stale else ""
    if pin["version_after"] is None:  # no table
        return f"{len(answered)} rows{again} ({pin['wall_time_s']:.0f} s)"
    return (
        f"{len(answered)} rows{again}, {retrieved} retrieved a function from version {pin['version_read']}"
        f"{f' ({kept} kept R_d)' if kept else ''}; {len(outcomes)} new functions "
        f"({', '.join(f'{n} {k}' for k, n in sorted(verdicts.items())) or 'none'}), {pin['inserted']} inserted; "
        f"table version {pin['version_after']} ({pin['wall_time_s']:.0f} s)"
    )


def _tested(
    candidates: list[dict[str, Any]],
    config: DistillConfig,
    teacher: Teacher,
    sandbox: SandboxActors,
    db: ModuleDB,
    embedder: EmbedderActors,
    version: int,
    seconds: dict[str, float],
    embedded: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The candidates novel at ``version`` get tests and the sandbox: every candidate's outcome, the verified ones
    with their vectors (adds each step's time to ``seconds``); ``embedded``: texts' vectors the novelty check
    reuses."""
    with _timed(seconds, "novelty"):
        kept, rejected = grow.novel(candidates, db, embedder, version, config.modules.novelty_threshold, embedded)
    with _timed(seconds, "verify"):
        return [*grow.verify(kept, teacher, sandbox), *rejected]


def _inserted(
    outcomes: list[dict[str, Any]],
    config: DistillConfig,
    db: ModuleDB,
    tested_at: int,
    version: int,
    run_id: str,
    stage: str,
    seconds: dict[str, float],
) -> list[dict[str, Any]]:
    """The verified functions of ``outcomes`` (tested as novel at version ``tested_at``) that are novel against the
    modules added after it up to ``version`` too, inserted. Returns every outcome, without vectors."""
    with _timed(seconds, "novelty"):
        outcomes = grow.still_novel(outcomes, db, tested_at, version, config.modules.novelty_threshold)
    with _timed(seconds, "insert"):
        grow.insert(outcomes, db, run_id, stage)
    return [{k: v for k, v in c.items() if k != "vector"} for c in outcomes]


def embedders(config: DistillConfig) -> AbstractContextManager[EmbedderActors]:
    """The job's embedding actors, as ``embedding`` sets them (an enclosing ``open_embedders``'s of the same settings)."""
    return open_embedders(config.embedding, config.model_store)


def _table(config: DistillConfig, run_dir: RunDir, embedder: EmbedderActors, lease: Lease) -> tuple[ModuleDB, str]:
    """The module table, written under ``lease``, and the run id (the run directory's name) its rows are tagged
    with."""
    upkeep = Upkeep(config.modules.index_min_rows, config.modules.upkeep_every, UPKEEP.scalar)
    db = ModuleDB(_table_uri(config, run_dir), embedder.dim, config.modules.table, lease.check, upkeep)
    if built := db.index():  # the vector index, from the table as a job starts or resumes
        log.info("module table %s: vector index of %d rows built in %.1f s", db.uri, db.vectors.rows, built["seconds"])
    return db, run_dir.uri.rsplit("/", 1)[-1]


def _table_uri(config: DistillConfig, run_dir: RunDir) -> str:
    return config.modules.uri or run_dir.path("modules")


def lease(config: DistillConfig, run_dir: RunDir) -> Lease:
    """The module table's writer lease, held by this run directory (``amr.lease``)."""
    return Lease(_table_uri(config, run_dir), config.modules.table, run_dir.uri, config.modules.lease_ttl_s)


def bootstrap(config: DistillConfig) -> dict[str, Any]:
    """``amr modules bootstrap``: solutions as small functions for ``modules.bootstrap_from`` (default: the input),
    teacher tests, the sandbox, the verified ones inserted, whatever the table holds already.
    Resumable like the job (``<run_dir>/bootstrap.parquet`` marks it done)."""
    if not config.modules.bootstrap_limit:
        raise ConfigError("modules.bootstrap_limit is 0: no instruction to bootstrap from")
    run_dir = RunDir(config.run_dir)
    init_ray(config.ray)
    preflight.run(config)
    with (
        lease(config, run_dir) as held,
        open_sandbox(config.sandbox) as sandbox,
        embedders(config) as embedder,
        open_teacher(config.teacher, config.model_store) as teacher,
    ):
        db, run_id = _table(config, run_dir, embedder, held)
        report = _bootstrap(config, teacher, sandbox, db, embedder, run_dir, run_id, always=True)
    return {**report, "table": {"uri": db.uri, "rows": db.count(), "version": db.version}}


def _bootstrap(
    config: DistillConfig,
    teacher: Teacher,
    sandbox: SandboxActors,
    db: ModuleDB,
    embedder: EmbedderActors,
    run_dir: RunDir,
    run_id: str,
    always: bool = False,
) -> dict[str, Any]:
    """Seed the table (unless ``always``, only an empty one): solutions as small functions, teacher tests,
    sandbox (``bootstrap.parquet`` marks it done)."""
    done = "bootstrap.parquet"
    if not run_dir.exists(done):
        if not always and (db.count() or not config.modules.bootstrap_limit):
            return {
                "skipped": "modules.bootstrap_limit is 0"
                if not config.modules.bootstrap_limit
                else "the table has modules"
            }
        began = time.perf_counter()
        records = load_instructions(
            config.modules.bootstrap_from or config.input.source, config.modules.bootstrap_limit
        )
        answered = grow.bootstrap(records, teacher)
        rows = [{"id": r["id"], "bootstrap_response": r["bootstrap_response"] or ""} for r in answered]
        version, seconds = db.version, {}
        tested = _tested(
            grow.candidates(rows, "bootstrap_response"), config, teacher, sandbox, db, embedder, version, seconds
        )
        outcomes = _inserted(tested, config, db, version, version, run_id, "bootstrap", seconds)
        run_dir.write_rows(done, outcomes or [{"outcome": "none"}])
        counts = teacher_counts([{c: [r[c] for r in answered] for c in calls("bootstrap")}], "bootstrap")
        counts["wall_time_s"] = round(time.perf_counter() - began, 1)
    else:
        counts = {"resumed": True}
    outcomes = run_dir.read_table(done).to_pydict()
    return {**counts, **_growth_counts([outcomes]), "inserted": db.count(run=run_id, stage="bootstrap")}


GROWTH_COLUMNS = ["outcome", "test_input_tokens", "test_output_tokens", "test_error", "test_faults", "test_finish"]


def _growth_counts(batches: Iterable[dict[str, list[Any]]]) -> dict[str, Any]:
    """Candidates by outcome, and the teacher calls, tokens, faults (``fault_counts``) and endings of their tests."""
    outcomes: Counter[str] = Counter()
    finished: Counter[str] = Counter()
    calls = inputs = outputs = 0
    faults, errors = [], []
    for batch in batches:
        n = len(batch["outcome"])
        for outcome, tin, tout, error, fault, finish in zip(*(batch.get(c, [None] * n) for c in GROWTH_COLUMNS)):
            if outcome == "none":
                continue
            outcomes[outcome] += 1
            if tin is not None:
                calls, inputs, outputs = calls + 1, inputs + tin, outputs + tout
                faults.append(fault)
                errors.append(error)
                finished.update([finish] if finish else [])
    return {
        "candidates": dict(sorted(outcomes.items())),
        "test_calls": calls,
        "test_input_tokens": inputs,
        "test_output_tokens": outputs,
        "test_finished": dict(sorted(finished.items())),
        **fault_counts(faults, errors),
    }


@contextmanager
def _timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    began = time.perf_counter()
    yield
    seconds[step] = round(seconds.get(step, 0.0) + time.perf_counter() - began, 2)
