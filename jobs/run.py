"""The whole loop: for each method, distill -> train the student -> evaluate it; then the report.

    amr run --config jobs/configs/run_local_cpu.yaml            (the `make run` job)
    amr run --config jobs/configs/run_local_cpu.yaml --set 'instructions={}'   (build the instructions first)
    amr compare --methods direct,amr --config ...               (several methods on the same instructions)
    python -m jobs.run ...                                      (the same, for `ray job submit`)

Under ``output``: ``<method>/distill`` (the distill run directory), ``<method>/student`` (train output),
``<method>/eval/<dataset>``, ``base/eval/<dataset>`` (the student before fine-tuning) and ``report/``.
Every step resumes: a rerun skips finished steps (``manifest.json``, ``train.json``, ``scores.json``)
and continues a cut-off one. Methods that answer with R_d first share one ``direct.parquet``: the
distill config is the same for all, so with a greedy teacher it would be the same file.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
import typer
from rich.console import Console

from amr.config import EvalConfig, RunConfig, load_config
from amr.data import iter_instructions
from amr.runtime import init_ray, require_shared_storage
from amr.storage import RunDir, chunks
from jobs import distill, instructions, report
from jobs import eval as eval_job
from jobs import train as train_job

console = Console()
SHARES_DIRECT = ("direct", "ansrepair", "amr", "amr-no-md", "amr-no-are")


def run(config: RunConfig) -> Path:
    """Run (or resume) every step; return the report directory."""
    out = Path(config.output).expanduser().resolve()
    init_ray(config.distill.ray)
    require_shared_storage({"output": str(out)})
    if config.instructions:
        source = _instructions(config, out / "instructions")
        config = config.model_copy(update={"distill": config.distill.model_copy(
            update={"input": config.distill.input.model_copy(update={"source": source})})})
    for method in config.methods:
        step = out / method
        _distill(config, method, step / "distill", out)
        _train(config, step)
        for dataset in config.eval.datasets:
            _eval(config, str(step / "student" / "model"), dataset, step / "eval" / dataset)
    if config.eval.base:
        for dataset in config.eval.datasets:
            _eval(config, config.train.model, dataset, out / "base" / "eval" / dataset)
    return report.write([out], out / "report")


def _instructions(config: RunConfig, folder: Path) -> str:
    """Seeds (MBPP train, decontaminated) -> self-instruct -> evolution rounds; returns the file of all of them."""
    folder.mkdir(parents=True, exist_ok=True)
    everything = folder / "all.jsonl"
    shared = {k: getattr(config.distill, k) for k in ("teacher", "model_store", "ray", "embedding")
              if k not in config.instructions.model_fields_set}
    settings = config.instructions.model_copy(update=shared)
    steps = (("seeds.jsonl", "mbpp-train", instructions.decontaminate),
             ("self-instruct.jsonl", str(folder / "seeds.jsonl"), instructions.self_instruct),
             ("evolved.jsonl", str(folder / "self-instruct.jsonl"), instructions.evolve))
    for name, source, step in steps:
        output = str(folder / name)
        if Path(instructions.report_path(output)).exists():
            _skip(f"instructions: {name}", Path(output))
            continue
        _started(f"instructions: {name}", Path(output))
        step(source, settings, output)
    if not everything.exists():  # what `amr distill` reads, streamed: the lineage stays in the steps' files
        records = itertools.chain.from_iterable(iter_instructions(str(folder / name)) for name, _, _ in steps)
        RunDir(str(folder)).write_jsonl_batches(everything.name, (
            pa.Table.from_pylist(chunk) for chunk in chunks(records)))
    return str(everything)


def _distill(config: RunConfig, method: str, run_dir: Path, out: Path) -> None:
    if (run_dir / "manifest.json").exists() and (run_dir / "dataset.parquet").exists():
        return _skip(f"{method}: distill", run_dir)
    target = RunDir(str(run_dir))
    if method in SHARES_DIRECT and not target.stage_done("direct.parquet"):
        shared = next((d for m in SHARES_DIRECT if (d := RunDir(str(out / m / "distill"))).stage_done("direct.parquet")), None)
        if shared:
            target.copy_stage("direct.parquet", shared)
    _started(f"{method}: distill", run_dir)
    cfg = config.distill.model_copy(update={"method": method, "run_dir": str(run_dir)})
    distill.print_summary(distill.run(cfg), console)


def _train(config: RunConfig, step: Path) -> None:
    from train.trainer import run as train

    output = step / "student"
    if (output / "train.json").exists():
        return _skip(f"{step.name}: train", output)
    _started(f"{step.name}: train", output)
    # one Ray Train run per method, also where methods share a storage_path
    cfg = config.train.model_copy(update={"dataset": str(step / "distill"), "output": str(output),
                                          "name": f"{config.train.name}-{step.name}"})
    train_job.print_summary(train(cfg), console)


def _eval(config: RunConfig, model: str, dataset: str, output: Path) -> None:
    name = f"{output.parent.parent.name}: eval {dataset}"
    if (output / "scores.json").exists():
        return _skip(name, output)
    _started(name, output)
    settings = config.eval.model_dump(exclude={"datasets", "base"})
    eval_job.print_scores(eval_job.run(EvalConfig(**settings, model=model, dataset=dataset, output=str(output))),
                          console)


def _started(step: str, where: Path) -> None:
    console.rule(f"{step} -> {where}  ({time.strftime('%H:%M:%S')})")


def _skip(step: str, where: Path) -> None:
    console.print(f"{step}: done already ({where})", soft_wrap=True, highlight=False)


def main(
    config: Path = typer.Option(None, "--config", "-c", help="YAML run config (defaults if omitted)."),
    output: str = typer.Option(None, "--output", "-o", help="Directory for the whole run (default: the config's)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config key: key.path=value."),
) -> None:
    """Run: distill -> train -> eval -> report for the config's methods; resumable; prints where the report is."""
    _main(config, [f"output={output}"] if output else [], overrides)


def compare(
    methods: str = typer.Option("direct,amr", help="Comma-separated methods, e.g. direct,cot,ansrepair,amr."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML run config (defaults if omitted)."),
    output: str = typer.Option(None, "--output", "-o", help="Directory for the whole run (default: the config's)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config key: key.path=value."),
) -> None:
    """Compare: the run for several methods on the same instructions, one report with the table."""
    shortcuts = [f"methods=[{methods}]"] + ([f"output={output}"] if output else [])
    _main(config, shortcuts, overrides)


def _main(config: Path | None, shortcuts: list[str], overrides: list[str]) -> None:
    cfg = load_config(RunConfig, config, [*shortcuts, *overrides])
    started_ray = not ray.is_initialized()
    where = run(cfg)
    if started_ray:
        ray.shutdown()
    console.print(f"report: {where / 'report.html'} (and report.md)", soft_wrap=True, highlight=False)


if __name__ == "__main__":
    from jobs.cli import run_as_module

    run_as_module("run")
