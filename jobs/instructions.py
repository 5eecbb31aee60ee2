"""Instruction construction: seeds, self-instruct, Code Evol-Instruct rounds, filters and decontamination.

    amr instructions seed --output seeds.jsonl                      MBPP train 601-974, decontaminated
    amr instructions self-instruct --input seeds.jsonl --output si.jsonl
    amr instructions evolve --input si.jsonl --output evol.jsonl    evol.round1.jsonl ... and all rounds
    amr instructions decontaminate --input F --output G

Each writes the kept instructions to the output (JSONL or Parquet, ready for `amr distill --input`) with
their lineage (``parent_id``, ``round``, ``heuristic``; self-instruct's ``examples``) and
``<output>.report.json``: rows requested and dropped by reason (teacher error, empty, too short or long,
not a task, copy of parent, near-duplicate), and the decontamination: counts by check and by benchmark,
every removed row with the check, the benchmark item and the score, and the kept rows near a benchmark
item (cosine from ``decontam.judge_floor`` up to the threshold): with ``decontam.judge`` the teacher judged
those pairs (the paper's method), without it they are for a person to read. An output whose report
exists is not recomputed; evolution resumes at the first round without one.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
import typer
from rich.console import Console
from rich.table import Table

from amr import filters
from amr.config import InstructionsConfig, load_config
from amr.data import load_instructions
from amr.decontam import benchmark_items, problem_statement
from amr.embeddings import Embedder
from amr.engines import Teacher
from amr.filters import NearDuplicates
from amr.prompts import evol, judge, selfinstruct
from amr.runtime import init_ray
from amr.serving import served
from amr.stages import ask
from amr.stages import decontaminate as decontaminate_stage
from amr.storage import RunDir

console = Console()
FLAGS = ("contamination", "benchmark_id", "contamination_score", "near")


def report_path(output: str) -> str:
    return f"{output}.report.json"


def decontaminate(records: list[dict[str, Any]], config: InstructionsConfig, output: str) -> dict[str, Any]:
    """Check ``records``; write the clean ones to ``output`` and the report next to it; return the report."""
    _check_output(output)
    kept, report = _decontaminated(records, config, Path(output).parent)
    _write(output, kept, report)
    return report


def _check_output(output: str) -> None:
    if Path(output).suffix not in (".jsonl", ".parquet"):
        raise typer.BadParameter(f"{output}: the output must be a .jsonl or .parquet file", param_hint="--output")


def _decontaminated(records: list[dict[str, Any]], config: InstructionsConfig,
                    scratch: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The clean records, in input order, and the decontamination report."""
    start = time.perf_counter()
    init_ray(config.ray)
    checked = decontaminate_stage.run(ray.data.from_items(records), config.decontam, config.embedding,
                                      config.model_store).take_all() if records else []
    order = {r["id"]: i for i, r in enumerate(records)}
    checked.sort(key=lambda r: order[r["id"]])
    judge_stats = _judge(checked, config, scratch) if config.decontam.judge else None
    kept = [{k: v for k, v in r.items() if k not in FLAGS} for r in checked if r["contamination"] is None]
    removed = [{"id": r["id"], "check": r["contamination"], "benchmark_id": r["benchmark_id"],
                "score": r["contamination_score"], "instruction": r["instruction"]}
               for r in checked if r["contamination"] is not None]
    near = [{"id": r["id"], "near": r["near"], "instruction": r["instruction"]}
            for r in checked if r["contamination"] is None and len(r["near"])]
    report = {"input_rows": len(records), "kept": len(kept), "removed": len(removed),
              "by_check": dict(Counter(r["check"] for r in removed).most_common()),
              "by_benchmark": dict(Counter(_benchmark(r["benchmark_id"]) for r in removed).most_common()),
              "near_kept": len(near), "judge": judge_stats,
              "config": config.decontam.model_dump(), "seconds": round(time.perf_counter() - start, 1),
              "removed_rows": removed, "near_rows": near}
    return kept, report


