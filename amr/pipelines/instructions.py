"""Instruction construction: seeds, self-instruct, Code Evol-Instruct rounds, filters and decontamination
(``amr instructions``; ``build`` runs all three steps).

Each step writes the kept instructions to the output (JSONL or Parquet, ready for `amr distill --input`) with
their lineage (``parent_id``, ``round``, ``heuristic``; self-instruct's ``examples``), and next to it:

- ``<output>.report.json``: rows requested and dropped by reason (teacher error, empty, too short or long,
  not a task, copy of parent, near-duplicate), and the decontamination's counts by check and by benchmark;
- ``<output>.removed.jsonl``: every row the decontamination removed, with the check, the benchmark item and
  the score;
- ``<output>.near.jsonl``: the kept rows near a benchmark item (cosine from ``decontam.judge_floor`` up to the
  threshold): with ``decontam.judge`` the teacher judged those pairs (the paper's method), without it they
  are for a person to read.

The rows stream. Ray workers read the input, ask the teacher, apply the text filters and the benchmark
checks; each step writes a stage directory under ``<output>.stages/``, in input order. The driver then
reads the checked rows a batch at a time, in order, for what must see them in order (the judge's verdicts,
the near-duplicate filter, the first ``self_instruct.count``) and writes the output. Its memory does not
grow with the rows; self-instruct holds its seed pool (the few-shot examples). An output whose report
exists is not recomputed; a cut-off step resumes from its finished stages (removed once the report is
written); evolution resumes at the first round without a report.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data.expressions import col

from amr import filters, storage
from amr.config import ConfigError, InstructionsConfig
from amr.data import iter_instructions, load_instructions
from amr.decontam import benchmark_items, problem_statement
from amr.embeddings import Embedder
from amr.engines import open_teacher
from amr.filters import NearDuplicates
from amr.logs import job_logs
from amr.prompts import instruction_evolution, judge, selfinstruct
from amr.runtime import init_ray, ordered
from amr.stages import ask, calls, teacher_counts
from amr.stages import decontaminate as decontaminate_stage
from amr.storage import RunDir, chunks

log = logging.getLogger(__name__)
INPUT, ANSWERED, CHECKED, JUDGED, DECIDED, ALL = (
    f"{name}.parquet" for name in ("input", "answered", "checked", "judged", "decided", "all")
)
FLAGS = ("contamination", "benchmark_id", "contamination_score", "near")
RESERVED = ("index", "dropped", *FLAGS)
"""Columns the stages add; an input field of one of these names is an error."""
EMPTY = pa.schema([("id", pa.string()), ("instruction", pa.string()), ("tests", pa.list_(pa.string()))])
"""The output's columns when no row reached it."""
REMOVED = {
    "id": "id",
    "contamination": "check",
    "benchmark_id": "benchmark_id",
    "contamination_score": "score",
    "instruction": "instruction",
}
"""A removed row's columns in ``<output>.removed.jsonl`` (stage column: its name there)."""


def round_path(output: str, number: int) -> str:
    """Where evolution round ``number`` of ``evolve``'s ``output`` is written: ``<stem>.round<number><suffix>``."""
    stem, suffix = os.path.splitext(storage.name(output))
    return storage.join(storage.parent(output), f"{stem}.round{number}{suffix}")


def report_path(output: str) -> str:
    return f"{output}.report.json"


def removed_path(output: str) -> str:
    return f"{output}.removed.jsonl"


def near_path(output: str) -> str:
    return f"{output}.near.jsonl"


def decontaminate(source: str, config: InstructionsConfig, output: str) -> dict[str, Any]:
    """Check ``source``'s instructions (their other fields kept); write the clean ones to ``output`` and the
    report and the removed and near rows next to it; return the report."""
    _check_output(output)
    with _stages(output, config) as run_dir:
        if not run_dir.stage_done(INPUT):
            run_dir.write_stage_rows(INPUT, _indexed(iter_instructions(source, keep_fields=True, reserved=RESERVED)))
        report = _decontaminated(run_dir, INPUT, config, output)
        _write_kept(run_dir, output, _decided(config))
        _write_report(output, report)
    return report


