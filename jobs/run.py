"""The whole loop: for each method, distill -> train the student -> evaluate it; then the report.

    amr run --config jobs/configs/run_local_cpu.yaml            (the `make run` job)
    amr run --config jobs/configs/run_local_cpu.yaml --set 'instructions={}'   (build the instructions first)
    amr compare --methods direct,amr --config ...               (several methods on the same instructions)
    python -m jobs.run ...                                      (the same, for `ray job submit`)

Under ``output``: ``<method>/distill`` (the distill run directory), ``<method>/student`` (train output),
``<method>/eval/<dataset>``, ``base/eval/<dataset>`` (the student before fine-tuning) and ``report/``.
``output`` may be an object-store URI (every step reads and writes it through ``amr.storage``); the students
then go to ``students/<method>`` on a local or shared disk (vLLM loads a model from files). Every step resumes: a rerun skips finished steps (``manifest.json``, ``train.json``, ``scores.json``)
and continues a cut-off one. Methods that answer with R_d first share one ``direct.parquet``: the
distill config is the same for all, so with a greedy teacher it would be the same file.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import ray
import typer
from rich.table import Table

from amr import preflight, report, staging, storage
from amr.config import ConfigError, EvalConfig, RunConfig, TrainConfig, VLLMConfig, load_config
from amr.cost import teacher_cost
from amr.data import iter_instructions
from amr.decontam import eval_overlaps
from amr.engines import engine_key, open_teacher, open_teachers
from amr.logs import job_logs
from amr.methods import METHODS, REGISTRY, distill_order
from amr.model_store import resolve
from amr.pipelines import distill, fingerprints, instructions
from amr.pipelines.plan import Group, Step, groups, plan, reused, reused_folder
from amr.runtime import init_ray
from amr.sandbox.stage import open_sandbox
from amr.serving import preload
from amr.storage import RunDir
from amr.training import plan_lines
from eval.evaluate import evaluate
from eval.generate import student
from jobs.common import OverridesOption, console, run_as_module, shutting_down_ray
from jobs.distill import print_summary as print_distill
from jobs.eval import print_scores
from jobs.train import print_summary as print_train

SHARES_DIRECT = tuple(m.name for m in REGISTRY if m.reads_direct)


def run(config: RunConfig) -> str:
    """Run (or resume) every step; return the report directory (a path or URI).

    Engines: the teacher is started once for the instructions and every method's distillation (and, when the
    untouched student is the teacher's model on the same engine settings, its evaluation too); each evaluated
    model then gets one engine for all its datasets, and those engines start together where the cluster has room."""
    out = storage.normalize(config.output)
    _refuse_eval_overlap(config)
    _refuse_unfinished_reuse(config)
    own = [m for m in distill_order(config.methods) if m not in reused(config)]
    with job_logs(out):
        init_ray(config.distill.ray, preload(config.distill.teacher))
        preflight.run(config)
        base = storage.join(out, "base", "eval")
        base_on_teacher = config.eval.base and _engine_of(config, config.train.model) == _engine_of(config, None)
        trainings: list[tuple[str, Any]] = []  # a level's students train while the next level distils
        with ExitStack() as teacher:
            if _teacher_needed(config, out, own, base if base_on_teacher else None):
                teacher.enter_context(open_teacher(config.distill.teacher, config.distill.model_store))
                teacher.enter_context(open_sandbox(config.distill.sandbox))  # the methods' distills share its actors
            source = _instructions(config, out) if config.instructions else None
            levels = groups(config, out)
            for group, following in zip(levels, [*levels[1:], None]):
                for method in own:
                    _distill(_reading(config, group.source(source)), method, group)
                if following is not None and _room_to_train(config.train):
                    trainings += _train_meanwhile(
                        config, own, group, following, trainings[-1][1] if trainings else None
                    )
            if base_on_teacher:
                _evaluate(config, [(config.train.model, base, "base")])
        for steps, training in trainings:
            for step, summary in zip(steps, ray.get(training)):
                _started(f"{step} (trained while the next level distilled)")
                print_train(summary, console)
        for group in groups(config, out):
            for method in own:
                _train(config, method, group)
        evaluated = [
            (storage.join(_student(config, m, g), "model"), storage.join(g.out, m, "eval"), g.named(m))
            for g in groups(config, out)
            for m in own
        ]
        _evaluate(config, evaluated + ([(config.train.model, base, "base")] if config.eval.base else []))
        read = [reused_folder(config, group.name, m) for group in groups(config, "") for m in reused(config)]
        return report.write([out, *read], storage.join(out, "report"))


def _refuse_unfinished_reuse(config: RunConfig) -> None:
    """Stop before any work when a step this run reads from ``reuse`` is not done there."""
    if config.reuse is None:
        return
    other = config.reuse
    files = [reused_folder(config, "", "instructions", "all.jsonl")] if config.instructions else []
    for group in groups(other, storage.normalize(other.output)):
        for method in reused(config):
            distilled = storage.join(group.out, method, "distill")
            files += [storage.join(distilled, "manifest.json"), storage.join(distilled, "dataset.parquet")]
            files.append(storage.join(_student(other, method, group), "train.json"))
            files += [storage.join(group.out, method, "eval", d, "scores.json") for d in config.eval.datasets]
    missing = [f for f in files if not storage.exists(f)]
    if missing:
        raise ConfigError(
            f"reuse: {other.output}: the steps this run reads from it are not done there: {len(missing)} files "
            f"missing ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}): run it first"
        )


def _refuse_eval_overlap(config: RunConfig) -> None:
    """Stop before any work when the distill input holds tasks of the evaluated datasets (built instructions are
    decontaminated by their build)."""
    if config.allow_eval_overlap or config.instructions:
        return
    source = config.distill.input
    found = eval_overlaps(iter_instructions(source.source, source.limit), config.eval.datasets)
    if found:
        named = ", ".join(f"{f['id']} ~ {f['benchmark_id']} ({f['check']})" for f in found[:5])
        raise ConfigError(
            f"distill.input.source: {len(found)} of its instructions are tasks of the evaluated datasets ({named}"
            f"{', ...' if len(found) > 5 else ''}): a student trained on them is scored on what it saw. "
            "Decontaminate it (amr instructions decontaminate), or set allow_eval_overlap: true."
        )


def _reading(config: RunConfig, source: str | None) -> RunConfig:
    """``config`` with the distill input ``source`` (None: as it is)."""
    if source is None:
        return config
    distill = config.distill
    update = {"input": distill.input.model_copy(update={"source": source})}
    return config.model_copy(update={"distill": distill.model_copy(update=update)})


def _student(config: RunConfig, method: str, group: Group) -> str:
    """The method's train output, on a local or shared disk: under ``students`` when set (``out`` may then be
    an object-store URI), else ``<group>/<method>/student``."""
    if config.students:
        return storage.join(storage.normalize(config.students), *filter(None, [group.name, method]))
    return storage.join(group.out, method, "student")


def _eval_configs(config: RunConfig, model: str, folder: str) -> list[EvalConfig]:
    settings = config.eval.model_dump(exclude={"datasets", "base"})
    if "template" not in config.eval.model_fields_set:  # as the students were trained
        settings["template"] = config.train.template
    return [
        EvalConfig(**settings, model=model, dataset=d, output=storage.join(folder, d)) for d in config.eval.datasets
    ]


def _engine_of(config: RunConfig, model: str | None) -> str | None:
    """The engine that serves ``model`` for evaluation (None: the distill teacher), as ``engine_key`` names it."""
    if model is None:
        teacher, store = config.distill.teacher, config.distill.model_store
    else:
        teacher, store = student(_eval_configs(config, model, ".")[0]), config.eval.model_store
    if teacher.backend != "vllm":
        return None if model is None else "student"
    return engine_key(teacher, teacher.model if teacher.serve.app_name else resolve(teacher.model, store))


def _teacher_needed(config: RunConfig, out: str, own: list[str], base: str | None) -> bool:
    """Whether a step the teacher serves is left: instructions, a method's distillation (of ``own``, the methods
    this run makes), the base evaluation."""
    return (
        config.instructions is not None
        and config.reuse is None
        and not storage.exists(storage.join(out, "instructions", "all.jsonl"))
        or any(not _distilled(storage.join(g.out, m, "distill")) for g in groups(config, out) for m in own)
        or base is not None
        and any(not _scored(storage.join(base, d)) for d in config.eval.datasets)
    )


def _distilled(run_dir: str) -> bool:
    return storage.exists(storage.join(run_dir, "manifest.json")) and storage.exists(
        storage.join(run_dir, "dataset.parquet")
    )


def _scored(eval_dir: str) -> bool:
    return storage.exists(storage.join(eval_dir, "scores.json"))


def _instructions(config: RunConfig, out: str) -> str:
    """The instructions, built under ``out``/instructions with the distill job's teacher, model store, Ray and
    embedding settings where the run's ``instructions`` section leaves them out; the reused run's, built there."""
    if config.reuse:
        return reused_folder(config, "", "instructions", "all.jsonl")
    folder = storage.join(out, "instructions")
    shared = {
        k: getattr(config.distill, k)
        for k in ("teacher", "model_store", "ray", "embedding")
        if k not in config.instructions.model_fields_set
    }
    return instructions.build(config.instructions.model_copy(update=shared), folder)


def _distill(config: RunConfig, method: str, group: Group) -> None:
    run_dir, step = storage.join(group.out, method, "distill"), group.named(f"{method}: distill")
    if _distilled(run_dir):
        return _skip(step, run_dir)
    target = RunDir(run_dir)
    if method in SHARES_DIRECT and not target.stage_done("direct.parquet"):
        folders = [storage.join(group.out, m) for m in SHARES_DIRECT]
        folders += [reused_folder(config, group.name, m) for m in reused(config) if m in SHARES_DIRECT]
        siblings = (RunDir(storage.join(folder, "distill")) for folder in folders)
        shared = next((d for d in siblings if d.stage_done("direct.parquet")), None)
        if shared:  # with the settings it was made from: a different teacher's R_d is refused, not reused
            target.copy_stage("direct.parquet", shared)
            fingerprints.copy(target, shared, "direct")
    _started(step)
    cfg = config.distill.model_copy(update={"method": method, "run_dir": run_dir}, deep=True)
    matched = METHODS[method].matched
    if matched in config.methods:  # resample to the teacher tokens of the method it is matched to (run before it)
        folder = reused_folder(config, group.name, matched) if matched in reused(config) else group.out
        manifest = storage.read_json(storage.join(folder, matched, "distill", "manifest.json"))
        cfg.check.token_budget = teacher_cost(manifest["stages"])["tokens"]
    print_distill(distill.run(cfg), console, table=False)


def _train_config(config: RunConfig, method: str, group: Group) -> TrainConfig:
    """The method's (and level's) training: one Ray Train run each, also where they share a storage_path."""
    return config.train.model_copy(
        update={
            "dataset": storage.join(group.out, method, "distill"),
            "output": _student(config, method, group),
            "name": "-".join(filter(None, [config.train.name, group.name, method])),
        }
    )


def _train(config: RunConfig, method: str, group: Group) -> None:
    from train.trainer import run as train

    cfg, step = _train_config(config, method, group), group.named(f"{method}: train")
    if storage.exists(storage.join(cfg.output, "train.json")):
        return _skip(step, cfg.output)
    _started(step)
    print_train(train(cfg), console)


def _room_to_train(config: TrainConfig) -> bool:
    """Whether the cluster has the resources of a training free now, beside what the teacher and the distillation
    hold: its workers' GPUs (or CPUs) and CPUs."""
    free = ray.available_resources()
    workers = config.scaling.workers
    return (not config.scaling.use_gpu or free.get("GPU", 0) >= workers) and free.get(
        "CPU", 0
    ) >= workers * config.scaling.cpus_per_worker