def _write(output: str, rows: list[dict[str, Any]], report: dict[str, Any]) -> None:
    """The rows (JSONL or Parquet, by suffix), then the report: its presence marks the output done."""
    folder, _, name = str(Path(output).absolute()).rpartition("/")
    run_dir = RunDir(folder)
    table = pa.Table.from_pylist(rows)
    run_dir.write_table(name, table) if name.endswith(".parquet") else run_dir.write_jsonl(name, table)
    run_dir.write_text(Path(report_path(output)).name, json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def self_instruct(seeds: list[dict[str, Any]], config: InstructionsConfig, output: str) -> dict[str, Any]:
    """New instructions in the manner of sampled seeds, filtered and decontaminated; the first
    ``self_instruct.count`` kept are written with their lineage (round 0, the examples' ids)."""
    _check_output(output)
    cfg = config.self_instruct
    rng = random.Random(cfg.seed)
    requests = []
    for i in range(math.ceil(cfg.count * cfg.oversample)):
        examples = rng.sample(seeds, min(cfg.examples, len(seeds)))
        requests.append({"id": f"si/{i}", "examples": [e["id"] for e in examples],
                         "example_texts": [problem_statement(e["instruction"]) for e in examples],
                         "sampling": {**cfg.sampling.model_dump(), "seed": cfg.seed + i}})
    answered = _ask(requests, lambda r: selfinstruct.messages(r["example_texts"]), "si", config, Path(output).parent)
    rows = [{"id": r["id"], "instruction": selfinstruct.problem(r["si_response"]), "tests": [], "parent_id": None,
             "round": 0, "heuristic": "self-instruct", "examples": r["examples"], "error": r["si_error"]}
            for r in answered]
    kept, dropped = _filtered(rows, [None] * len(rows), config)
    clean, report = _decontaminated(kept, config, Path(output).parent)
    novel = _novel(clean, _seen(seeds, config), dropped)[:cfg.count]  # the first count, in request order
    report = {"requested": len(requests), "dropped": dict(dropped.most_common()), "decontamination": report,
              "kept": len(novel), "teacher": _usage(answered, "si")}
    _write(output, novel, report)
    return report


def evolve(records: list[dict[str, Any]], config: InstructionsConfig, output: str) -> dict[str, Any]:
    """``evolve.rounds`` rounds of Code Evol-Instruct from ``records``: round r rewrites round r-1's kept rows
    with one heuristic each. Each round is filtered, decontaminated and written as its own dataset
    (``<output stem>.round<r><suffix>``, resumable); ``output`` holds every round's rows."""
    _check_output(output)
    cfg, path = config.evolve, Path(output)
    seen = _seen(records, config)
    level, everything, rounds = records, [], []
    for number in range(1, cfg.rounds + 1):
        level_path = str(path.with_name(f"{path.stem}.round{number}{path.suffix}"))
        if Path(report_path(level_path)).exists():  # done: its rows join the near-duplicate table, as when made
            level = load_instructions(level_path, keep_fields=True) if _has_rows(level_path) else []
            seen.keep([r["instruction"] for r in level])
        else:
            level = _evolve_round(level, number, config, seen, level_path)
        rounds.append({"round": number, **json.loads(Path(report_path(level_path)).read_text())})
        everything += level
    report = {"rounds": [{k: v for k, v in r.items() if k != "decontamination"} for r in rounds],
              "kept": len(everything)}
    _write(output, everything, report)
    return report


def _evolve_round(parents: list[dict[str, Any]], number: int, config: InstructionsConfig, seen: NearDuplicates,
                  output: str) -> list[dict[str, Any]]:
    cfg = config.evolve
    requests = [{"id": f"{p['id']}.e{number}", "parent_id": p["id"], "parent": p["instruction"], "round": number,
                 "heuristic": random.Random(f"{cfg.seed}:{p['id']}:{number}").choice(cfg.heuristics),
                 "sampling": {**cfg.sampling.model_dump(), "seed": cfg.seed + number * 1_000_003 + i}}
                for i, p in enumerate(parents)]
    answered = _ask(requests, lambda r: evol.messages(r["parent"], r["heuristic"]), "evol", config, Path(output).parent)
    rows = [{"id": r["id"], "instruction": evol.rewritten(r["evol_response"]), "tests": [], "parent_id": r["parent_id"],
             "round": number, "heuristic": r["heuristic"], "error": r["evol_error"]} for r in answered]
    kept, dropped = _filtered(rows, [r["parent"] for r in answered], config)
    clean, report = _decontaminated(kept, config, Path(output).parent)
    novel = _novel(clean, seen, dropped)
    _write(output, novel, {"requested": len(requests), "dropped": dict(dropped.most_common()), "kept": len(novel),
                           "by_heuristic": dict(Counter(r["heuristic"] for r in novel)),
                           "teacher": _usage(answered, "evol"), "decontamination": report})
    return novel


def _ask(rows: list[dict[str, Any]], build, name: str, config: InstructionsConfig, scratch: Path) -> list[dict[str, Any]]:
    """One teacher call per row, in row order (a served engine for the whole call when so configured)."""
    if not rows:
        return []
    init_ray(config.ray)
    order = {r["id"]: i for i, r in enumerate(rows)}
    with served(config.teacher, config.model_store, scratch / "teacher-server.log") as teacher_config:
        answered = ask(ray.data.from_items(rows), Teacher(teacher_config, config.model_store), build, name).take_all()
    return sorted(answered, key=lambda r: order[r["id"]])


def _seen(records: list[dict[str, Any]], config: InstructionsConfig) -> NearDuplicates:
    """The near-duplicate table, holding ``records`` (a new instruction must differ from its sources too)."""
    embedder = Embedder(config.embedding.model, config.model_store, config.embedding.batch_size)
    seen = NearDuplicates(embedder, config.filters.near_duplicate)
    seen.keep([r["instruction"] for r in records])
    return seen


def _filtered(rows: list[dict[str, Any]], parents: list[str | None],
              config: InstructionsConfig) -> tuple[list[dict[str, Any]], Counter]:
    """Rows that pass the text filters (without their ``error``), and the count of each drop reason."""
    why = ["teacher error" if r["error"] else filters.text_reason(r["instruction"], config.filters, p)
           for r, p in zip(rows, parents)]
    kept = [{k: v for k, v in r.items() if k != "error"} for r, w in zip(rows, why) if w is None]
    return kept, Counter(w for w in why if w)


def _novel(rows: list[dict[str, Any]], seen: NearDuplicates, dropped: Counter) -> list[dict[str, Any]]:
    """The rows that are not near-duplicates of what ``seen`` holds or of each other (counted in ``dropped``)."""
    novel = seen.keep([r["instruction"] for r in rows]) if rows else []
    dropped["near-duplicate"] += novel.count(False)
    if not dropped["near-duplicate"]:
        del dropped["near-duplicate"]
    return [r for r, keep in zip(rows, novel) if keep]


def _usage(rows: list[dict[str, Any]], name: str) -> dict[str, int]:
    return {"calls": len(rows), "errors": sum(bool(r[f"{name}_error"]) for r in rows),
            "input_tokens": sum(r[f"{name}_input_tokens"] or 0 for r in rows),
            "output_tokens": sum(r[f"{name}_output_tokens"] or 0 for r in rows)}


def _has_rows(path: str) -> bool:
    import pyarrow.parquet as pq

    return Path(path).stat().st_size > 0 if path.endswith(".jsonl") else pq.read_metadata(path).num_rows > 0


def _judge(rows: list[dict[str, Any]], config: InstructionsConfig, scratch: Path) -> dict[str, int]:
    """The teacher judges each clean row against its near benchmark items; a row judged the same problem as
    one is flagged ``judge`` (the most similar such item). Returns the verdict counts."""
    problems = {item["id"]: item["problem"] for item in benchmark_items(config.decontam.benchmarks)}
    pairs = [{"id": f"{r['id']}\t{n['benchmark_id']}", "row": r["id"], "benchmark_id": n["benchmark_id"],
              "score": n["score"], "messages": judge.messages(problems[n["benchmark_id"]], r["instruction"])}
             for r in rows if r["contamination"] is None for n in r["near"]]
    stats = {"pairs": len(pairs), "same": 0, "different": 0, "unparsed": 0, "errors": 0}
    if not pairs:
        return stats
    with served(config.teacher, config.model_store, scratch / "judge-server.log") as teacher_config:
        teacher = Teacher(teacher_config, config.model_store)
        answers = teacher.generate(ray.data.from_items(pairs), carry=("id", "row", "benchmark_id", "score")).take_all()
    by_id = {r["id"]: r for r in rows}
    for answer in sorted(answers, key=lambda a: -a["score"]):
        same = judge.verdict(answer["response"])
        key = "errors" if answer["error"] else {True: "same", False: "different", None: "unparsed"}[same]
        stats[key] += 1
        row = by_id[answer["row"]]
        if same and not answer["error"] and row["contamination"] is None:
            row.update(contamination="judge", benchmark_id=answer["benchmark_id"], contamination_score=answer["score"])
    return stats


def _benchmark(benchmark_id: str) -> str:
    name = benchmark_id.split("/")[0]
    return {"HumanEval": "HumanEval+", "Mbpp": "MBPP+", "mbpp": "MBPP"}.get(name, name)


def print_report(report: dict[str, Any], output: str) -> None:
    table = Table(title=f"decontamination: {report['kept']} of {report['input_rows']} kept "
                        f"({report['near_kept']} near a benchmark item, listed in the report)")
    for column in ("check", "removed", "benchmarks"):
        table.add_column(column)
    for check, count in report["by_check"].items():
        rows = [r for r in report["removed_rows"] if r["check"] == check]
        benchmarks = Counter(_benchmark(r["benchmark_id"]) for r in rows)
        table.add_row(check, str(count), ", ".join(f"{v} {k}" for k, v in benchmarks.most_common()))
    console.print(table)
    console.print(f"kept: {output}; report: {report_path(output)} ({report['seconds']} s)", soft_wrap=True,
                  highlight=False)


def _run(source: str, output: str, config: Path | None, overrides: list[str], step) -> dict[str, Any] | None:
    """``step(records, config, output)`` unless ``output`` is done already (it and its report exist)."""
    if Path(output).exists() and Path(report_path(output)).exists():
        console.print(f"{output}: done already", soft_wrap=True, highlight=False)
        return None
    cfg = load_config(InstructionsConfig, config, overrides)
    records = load_instructions(source, keep_fields=True)
    started_ray = not ray.is_initialized()
    report = step(records, cfg, output)
    if started_ray:
        ray.shutdown()
    return report


def print_generation(report: dict[str, Any], output: str) -> None:
    for r in report.get("rounds", [report]):
        prefix = f"round {r['round']}: " if "round" in r else ""
        dropped = ", ".join(f"{v} {k}" for k, v in r["dropped"].items()) or "none"
        console.print(f"{prefix}{r['requested']} requested, dropped: {dropped}; kept {r['kept']}", soft_wrap=True,
                      highlight=False)
    console.print(f"{report['kept']} instructions: {output}; report: {report_path(output)}", soft_wrap=True,
                  highlight=False)


ConfigOption = typer.Option(None, "--config", "-c", help="YAML instructions config (defaults if omitted).")
OverridesOption = typer.Option([], "--set", help="Override a config key: key.path=value.")
OutputOption = typer.Option(..., "--output", "-o", help="A .jsonl or .parquet file (ready for amr distill --input).")


def seed(
    output: str = OutputOption,
    input: str = typer.Option("mbpp-train", "--input", "-i", help="Seeds: 'mbpp-train' (ids 601-974) or a "
                              "JSONL/Parquet file with id and instruction."),
    config: Path = ConfigOption,
    overrides: list[str] = OverridesOption,
) -> None:
    """Seed instructions (MBPP train ids 601-974 by default), decontaminated against the benchmarks."""
    if report := _run(input, output, config, overrides, decontaminate):
        print_report(report, output)


def decontaminate_command(
    input: str = typer.Option(..., "--input", "-i", help="Instructions: JSONL or Parquet with id and instruction."),
    output: str = OutputOption,
    config: Path = ConfigOption,
    overrides: list[str] = OverridesOption,
) -> None:
    """Remove instructions that overlap HumanEval(+), MBPP test/validation or MBPP+ (no LLM needed)."""
    if report := _run(input, output, config, overrides, decontaminate):
        print_report(report, output)


def self_instruct_command(
    input: str = typer.Option(..., "--input", "-i", help="Seed instructions (e.g. amr instructions seed's output)."),
    output: str = OutputOption,
    config: Path = ConfigOption,
    overrides: list[str] = OverridesOption,
) -> None:
    """Self-instruct: the teacher writes new problems from sampled seeds; filtered and decontaminated."""
    if report := _run(input, output, config, overrides, self_instruct):
        print_generation(report, output)


def evolve_command(
    input: str = typer.Option(..., "--input", "-i", help="Instructions to evolve (e.g. self-instruct's output)."),
    output: str = OutputOption,
    config: Path = ConfigOption,
    overrides: list[str] = OverridesOption,
) -> None:
    """Code Evol-Instruct rounds: each level filtered, decontaminated and written with its lineage."""
    if report := _run(input, output, config, overrides, evolve):
        print_generation(report, output)


if __name__ == "__main__":
    from jobs.cli import run_as_module

    run_as_module("instructions")
