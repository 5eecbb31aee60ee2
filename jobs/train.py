"""Training job: fine-tune the student on a distill run's SFT dataset with Ray Train.

    amr train --config jobs/configs/train_local_cpu.yaml --dataset runs/local --output runs/student [--set k=v]
    python -m jobs.train ...   (the same, for `ray job submit`)

Writes OUT/model (a plain HF directory with its tokenizer, in the training dtype, LoRA merged), OUT/train.json
(schedule, steps, losses, tokens/s, each worker's memory, versions, config), OUT/shards.json (the rows each worker
streamed) and the Ray Train checkpoints under OUT/checkpoints (or ``storage_path``). Rerunning the same command
resumes from the latest checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from amr.config import TrainConfig, load_config
from jobs.common import OverridesOption, run_as_module, shutting_down_ray


def main(
    config: Path = typer.Option(None, "--config", "-c", help="YAML train config (defaults if omitted)."),
    dataset: str = typer.Option(
        None,
        "--dataset",
        "-d",
        help="A distill run directory (dataset.parquet or "
        "dataset.jsonl), or such a file; local path or object-store URI.",
    ),
    output: str = typer.Option(None, "--output", "-o", help="Output directory: model/, train.json, checkpoints/."),
    overrides: list[str] = OverridesOption,
) -> None:
    """Train: supervised fine-tuning of the student on Ray Train; resumable; prints a summary."""
    from train.trainer import run

    shortcuts = [f"{k}={v}" for k, v in (("dataset", dataset), ("output", output)) if v]
    with shutting_down_ray():
        summary = run(load_config(TrainConfig, config, [*shortcuts, *overrides]))
    print_summary(summary)


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    loss = summary.get("final_loss")
    resumed = f" (resumed at step {summary['resumed_from_step']})" if summary.get("resumed_from_step") else ""
    plan = summary["schedule"]
    lines = [
        f"train: {summary['model']} on {summary['dataset']} ({summary['examples']} examples), "
        f"{len(summary['workers'])} workers ({summary['sharding']} sharding, {summary['precision']}): "
        f"{summary['steps']} steps{resumed} = {plan['epochs']:.2f} epochs of {plan['rows']} rows at "
        f"{plan['global_batch']} a step, final loss {'-' if loss is None else f'{loss:.4f}'}, "
        f"{summary['tokens']} tokens in {summary['seconds']} s ({summary['tokens_per_s']} tokens/s)",
        f"model: {summary['model_dir']} (summary: train.json beside it; checkpoints: {summary['storage']})",
    ]
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)


if __name__ == "__main__":
    run_as_module(main, "train")
