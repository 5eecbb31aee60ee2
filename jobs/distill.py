"""``amr distill``: the distillation job (``amr.pipelines.distill``) from the command line, with a summary.

amr distill --config jobs/configs/local_cpu.yaml [--method amr] [--set key.path=value ...]
python -m jobs.distill ...   (the same, for `ray job submit`)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from amr.config import DistillConfig, load_config
from amr.methods import METHODS
from amr.pipelines import distill
from amr.report.tables import from_direct, stage_notes
from jobs.common import OverridesOption, run_as_module, shutting_down_ray


def print_summary(manifest: dict[str, Any], console: Console | None = None, table: bool = True) -> None:
    """The job's stages as a table (``table``), then what it made: the dataset, the module table, the teacher."""
    console = console or Console()
    if table:
        console.print(stage_table(manifest))
    for line in summary_lines(manifest):
        console.print(line, soft_wrap=True, highlight=False)


def stage_table(manifest: dict[str, Any]) -> Table:
    table = Table(title=f"amr distill ({manifest['method']}) with {manifest['config']['teacher']['model']}")
    for name in ("stage", "rows", "teacher errors", "retries", "input tok", "output tok", "notes"):
        table.add_column(name, justify="left" if name in ("stage", "notes") else "right")
    for name, s in manifest["stages"].items():
        if "rows" not in s:
            continue
        retries = str(sum(s["retries"].values())) if "retries" in s else ""
        table.add_row(
            name,
            str(s["rows"]),
            str(s.get("errors", "")),
            retries,
            *(str(s.get(k, "")) for k in ("input_tokens", "output_tokens")),
            stage_notes(s),
        )
    return table


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    """What the job made, in a few lines: the dataset and its response accuracy, the teacher's calls, the module
    table, where it all is."""
    d, stages = manifest["dataset"], manifest["stages"].values()
    accuracy = f"{d['response_accuracy']:.1%}" if d["response_accuracy"] is not None else "n/a"
    tokens = [sum(s.get(k, 0) for s in stages) for k in ("input_tokens", "output_tokens", "errors")]
    retries = sum(sum(s.get("retries", {}).values()) for s in stages)
    lines = [
        f"dataset: {d['rows']} rows ({d['dropped']} dropped), response accuracy {accuracy} on {d['with_tests']} "
        f"with tests; answers R_d: {from_direct(d)}: {d['path']}",
        f"teacher {manifest['config']['teacher']['model']}: {tokens[0]} tokens in, {tokens[1]} out; {tokens[2]} errors, "
        f"{retries} retries" + _served(manifest["teacher"]),
    ]
    if manifest["modules"]:
        m, growth = manifest["modules"], manifest["stages"]["grow"]["candidates"]
        lines.append(
            f"module table: {m['rows']} functions (version {m['version']}, {len(m['waves'])} waves); "
            f"new functions: {', '.join(f'{v} {k}' for k, v in sorted(growth.items())) or 'none'}"
        )
    lines.append(f"wall time {manifest['wall_time_s']} s; run directory {manifest['config']['run_dir']}/")
    return lines


def _served(teacher: dict[str, Any]) -> str:
    if "engine_starts" not in teacher:
        return ""
    how = "attached" if teacher["attached"] else "started by the job"
    return f"; Serve application {teacher['app']} ({how}), {teacher['replicas']} replicas, {teacher['engine_starts']} engine starts"


def main(
    config: Path = typer.Option(None, "--config", "-c", help="YAML job config (defaults if omitted)."),
    method: str = typer.Option(None, help=f"{', '.join(METHODS)} (default: the config's)."),
    input: str = typer.Option(None, "--input", "-i", help="Instructions: JSONL/Parquet or 'mbpp-train'."),
    run_dir: str = typer.Option(None, help="Run directory (default: the config's); rerun to resume."),
    restart_from: str = typer.Option(
        None, help="Recompute this stage and every later one (input, direct, decompose, embed, waves, dataset, ...)."
    ),
    overrides: list[str] = OverridesOption,
) -> None:
    """Distil: build the SFT dataset with the configured method; resumable; prints a summary."""
    shortcuts = [f"{k}={v}" for k, v in (("method", method), ("input.source", input), ("run_dir", run_dir)) if v]
    with shutting_down_ray():  # engine teardown logs come now, not after the summary
        manifest = distill.run(load_config(DistillConfig, config, [*shortcuts, *overrides]), restart_from)
    print_summary(manifest)


if __name__ == "__main__":
    run_as_module(main, "distill")