def _train_meanwhile(
    config: RunConfig, own: list[str], group: Group, following: Group, after: Any
) -> list[tuple[list[str], Any]]:
    """The trainings of ``own`` (the methods this run makes) in ``group`` left to do, one after the other in a Ray task started now, while ``following``
    distils, and after the trainings of ``after`` (the previous level's task, if any): the steps and the task's
    reference to their summaries; none when all are done (``_train`` says so)."""
    left = [(m, group.named(f"{m}: train")) for m in own]
    left = [(m, step) for m, step in left if not storage.exists(storage.join(_student(config, m, group), "train.json"))]
    if not left:
        return []
    steps = [step for _, step in left]
    console.print(f"{', '.join(steps)}: started while {following.name} distils", soft_wrap=True, highlight=False)
    return [(steps, _train_task.remote([_train_config(config, m, group) for m, _ in left], after))]


@ray.remote(num_cpus=0)
def _train_task(configs: list[TrainConfig], after: Any) -> list[dict]:
    """Trainings driven from a Ray task (Ray Train's way to run a training beside other work), one after the other;
    ``after``, another such task's result, is only waited for."""
    from train.trainer import run as train

    return [train(config) for config in configs]


def _evaluate(config: RunConfig, models: list[tuple[str, str, str]]) -> None:
    """Each ``(model, folder, name)`` on every dataset of the run, with one engine a model for all of them; ``name``
    heads its steps. The engines of the models left start together where the cluster has room for all of them
    (``_room_for_engines``), else one after the other."""
    left: list[tuple[str, list[EvalConfig]]] = []
    for model, folder, name in models:
        todo = []
        for cfg in _eval_configs(config, model, folder):
            if _scored(cfg.output):
                _skip(f"{name}: eval {cfg.dataset}", cfg.output)
            else:
                todo.append(cfg)
        if todo:
            left.append((name, todo))
    if not left:
        return
    together = _room_for_engines(config.eval.vllm, len(left))
    for batch in [left] if together else [[model] for model in left]:
        with open_teachers([student(todo[0]) for _, todo in batch], config.eval.model_store):
            for name, todo in batch:
                for cfg in todo:
                    _started(f"{name}: eval {cfg.dataset}")
                    print_scores(evaluate(cfg), console)


