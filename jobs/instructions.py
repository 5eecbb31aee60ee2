"""Instruction construction: seed instructions, decontaminated against the evaluation benchmarks.

    amr instructions seed --output seeds.jsonl [--config C] [--set k=v]
    amr instructions decontaminate --input F --output G [--config C] [--set k=v]

Each writes the kept instructions to the output (JSONL or Parquet, ready for `amr distill --input`) and
``<output>.decontamination.json``: the checks, counts by check and by benchmark, every removed row with the
check that removed it, the benchmark item and the score, and the kept rows near a benchmark item (cosine from
``decontam.judge_floor`` up to the threshold): with ``decontam.judge`` the teacher judged those pairs (the
paper's method), without it they are for a person to read. An output that exists is not recomputed.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
import typer
from rich.console import Console
from rich.table import Table

from amr.config import InstructionsConfig, load_config
from amr.data import load_instructions
from amr.decontam import benchmark_items
from amr.engines import Teacher
from amr.prompts import judge
from amr.runtime import init_ray
from amr.serving import served
from amr.stages import decontaminate as decontaminate_stage
from amr.storage import RunDir

console = Console()
FLAGS = ("contamination", "benchmark_id", "contamination_score", "near")


def report_path(output: str) -> str:
    return f"{output}.decontamination.json"


def decontaminate(records: list[dict[str, Any]], config: InstructionsConfig, output: str) -> dict[str, Any]:
    """Check ``records``; write the clean ones to ``output`` and the report next to it; return the report."""
    if Path(output).suffix not in (".jsonl", ".parquet"):
        raise typer.BadParameter(f"{output}: the output must be a .jsonl or .parquet file", param_hint="--output")
    start = time.perf_counter()
    init_ray(config.ray)
    checked = decontaminate_stage.run(ray.data.from_items(records), config.decontam, config.embedding,
                                      config.model_store).take_all()
    order = {r["id"]: i for i, r in enumerate(records)}
    checked.sort(key=lambda r: order[r["id"]])
    judge_stats = _judge(checked, config, Path(output).parent) if config.decontam.judge else None
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
    folder, _, name = str(Path(output).absolute()).rpartition("/")
    run_dir = RunDir(folder)
    table = pa.Table.from_pylist(kept)
    run_dir.write_table(name, table) if name.endswith(".parquet") else run_dir.write_jsonl(name, table)
    run_dir.write_text(Path(report_path(output)).name, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


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


ConfigOption = typer.Option(None, "--config", "-c", help="YAML instructions config (defaults if omitted).")
OverridesOption = typer.Option([], "--set", help="Override a config key: key.path=value.")


def _run(records_source: str, output: str, config: Path | None, overrides: list[str]) -> None:
    if Path(output).exists() and Path(report_path(output)).exists():
        console.print(f"{output}: done already", soft_wrap=True, highlight=False)
        return
    cfg = load_config(InstructionsConfig, config, overrides)
    records = load_instructions(records_source, keep_fields=True)
    started_ray = not ray.is_initialized()
    report = decontaminate(records, cfg, output)
    if started_ray:
        ray.shutdown()
    print_report(report, output)


def seed(
    output: str = typer.Option(..., "--output", "-o", help="The seed instructions: a .jsonl or .parquet file."),
    input: str = typer.Option("mbpp-train", "--input", "-i", help="Seeds: 'mbpp-train' (ids 601-974) or a "
                              "JSONL/Parquet file with id and instruction."),
    config: Path = ConfigOption,
    overrides: list[str] = OverridesOption,
) -> None:
    """Seed instructions (MBPP train ids 601-974 by default), decontaminated against the benchmarks."""
    _run(input, output, config, overrides)


def decontaminate_command(
    input: str = typer.Option(..., "--input", "-i", help="Instructions: JSONL or Parquet with id and instruction."),
    output: str = typer.Option(..., "--output", "-o", help="The clean instructions: a .jsonl or .parquet file."),
    config: Path = ConfigOption,
    overrides: list[str] = OverridesOption,
) -> None:
    """Remove instructions that overlap HumanEval(+), MBPP test/validation or MBPP+ (no LLM needed)."""
    _run(input, output, config, overrides)