def self_instruct(source: str, config: InstructionsConfig, output: str) -> dict[str, Any]:
    """New instructions in the manner of seeds sampled from ``source``, filtered and decontaminated; the
    first ``self_instruct.count`` kept are written with their lineage (round 0, the examples' ids)."""
    _check_output(output)
    cfg = config.self_instruct
    pool = load_instructions(source)

    def requests() -> Iterator[dict[str, Any]]:
        rng = random.Random(cfg.seed)
        for i in range(math.ceil(cfg.count * cfg.oversample)):
            examples = rng.sample(pool, min(cfg.examples, len(pool)))
            yield {
                "id": f"si/{i}",
                "index": i,
                "examples": [e["id"] for e in examples],
                "example_texts": [problem_statement(e["instruction"]) for e in examples],
                "sampling": {**cfg.sampling.model_dump(), "seed": cfg.seed + i},
            }

    def row(r: dict[str, Any]) -> dict[str, Any]:
        instruction = selfinstruct.problem(r["si_response"])
        return {
            "id": r["id"],
            "instruction": instruction,
            "tests": [],
            "parent_id": None,
            "round": 0,
            "heuristic": "self-instruct",
            "examples": r["examples"],
            "index": r["index"],
            "dropped": "teacher error" if r["si_error"] else filters.text_reason(instruction, config.filters),
        }

    with _stages(output, config) as run_dir:
        if not run_dir.stage_done(INPUT):
            run_dir.write_stage_rows(INPUT, requests())
        report = _generated(
            run_dir,
            lambda r: selfinstruct.messages(r["example_texts"]),
            "si",
            row,
            config,
            output,
            _seen([source], config),
            limit=cfg.count,
        )
        _write_report(output, report)
    return report


def evolve(source: str, config: InstructionsConfig, output: str) -> dict[str, Any]:
    """``evolve.rounds`` rounds of Code Evol-Instruct from ``source``: round r rewrites round r-1's kept rows
    with one heuristic each. Each round is filtered, decontaminated and written as its own dataset
    (``<output stem>.round<r><suffix>``, resumable); ``output`` holds every round's rows."""
    _check_output(output)
    seen = _seen([source], config)
    parents, levels, rounds = source, [], []
    numbers = range(1, config.evolve.rounds + 1)
    with _checks_shared(config, [round_path(output, number) for number in numbers]):
        for number in numbers:
            level = round_path(output, number)
            if storage.exists(report_path(level)):  # done: its rows join the near-duplicate table, as when made
                _remember(seen, [level])
            else:
                _evolve_round(parents, number, config, seen, level)
            rounds.append({"round": number, **storage.read_json(report_path(level))})
            parents = level
            levels.append(level)
    report = {
        "rounds": [{k: v for k, v in r.items() if k != "decontamination"} for r in rounds],
        "kept": sum(r["kept"] for r in rounds),
    }
    with _stages(output, config) as run_dir:
        records = itertools.chain.from_iterable(iter_instructions(level, keep_fields=True) for level in levels)
        run_dir.write_stage_rows(ALL, _indexed(records))
        _write_kept(run_dir, output, ALL)
        _write_report(output, report)
    return report