def _room_for_engines(config: VLLMConfig, engines: int) -> bool:
    """Whether the cluster has the resources of ``engines`` evaluation engines free now: each replica's GPUs (its
    tensor parallelism), or its CPU."""
    free = ray.available_resources()
    per_engine = config.concurrency * (config.tensor_parallel_size if config.device == "gpu" else 1)
    return free.get("GPU" if config.device == "gpu" else "CPU", 0) >= engines * per_engine


def _started(step: str) -> None:
    """A step's heading (where it writes is in its summary)."""
    console.rule(f"{step}  ({time.strftime('%H:%M:%S')})")


def _skip(step: str, where: str) -> None:
    console.print(f"{step}: done already ({where})", soft_wrap=True, highlight=False)


DryRunOption = typer.Option(False, "--dry-run", help="Print the plan (steps, rows, teacher calls) and stop.")
AddressOption = typer.Option(
    None,
    "--address",
    "-a",
    help="With --dry-run: also check the job against this Ray cluster (its dashboard http://HEAD:8265, or a Ray "
    "address such as auto or HOST:6379); nothing is downloaded.",
)


def main(
    config: Path = typer.Option(None, "--config", "-c", help="YAML run config (defaults if omitted)."),
    output: str = typer.Option(None, "--output", "-o", help="Directory for the whole run (default: the config's)."),
    dry_run: bool = DryRunOption,
    address: str = AddressOption,
    overrides: list[str] = OverridesOption,
) -> None:
    """Run: distill -> train -> eval -> report for the config's methods; resumable; prints where the report is."""
    _main(config, [f"output={output}"] if output else [], overrides, dry_run, address)


