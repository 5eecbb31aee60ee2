"""What ``amr run`` will do, before it starts anything (``amr run --dry-run``): its steps in order, the rows
each handles and the teacher calls each makes, estimated from the config alone.

Estimates are ranges where the teacher's answers decide: decomposition asks again (once) for answers without
specs; AnsRepair repairs only the answers that fail their tests; resampling only the rows no answer passed;
growth asks one test per new function, which the table's growth decides (counted here as up to two per row, what
AMR-Evol's answers usually define). A matched baseline resamples to the teacher tokens of the method it is
matched to, and its row says so. Steps read from the reused run (``reuse``) make no call.
"""

from __future__ import annotations

from dataclasses import dataclass

from amr import storage
from amr.config import RunConfig
from amr.data import iter_instructions
from amr.methods import distill_order, method
from amr.pipelines.instructions import EVOLVED, round_path
from amr.training import schedule

FUNCTIONS_PER_ROW = 2
"""New functions per answer assumed for the upper estimate of growth tests."""
EVAL_TASKS = {"humaneval": 164, "mbpp": 399}
"""Tasks of the evaluated releases (HumanEval+ v0.1.10, MBPP+ v0.1.0)."""


@dataclass(frozen=True)
class Group:
    """The instructions one set of methods distils: all of them (``name`` ""), or one evolution level's
    (``levelL``, under ``OUTPUT/levelL``)."""

    name: str
    out: str
    level: int | None = None

    def source(self, built: str | None) -> str | None:
        """The distill input: the built instructions (``all.jsonl``, or this level's round beside it), None for
        the config's own."""
        if built is None or self.level is None:
            return built
        return round_path(storage.join(storage.parent(built), EVOLVED), self.level)

    def named(self, step: str) -> str:
        return f"{self.name} {step}" if self.name else step


def groups(config: RunConfig, out: str) -> list[Group]:
    """The run's groups under ``out``: one, or one per level of ``config.levels``."""
    if config.levels is None:
        return [Group("", out)]
    return [Group(f"level{level}", storage.join(out, f"level{level}"), level) for level in config.levels]


@dataclass(frozen=True)
class Step:
    name: str
    rows: int
    calls: tuple[int, int]
    """Teacher (or, for an evaluation, evaluated model) calls: at least, at most."""
    output: str
    """Where it writes, relative to the run's ``output``."""


def reused(config: RunConfig) -> list[str]:
    """The methods whose steps the run reads from ``config.reuse`` (every method of both runs)."""
    return [m for m in config.methods if config.reuse and m in config.reuse.methods]


def reused_folder(config: RunConfig, folder: str, *parts: str) -> str:
    """Where a step of the reused run lies: ``folder`` ("" or ``levelL``) and ``parts`` under its output."""
    return storage.join(storage.normalize(config.reuse.output), *filter(None, [folder, *parts]))


def plan(config: RunConfig) -> list[Step]:
    """The run's steps in the order ``amr run`` takes them (a step done already still counts: a rerun skips it).
    A step read from the reused run (``reuse``) makes no call and names where it lies."""
    steps: list[Step] = []
    limit = config.distill.input.limit
    if config.instructions:
        if config.reuse:
            where = reused_folder(config, "", "instructions")
            steps.append(Step("instructions: reused", 0, (0, 0), where))
        else:
            steps += _instruction_steps(config, "instructions")
        count, rounds = config.instructions.self_instruct.count, config.instructions.evolve.rounds
        built = count if config.levels else count * (1 + rounds)  # a level: one round's instructions
        rows = min(built, limit or built)
    else:
        rows = sum(1 for _ in iter_instructions(config.distill.input.source, limit))
    folders = [g.out for g in groups(config, "")]  # relative to the run's output: "" or levelL
    for folder in folders:
        steps += _distill_steps(config, rows, folder)
    steps += [
        _step(config, folder, name, f"train ({_epochs(config, rows)})", rows, (0, 0), ("student",))
        for folder in folders
        for name in distill_order(config.methods)
    ]
    for folder, name in [(f, m) for f in folders for m in distill_order(config.methods)] + [("", "base")] * bool(
        config.eval.base
    ):
        for dataset in config.eval.datasets:
            tasks = min(EVAL_TASKS[dataset], config.eval.limit or EVAL_TASKS[dataset])
            calls = tasks * config.eval.samples
            steps.append(_step(config, folder, name, f"eval {dataset}", tasks, (calls, calls), ("eval", dataset)))
    steps.append(Step("report", 0, (0, 0), "report"))
    return steps