def _evolve_round(parents: str, number: int, config: InstructionsConfig, seen: NearDuplicates, output: str) -> None:
    cfg = config.evolve

    def request(p: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"{p['id']}.e{number}",
            "index": p["index"],
            "parent_id": p["id"],
            "parent": p["instruction"],
            "heuristic": random.Random(f"{cfg.seed}:{p['id']}:{number}").choice(cfg.heuristics),
            "sampling": {**cfg.sampling.model_dump(), "seed": cfg.seed + number * 1_000_003 + p["index"]},
        }

    def row(r: dict[str, Any]) -> dict[str, Any]:
        instruction = instruction_evolution.rewritten(r["evol_response"])
        return {
            "id": r["id"],
            "instruction": instruction,
            "tests": [],
            "parent_id": r["parent_id"],
            "round": number,
            "heuristic": r["heuristic"],
            "index": r["index"],
            "dropped": "teacher error"
            if r["evol_error"]
            else filters.text_reason(instruction, config.filters, r["parent"]),
        }

    with _stages(output, config) as run_dir:
        if not run_dir.stage_done(INPUT):
            run_dir.write_stage_rows(INPUT, map(request, _indexed(iter_instructions(parents))))
        report = _generated(
            run_dir,
            lambda r: instruction_evolution.messages(r["parent"], r["heuristic"]),
            "evol",
            row,
            config,
            output,
            seen,
        )
        kept = Counter(r["heuristic"] for r in iter_instructions(output, keep_fields=True))
        _write_report(output, {**report, "by_heuristic": dict(kept.most_common())})


def _generated(
    run_dir: RunDir,
    build: Callable[[dict[str, Any]], list[dict[str, str]]],
    name: str,
    row: Callable[[dict[str, Any]], dict[str, Any]],
    config: InstructionsConfig,
    output: str,
    seen: NearDuplicates,
    limit: int | None = None,
) -> dict[str, Any]:
    """The teacher answers each request (the stage ``INPUT``), ``row`` makes each answer a candidate with the
    reason it is ``dropped`` (None to keep it) -> ``ANSWERED``; the kept ones are decontaminated, and the
    novel ones (the first ``limit``) written to ``output``. Returns the report."""
    if not run_dir.stage_done(ANSWERED):
        if run_dir.open_stage(INPUT) is None:
            run_dir.write_stage_tables(ANSWERED, [])
        else:
            columns = calls(name)
            with open_teacher(config.teacher, config.model_store) as teacher:
                answered = ask(run_dir.read_stage(INPUT), teacher, build, name)
                run_dir.write_stage(ANSWERED, answered.map(lambda r: {**row(r), **{c: r[c] for c in columns}}))
    dropped = Counter(d for b in run_dir.scan_columns(ANSWERED, ["dropped"]) for d in b["dropped"] if d)
    usage = teacher_counts(run_dir.scan_columns(ANSWERED, calls(name)), name)
    decontamination = _decontaminated(
        run_dir,
        ANSWERED,
        config,
        output,
        lambda ds: ds.filter(expr=col("dropped").is_null()).drop_columns(["dropped", *calls(name)]),
    )
    kept = _write_kept(run_dir, output, _decided(config), seen=seen, limit=limit, dropped=dropped)
    report = {
        "requested": usage["rows"],
        "dropped": dict(dropped.most_common()),
        "kept": kept,
        "teacher": usage,
        "decontamination": decontamination,
    }
    if limit is not None:  # clean and novel rows past the first limit are not needed (nor checked for novelty)
        report["unused"] = decontamination["kept"] - dropped["near-duplicate"] - kept
    return report