def compare(
    methods: str = typer.Option("direct,amr", help="Comma-separated methods, e.g. direct,cot,ansrepair,amr."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML run config (defaults if omitted)."),
    output: str = typer.Option(None, "--output", "-o", help="Directory for the whole run (default: the config's)."),
    dry_run: bool = DryRunOption,
    address: str = AddressOption,
    overrides: list[str] = OverridesOption,
) -> None:
    """Compare: the run for several methods on the same instructions, one report with the table."""
    shortcuts = [f"methods=[{methods}]"] + ([f"output={output}"] if output else [])
    _main(config, shortcuts, overrides, dry_run, address)


def print_plan(steps: list[Step], output: str) -> None:
    table = Table(title=f"amr run: the plan, under {output} (nothing started)")
    for name in ("step", "rows", "model calls", "writes"):
        table.add_column(name, justify="right" if name in ("rows", "model calls") else "left", overflow="fold")
    for step in steps:
        low, high = step.calls
        calls = "" if not high else f"{low}" if low == high else f"{low}-{high}"
        table.add_row(step.name, str(step.rows or ""), calls, step.output)
    console.print(table)
    teacher = [s.calls for s in steps if ": distill" in s.name or s.name.startswith("instructions")]
    low, high = (sum(c[i] for c in teacher) for i in (0, 1))
    console.print(f"teacher calls: {low}-{high} (the rest of the model calls are the evaluated students')")


def _main(
    config: Path | None, shortcuts: list[str], overrides: list[str], dry_run: bool = False, address: str | None = None
) -> None:
    cfg = load_config(RunConfig, config, [*shortcuts, *overrides])
    if address and not dry_run:
        raise typer.BadParameter(
            "goes with --dry-run (a run joins the cluster of distill.ray.address)", param_hint="--address"
        )
    if dry_run:
        _refuse_eval_overlap(cfg)
        steps = plan(cfg)
        print_plan(steps, storage.normalize(cfg.output))
        trained = [s for s in steps if ": train (" in s.name and not s.name.endswith("(reused)")]
        where = storage.normalize(cfg.students or cfg.output)
        lines = plan_lines(cfg.train, trained[0].rows, len(trained), where) if trained else []
        teacher = cfg.distill.teacher
        if teacher.backend == "vllm":
            lines.append(f"teacher weights: {teacher.model}, {staging.describe(teacher.vllm.stage_dir)}")
        lines.append(f"evaluated models' weights: {staging.describe(cfg.eval.vllm.stage_dir)}")
        for line in lines:
            console.print(line, soft_wrap=True, highlight=False)
        if address:
            with shutting_down_ray():
                for line in preflight.describe(preflight.against(cfg, address)):
                    console.print(line, soft_wrap=True, highlight=False, markup=False)
        return
    with shutting_down_ray():
        where = run(cfg)
    for line in report.answer([storage.normalize(cfg.output)]):  # did AMR help, in words
        console.print(line, soft_wrap=True, highlight=False)
    console.print(f"report: {storage.join(where, 'report.html')} (and report.md)", soft_wrap=True, highlight=False)


if __name__ == "__main__":
    run_as_module(main, "run")
