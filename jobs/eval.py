"""``amr eval``: an EvalPlus evaluation (``eval.evaluate``) from the command line.

amr eval --model M --dataset humaneval|mbpp [--version V] [--limit N] --output DIR [--set key.path=value ...]
python -m jobs.eval ...   (the same, for `ray job submit`)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from amr.config import EvalConfig, load_config
from amr.storage import parent
from eval.evaluate import evaluate
from jobs.common import OverridesOption, run_as_module, shutting_down_ray


def print_scores(scores: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    name = {"humaneval": "HumanEval", "mbpp": "MBPP"}[scores["dataset"]]
    passes = "; ".join(
        f"pass@{k} {name} {scores[f'base_pass@{k}']:.1%}, {name}+ {scores[f'plus_pass@{k}']:.1%}"
        for k in (1, 10, 100)
        if f"base_pass@{k}" in scores
    )
    console.print(
        f"{name} {scores['version']}, {scores['n_tasks']} tasks, {scores['model']}: {passes} "
        f"(results: {parent(scores['results'])}/)",
        soft_wrap=True,
        highlight=False,
    )
    if scores["generation_errors"]:
        console.print(
            f"  [bold red]{scores['generation_errors']} of {scores['n_samples']} generations failed[/] "
            f"(their errors in samples.jsonl): they score as wrong answers",
            soft_wrap=True,
        )


def main(
    model: str = typer.Option(
        None, "--model", "-m", help="Registry name or local model directory (default: the config's)."
    ),
    dataset: str = typer.Option(None, "--dataset", "-d", help="humaneval or mbpp (default: the config's)."),
    version: str = typer.Option(None, help="EvalPlus release: humaneval v0.1.10; mbpp v0.1.0 (default) or v0.2.0."),
    limit: int = typer.Option(None, min=1, help="The first N tasks only (a smoke run)."),
    output: str = typer.Option(None, "--output", "-o", help="Directory (or URI) for samples, results and scores.json."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML eval config (defaults if omitted)."),
    overrides: list[str] = OverridesOption,
) -> None:
    """Evaluate a model on HumanEval(+) or MBPP(+) with EvalPlus, offline; prints base and plus pass@1."""
    shortcuts = [
        f"{k}={v}"
        for k, v in (("model", model), ("dataset", dataset), ("version", version), ("limit", limit), ("output", output))
        if v
    ]
    cfg = load_config(EvalConfig, config, [*shortcuts, *overrides])
    with shutting_down_ray():
        scores = evaluate(cfg)
    print_scores(scores)


if __name__ == "__main__":
    run_as_module(main, "eval")