def _decontaminated(
    run_dir: RunDir,
    source: str,
    config: InstructionsConfig,
    output: str,
    select: Callable[[ray.data.Dataset], ray.data.Dataset] = lambda ds: ds,
) -> dict[str, Any]:
    """Check the rows ``select`` takes of the stage ``source`` against the benchmarks (-> ``CHECKED``), then
    with the judge if configured (-> ``DECIDED``); write the removed and the near rows next to ``output``;
    return the counts."""
    start = time.perf_counter()
    if not run_dir.stage_done(CHECKED):
        if run_dir.open_stage(source) is None:
            run_dir.write_stage_tables(CHECKED, [])
        else:
            with decontaminate_stage.embedders(config.decontam, config.embedding, config.model_store) as embedder:
                checked = decontaminate_stage.run(
                    select(run_dir.read_stage(source)), config.decontam, config.embedding, config.model_store, embedder
                )
                run_dir.write_stage(CHECKED, checked)
    judged = _judge(run_dir, config) if config.decontam.judge else None
    decided = _decided(config)
    removed = pc.field("contamination").is_valid()
    near = pc.field("contamination").is_null() & (pc.list_value_length(pc.field("near")) > 0)
    folder = _folder(output)
    folder.write_jsonl_batches(
        storage.name(removed_path(output)),
        (
            b.select(list(REMOVED)).rename_columns(list(REMOVED.values()))
            for b in run_dir.scan_stage(decided, filter=removed)
        ),
    )
    folder.write_jsonl_batches(
        storage.name(near_path(output)),
        (b.select(["id", "near", "instruction"]) for b in run_dir.scan_stage(decided, filter=near)),
    )
    checks = Counter()
    by_check: dict[str, Counter] = {}
    rows_in = near_kept = 0
    for batch in run_dir.scan_columns(decided, ["contamination", "benchmark_id", "near"]):
        rows_in += len(batch["contamination"])
        for check, benchmark, nearby in zip(batch["contamination"], batch["benchmark_id"], batch["near"]):
            if check:
                checks[check] += 1
                by_check.setdefault(check, Counter())[_benchmark(benchmark)] += 1
            elif nearby:
                near_kept += 1
    by_benchmark = sum(by_check.values(), Counter())
    return {
        "input_rows": rows_in,
        "kept": rows_in - checks.total(),
        "removed": checks.total(),
        "by_check": dict(checks.most_common()),
        "by_benchmark": dict(by_benchmark.most_common()),
        "by_check_and_benchmark": {c: dict(by_check[c].most_common()) for c, _ in checks.most_common()},
        "near_kept": near_kept,
        "judge": judged,
        "config": config.decontam.model_dump(),
        "seconds": round(time.perf_counter() - start, 1),
        "removed_rows": removed_path(output),
        "near_rows": near_path(output),
    }


def _judge(run_dir: RunDir, config: InstructionsConfig) -> dict[str, int]:
    """The teacher judges each clean row of ``CHECKED`` against its near benchmark items (``JUDGED``, one row
    per pair, in row order); a row judged the same problem as one is flagged ``judge`` (the most similar such
    item) in ``DECIDED``. Returns the verdict counts."""
    if not run_dir.stage_done(JUDGED):
        problems = {item["id"]: item["problem"] for item in benchmark_items(config.decontam.benchmarks)}

        def pairs(r: dict[str, Any]) -> list[dict[str, Any]]:
            return [
                {
                    "id": f"{r['id']}\t{n['benchmark_id']}",
                    "index": r["index"],
                    "benchmark_id": n["benchmark_id"],
                    "score": n["score"],
                    "messages": judge.messages(problems[n["benchmark_id"]], r["instruction"]),
                }
                for n in (r["near"] if r["contamination"] is None else [])
            ]

        def verdict(r: dict[str, Any]) -> dict[str, Any]:
            return {
                **{k: r[k] for k in ("index", "benchmark_id", "score", "error")},
                "same": judge.verdict(r["response"]),
            }

        if not any(any(b["near"]) for b in run_dir.scan_columns(CHECKED, ["near"])):
            run_dir.write_stage_tables(JUDGED, [])
        else:
            with open_teacher(config.teacher, config.model_store) as teacher:
                answers = teacher.generate(
                    teacher.batched(run_dir.read_stage(CHECKED).flat_map(pairs)),
                    carry=("index", "benchmark_id", "score"),
                )
                run_dir.write_stage(JUDGED, answers.map(verdict))
    stats = {"pairs": 0, "same": 0, "different": 0, "unparsed": 0, "errors": 0}
    for batch in run_dir.scan_columns(JUDGED, ["error", "same"]):
        for error, same in zip(batch["error"], batch["same"]):
            stats["pairs"] += 1
            stats["errors" if error else {True: "same", False: "different", None: "unparsed"}[same]] += 1
    if not run_dir.stage_done(DECIDED):
        run_dir.write_stage_tables(DECIDED, _verdicts_applied(run_dir))
    return stats


