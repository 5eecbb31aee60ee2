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
from jobs.common import OverridesOption, run_as_module, shutting_down_ray


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
        table.add_row(
            name, str(s["rows"]), *(str(s.get(k, "")) for k in ("errors", "input_tokens", "output_tokens")), notes
        )
    console.print(table)
    if manifest["modules"]:
        m, growth = manifest["modules"], manifest["stages"]["grow"]["candidates"]
        console.print(
            f"module table: {m['rows']} functions (version {m['version']}, {len(m['waves'])} waves); "
            f"new functions: {', '.join(f'{v} {k}' for k, v in sorted(growth.items())) or 'none'}",
            soft_wrap=True,
        )
    d = manifest["dataset"]
    accuracy = f"{d['response_accuracy']:.1%}" if d["response_accuracy"] is not None else "n/a"
    console.print(
        f"dataset: {d['rows']} rows ({d['dropped']} dropped), response accuracy {accuracy} on "
        f"{d['with_tests']} with tests: {d['path']}",
        soft_wrap=True,
    )
    t = manifest["teacher"]
    if "engine_starts" in t:
        console.print(
            f"teacher: Serve application {t['app']} ({'attached' if t['attached'] else 'started by the job'}), "
            f"{t['replicas']} replicas, {t['engine_starts']} engine starts",
            soft_wrap=True,
        )
    console.print(
        f"wall time {manifest['wall_time_s']} s; run directory {manifest['config']['run_dir']}/", soft_wrap=True
    )


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