def _epochs(config: RunConfig, rows: int) -> str:
    """How much of its data a student's training covers: ``amr.training.schedule`` of ``rows`` (the global batch
    derived from them where it is ``auto``, the epochs stopped at ``max_steps``)."""
    workers = config.train.scaling.workers
    if rows < workers:
        return f"{rows} rows for {workers} workers: too few"
    run = schedule(config.train, rows)
    return f"{run.steps} steps x {run.global_batch}: {run.epochs:.2g} of {run.asked_epochs:g} epochs"


def _step(
    config: RunConfig, folder: str, name: str, what: str, rows: int, calls: tuple[int, int], parts: tuple[str, ...]
) -> Step:
    """A method's step of one group; read from the reused run (no call) for a method it reuses."""
    title = f"{storage.join(folder, name)}: {what}"
    if name in reused(config):
        return Step(f"{title} (reused)", rows, (0, 0), reused_folder(config, folder, name, *parts))
    return Step(title, rows, calls, storage.join(folder, name, *parts))


def _distill_steps(config: RunConfig, rows: int, folder: str) -> list[Step]:
    """Each method's distillation of one group's ``rows`` (``folder``: "" or ``levelL``), in the order they run."""
    steps, asked_direct = [], any(method(m).reads_direct for m in reused(config))  # R_d of the reused run
    for name in distill_order(config.methods):
        m, check = method(name), config.distill.check
        low = high = 0
        for stage in m.stages:
            if stage == "direct" and asked_direct:
                continue  # methods that start from R_d share one
            asked_direct |= stage == "direct"
            few, many = _stage_calls(stage, rows, m.uses_modules, check.resamples)
            low, high = low + few, high + many
        if m.uses_modules:
            bootstrap = config.distill.modules.bootstrap_limit
            low, high = low + bootstrap, high + bootstrap * (1 + FUNCTIONS_PER_ROW)
        budget = (
            f"; resampling to {m.matched}'s teacher tokens, at most {check.max_rounds} rounds"
            if m.matched in config.methods
            else ""
        )
        if budget:  # the rounds the budget allows, at most max_rounds
            high += rows * (check.max_rounds - check.resamples)
        stages = f"distill ({', '.join(m.stages)}{budget})"
        steps.append(_step(config, folder, name, stages, rows, (low, high), ("distill",)))
    return steps


def _stage_calls(stage: str, rows: int, grows: bool, resamples: int) -> tuple[int, int]:
    """Teacher calls of one distill stage over ``rows`` rows: at least, at most."""
    if stage in ("direct", "cot", "anstest"):
        return rows, rows
    if stage in ("decompose", "repair"):
        return (rows, 2 * rows) if stage == "decompose" else (0, rows)
    if stage == "waves":  # the final answer, and a test per new function where the table grows
        return rows, rows * (1 + FUNCTIONS_PER_ROW) if grows else rows
    if stage == "resample":  # the rows no answer passed, a round each
        return 0, rows * resamples
    return 0, 0  # embed, check: no teacher


def _instruction_steps(config: RunConfig, folder: str) -> list[Step]:
    cfg = config.instructions
    count, rounds = cfg.self_instruct.count, cfg.evolve.rounds
    requests = int(count * cfg.self_instruct.oversample)
    judged = cfg.decontam.judge
    steps = [
        Step("instructions: seeds (MBPP train, decontaminated)", 0, (0, 0), f"{folder}/seeds.jsonl"),
        Step("instructions: self-instruct", count, (requests, requests), f"{folder}/self-instruct.jsonl"),
        Step(f"instructions: evolution, {rounds} rounds", count * rounds, (count, count * rounds), folder),
    ]
    if judged:  # the judge asks about the rows near a benchmark item only: up to every row
        steps.append(Step("instructions: decontamination judge", 0, (0, count * (1 + rounds)), folder))
    return steps