def _verdicts_applied(run_dir: RunDir) -> Iterator[pa.Table]:
    """``CHECKED``'s rows, a batch at a time, with the judge's flags: both stages are in row order, so each
    row's pairs are the next ones of ``JUDGED``."""
    hits = (
        p
        for b in run_dir.scan_stage(JUDGED, ["index", "benchmark_id", "score", "error", "same"])
        for p in b.to_pylist()
        if p["same"] and not p["error"]
    )
    hit = next(hits, None)
    for batch in run_dir.scan_stage(CHECKED):
        rows = batch.to_pylist()
        for r in rows:
            best = None
            while hit is not None and hit["index"] <= r["index"]:
                if hit["index"] == r["index"] and (best is None or hit["score"] > best["score"]):
                    best = hit
                hit = next(hits, None)
            if best:  # pairs come from clean rows only
                r.update(contamination="judge", benchmark_id=best["benchmark_id"], contamination_score=best["score"])
        yield pa.Table.from_pylist(rows, batch.schema)


def _write_kept(
    run_dir: RunDir,
    output: str,
    stage: str,
    seen: NearDuplicates | None = None,
    limit: int | None = None,
    dropped: Counter | None = None,
) -> int:
    """Write the clean rows of ``stage`` to ``output`` in input order, without the stages' columns: with
    ``seen``, only those that are not near-duplicates (counted in ``dropped``), and only the first ``limit``.
    Returns their number."""
    dataset = run_dir.open_stage(stage)
    schema = pa.schema([f for f in dataset.schema if f.name not in RESERVED]) if dataset else EMPTY
    clean = pc.field("contamination").is_null() if dataset and "contamination" in dataset.schema.names else None
    kept, last = 0, -1

    def tables() -> Iterator[pa.Table]:
        nonlocal kept, last
        for batch in run_dir.scan_stage(stage, filter=clean):
            index = np.asarray(batch.column("index"))
            if len(index) and (index[0] <= last or np.any(np.diff(index) <= 0)):
                raise RuntimeError(f"{run_dir.path(stage)}: rows out of input order")  # Ray Data's preserve_order
            last = index[-1] if len(index) else last
            table = pa.Table.from_batches([batch]).select(schema.names)
            if seen is not None and table.num_rows:
                novel = seen.keep(table.column("instruction").to_pylist())
                if repeats := novel.count(False):
                    dropped["near-duplicate"] += repeats
                table = table.filter(pa.array(novel))
            table = table.slice(0, None if limit is None else limit - kept)
            kept += table.num_rows
            yield table
            if limit is not None and kept >= limit:
                return

    folder, name = _folder(output), storage.name(output)
    if name.endswith(".parquet"):
        folder.write_parquet_tables(name, tables(), schema)
    else:
        folder.write_jsonl_batches(name, tables())
    return kept


def _seen(sources: list[str], config: InstructionsConfig) -> NearDuplicates:
    """The near-duplicate table, holding ``sources``' rows (a new instruction must differ from its sources too)."""
    e = config.embedding
    embedder = Embedder(e.model, config.model_store, e.batch_size, trust_remote_code=e.trust_remote_code)
    seen = NearDuplicates(embedder, config.filters.near_duplicate)
    _remember(seen, sources)
    return seen


def _remember(seen: NearDuplicates, sources: list[str]) -> None:
    """The files' rows join ``seen``, a chunk at a time."""
    for chunk in chunks(itertools.chain.from_iterable(iter_instructions(s, keep_fields=True) for s in sources)):
        seen.keep([r["instruction"] for r in chunk])


