"""``amr instructions``: instruction construction (``amr.pipelines.instructions``) from the command line.

amr instructions seed --output seeds.jsonl                      MBPP train 601-974, decontaminated
amr instructions self-instruct --input seeds.jsonl --output si.jsonl
amr instructions evolve --input si.jsonl --output evol.jsonl    evol.round1.jsonl ... and all rounds
amr instructions decontaminate --input F --output G
python -m jobs.instructions ...                                 (the same, for `ray job submit`)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from amr.config import InstructionsConfig, load_config
from amr.pipelines.instructions import decontaminate, evolve, report_path, self_instruct
from amr.storage import exists
from jobs.common import (
    OverridesOption,
    console,
    run_as_module,
    shutting_down_ray,
    user_errors,
)

app = typer.Typer(
    help="Instruction construction: seeds, self-instruct, evolution, decontamination.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def print_report(report: dict[str, Any], output: str) -> None:
    table = Table(
        title=f"decontamination: {report['kept']} of {report['input_rows']} kept "
        f"({report['near_kept']} near a benchmark item: {report['near_rows']})"
    )
    for column in ("check", "removed", "benchmarks"):
        table.add_column(column)
    for check, count in report["by_check"].items():
        benchmarks = report["by_check_and_benchmark"][check]
        table.add_row(check, str(count), ", ".join(f"{v} {k}" for k, v in benchmarks.items()))
    console.print(table)
    console.print(
        f"kept: {output}; removed: {report['removed_rows']}; report: {report_path(output)} ({report['seconds']} s)",
        soft_wrap=True,
        highlight=False,
    )


def _run(source: str, output: str, config: Path | None, overrides: list[str], step) -> dict[str, Any] | None:
    """``step(source, config, output)`` unless ``output`` is done already (it and its report exist)."""
    if exists(output) and exists(report_path(output)):
        console.print(f"{output}: done already", soft_wrap=True, highlight=False)
        return None
    cfg = load_config(InstructionsConfig, config, overrides)
    with shutting_down_ray():
        return step(source, cfg, output)


def print_generation(report: dict[str, Any], output: str) -> None:
    for r in report.get("rounds", [report]):
        prefix = f"round {r['round']}: " if "round" in r else ""
        dropped = ", ".join(f"{v} {k}" for k, v in r["dropped"].items()) or "none"
        console.print(
            f"{prefix}{r['requested']} requested, dropped: {dropped}; kept {r['kept']}", soft_wrap=True, highlight=False
        )
    console.print(
        f"{report['kept']} instructions: {output}; report: {report_path(output)}", soft_wrap=True, highlight=False
    )


ConfigOption = typer.Option(None, "--config", "-c", help="YAML instructions config (defaults if omitted).")
OutputOption = typer.Option(
    ..., "--output", "-o", help="A .jsonl or .parquet file, a path or URI (ready for amr distill --input)."
)


@app.command("seed")
@user_errors
def seed(
    output: str = OutputOption,
    input: str = typer.Option(
        "mbpp-train-raw",
        "--input",
        "-i",
        help="Seeds: 'mbpp-train-raw' (ids 601-974, "
        "all of them: this step removes the overlaps, with its config, and reports them) or a "
        "JSONL/Parquet file with id and instruction.",
    ),
    config: Path = ConfigOption,
    overrides: list[str] = OverridesOption,
) -> None:
    """Seed instructions (all of MBPP train, ids 601-974, by default), decontaminated against the benchmarks."""
    if report := _run(input, output, config, overrides, decontaminate):
        print_report(report, output)


@app.command("decontaminate")
@user_errors
def decontaminate_command(
    input: str = typer.Option(..., "--input", "-i", help="Instructions: JSONL or Parquet with id and instruction."),
    output: str = OutputOption,
    config: Path = ConfigOption,
    overrides: list[str] = OverridesOption,
) -> None:
    """Remove instructions that overlap HumanEval(+), MBPP test/validation or MBPP+ (no LLM needed)."""
    if report := _run(input, output, config, overrides, decontaminate):
        print_report(report, output)


@app.command("self-instruct")
@user_errors
def self_instruct_command(
    input: str = typer.Option(..., "--input", "-i", help="Seed instructions (e.g. amr instructions seed's output)."),
    output: str = OutputOption,
    config: Path = ConfigOption,
    overrides: list[str] = OverridesOption,
) -> None:
    """Self-instruct: the teacher writes new problems from sampled seeds; filtered and decontaminated."""
    if report := _run(input, output, config, overrides, self_instruct):
        print_generation(report, output)


@app.command("evolve")
@user_errors
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
    run_as_module(app, "instructions")
