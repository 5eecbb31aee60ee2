"""EvalPlus evaluation job: a model answers HumanEval(+) or MBPP(+) tasks, evalplus scores the answers.

    amr eval --model M --dataset humaneval|mbpp [--version V] [--limit N] --output DIR [--set key.path=value ...]
    python -m jobs.eval ...   (the same, for `ray job submit`)

Offline: the datasets are the vendored releases in amr/data/evalplus. Writes to DIR: ``samples.jsonl`` (task_id,
solution, raw answer, error, output_tokens), ``samples_eval_results.json`` (evalplus's per-sample results),
``evalplus.log`` (its output) and ``scores.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import ray
import typer
from rich.console import Console

from amr.config import EVALPLUS_VERSIONS, EvalConfig, load_config
from amr.engines import EngineError, open_teacher
from amr.runtime import init_ray, require_shared_storage
from eval.data import dataset_file, default_cache, load_tasks
from eval.generate import generate, student
from eval.score import score


def run(config: EvalConfig) -> dict[str, Any]:
    """Generate, sanitize and score; return the scores (also ``<output>/scores.json``). The model's engine is
    shared with an enclosing ``open_teacher`` of it (``amr run`` scores a model on every dataset with one)."""
    start = time.perf_counter()
    student(config)  # a missing model fails before Ray starts
    out = Path(config.output).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    version = config.version or EVALPLUS_VERSIONS[config.dataset][0]
    cache = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache()
    data = dataset_file(config.dataset, version, config.limit, cache)
    tasks = load_tasks(data)
    init_ray(config.ray)
    require_shared_storage({"output": str(out)})
    with open_teacher(student(config), config.model_store) as engine:
        samples = generate(tasks, config, engine)
    failed = [s["error"] for s in samples if s["error"]]
    if failed and len(failed) == len(samples):
        raise EngineError(f"{config.model}: every generation failed, nothing to score; the first: {failed[0]}")
    generated = time.perf_counter()
    with open(out / "samples.jsonl", "w") as f:
        f.writelines(json.dumps(s) + "\n" for s in samples)
    scored = score(config.dataset, data, out / "samples.jsonl", cache_dir=cache, **config.scoring.model_dump(),
                   log=out / "evalplus.log")
    scores = {"dataset": config.dataset, "version": version, "model": config.model, "limit": config.limit,
              **scored, "generation_errors": sum(s["error"] is not None for s in samples),
              "output_tokens": sum(s["output_tokens"] for s in samples),
              "generation_s": round(generated - start, 1), "scoring_s": round(time.perf_counter() - generated, 1),
              "config": config.model_dump()}
    (out / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    return scores


def print_scores(scores: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    name = {"humaneval": "HumanEval", "mbpp": "MBPP"}[scores["dataset"]]
    console.print(f"{name} {scores['version']}, {scores['n_tasks']} tasks, {scores['model']}:", soft_wrap=True)
    if scores["generation_errors"]:
        console.print(f"  [bold red]{scores['generation_errors']} of {scores['n_samples']} generations failed[/] "
                      f"(their errors in samples.jsonl): they score as wrong answers", soft_wrap=True)
    for k in (1, 10, 100):
        if f"base_pass@{k}" in scores:
            console.print(f"  pass@{k}: {name} {scores[f'base_pass@{k}']:.1%}  {name}+ {scores[f'plus_pass@{k}']:.1%}")
    console.print(f"results in {Path(scores['results']).parent}/ (scores.json, samples.jsonl)", soft_wrap=True)


def main(
    model: str = typer.Option(None, "--model", "-m", help="Registry name or local model directory (default: the config's)."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="humaneval or mbpp (default: the config's)."),
    version: str = typer.Option(None, help="EvalPlus release: humaneval v0.1.10; mbpp v0.1.0 (default) or v0.2.0."),
    limit: int = typer.Option(None, min=1, help="The first N tasks only (a smoke run)."),
    output: str = typer.Option(None, "--output", "-o", help="Directory for samples, results and scores.json."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML eval config (defaults if omitted)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config key: key.path=value."),
) -> None:
    """Evaluate a model on HumanEval(+) or MBPP(+) with EvalPlus, offline; prints base and plus pass@1."""
    shortcuts = [f"{k}={v}" for k, v in (("model", model), ("dataset", dataset), ("version", version),
                                         ("limit", limit), ("output", output)) if v]
    cfg = load_config(EvalConfig, config, [*shortcuts, *overrides])
    started_ray = not ray.is_initialized()
    scores = run(cfg)
    if started_ray:
        ray.shutdown()
    print_scores(scores)


if __name__ == "__main__":
    from jobs.cli import run_as_module

    run_as_module("eval")