def _indexed(records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return ({**r, "index": i} for i, r in enumerate(records))


@contextmanager
def _stages(output: str, config: InstructionsConfig) -> Iterator[RunDir]:
    """The step's stage directories, ``<output>.stages/``, with Ray (started if need be) keeping rows in
    order: kept when the step fails (a rerun resumes from them), removed once it is done. Its logs:
    ``<output>.logs/`` (a local folder when the output is in an object store, ``amr.logs``)."""
    stages = f"{output}.stages"
    with job_logs(storage.parent(output), f"{storage.name(output)}.logs"):
        init_ray(config.ray)
        with ordered():
            yield RunDir(stages)
    storage.remove(stages)


def _checks_shared(config: InstructionsConfig, outputs: list[str]) -> AbstractContextManager:
    """The checks' embedding actors (``amr.stages.decontaminate.embedders``), started once for the steps that write
    ``outputs`` and are not done yet (each start loads the model in a new process, ~9 s of 2 CPUs); none when all
    are done."""
    if all(storage.exists(report_path(output)) for output in outputs):
        return nullcontext()
    init_ray(config.ray)
    return decontaminate_stage.embedders(config.decontam, config.embedding, config.model_store)


def _decided(config: InstructionsConfig) -> str:
    """The stage that holds the decontamination's verdicts."""
    return DECIDED if config.decontam.judge else CHECKED


def _folder(output: str) -> RunDir:
    """The output's directory: the report, the removed and near rows and the reports go there too."""
    return RunDir(storage.parent(output))


def _check_output(output: str) -> None:
    if os.path.splitext(output)[1] not in (".jsonl", ".parquet"):
        raise ConfigError(f"output: {output}: must be a .jsonl or .parquet file")


def _write_report(output: str, report: dict[str, Any]) -> None:
    """Its presence marks the output done."""
    storage.write_text(report_path(output), json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def _benchmark(benchmark_id: str) -> str:
    name = benchmark_id.split("/")[0]
    return {"HumanEval": "HumanEval+", "Mbpp": "MBPP+", "mbpp": "MBPP"}.get(name, name)


EVOLVED = "evolved.jsonl"
"""``build``'s evolution output; its rounds (levels) beside it (``round_path``)."""
BUILD_STEPS = (
    ("seeds.jsonl", "mbpp-train-raw", decontaminate),  # all of MBPP train: the step's report says what goes
    ("self-instruct.jsonl", "seeds.jsonl", self_instruct),
    (EVOLVED, "self-instruct.jsonl", evolve),
)
"""``build``'s steps: output file, source (the one before it, under the same folder) and step."""


def build(config: InstructionsConfig, folder: str | Path) -> str:
    """Every step: seeds (MBPP train, decontaminated) -> self-instruct -> evolution rounds, under ``folder``;
    returns the file of all their instructions (``all.jsonl``, what ``amr distill`` reads). ``folder`` may be an
    object-store URI. Finished steps are skipped, a cut-off one resumes."""
    folder = str(folder)
    everything = storage.join(folder, "all.jsonl")
    with _checks_shared(config, [storage.join(folder, name) for name, _, _ in BUILD_STEPS]):
        for name, source, step in BUILD_STEPS:
            output = storage.join(folder, name)
            if storage.exists(report_path(output)):
                log.info("instructions: %s done already (%s)", name, output)
                continue
            log.info("instructions: %s -> %s", name, output)
            step(source if source == "mbpp-train-raw" else storage.join(folder, source), config, output)
    if not storage.exists(everything):  # streamed: the lineage stays in the steps' files
        records = itertools.chain.from_iterable(
            iter_instructions(storage.join(folder, name)) for name, _, _ in BUILD_STEPS
        )
        RunDir(folder).write_jsonl_batches("all.jsonl", (pa.Table.from_pylist(chunk) for chunk in chunks(records)))
    return everything
