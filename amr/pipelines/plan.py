"""What ``amr run`` will do, before it starts anything (``amr run --dry-run``): its steps in order, the rows
each handles and the teacher calls each makes, estimated from the config alone.

Estimates are ranges where the teacher's answers decide: decomposition asks again (once) for answers without
specs; AnsRepair repairs only the answers that fail their tests; growth asks one test per new function, which
the table's growth decides (counted here as up to two per row, what AMR-Evol's answers usually define).
"""

from __future__ import annotations

from dataclasses import dataclass

from amr import storage
from amr.config import RunConfig
from amr.data import iter_instructions
from amr.methods import method
from amr.pipelines.instructions import EVOLVED, round_path

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


def plan(config: RunConfig) -> list[Step]:
    """The run's steps in the order ``amr run`` takes them (a step done already still counts: a rerun skips it)."""
    steps: list[Step] = []
    limit = config.distill.input.limit
    if config.instructions:
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
        Step(f"{storage.join(folder, name)}: train", rows, (0, 0), storage.join(folder, name, "student"))
        for folder in folders
        for name in config.methods
    ]
    evaluated = [storage.join(folder, name) for folder in folders for name in config.methods]
    for name in [*evaluated, *(["base"] if config.eval.base else [])]:
        for dataset in config.eval.datasets:
            tasks = min(EVAL_TASKS[dataset], config.eval.limit or EVAL_TASKS[dataset])
            calls = tasks * config.eval.samples
            steps.append(Step(f"{name}: eval {dataset}", tasks, (calls, calls), storage.join(name, "eval", dataset)))
    steps.append(Step("report", 0, (0, 0), "report"))
    return steps


def _distill_steps(config: RunConfig, rows: int, folder: str) -> list[Step]:
    """Each method's distillation of one group's ``rows`` (``folder``: "" or ``levelL``)."""
    steps, asked_direct = [], False
    for name in config.methods:
        m, where = method(name), storage.join(folder, name)
        low = high = 0
        for stage in m.stages:
            if stage == "direct" and asked_direct:
                continue  # methods that start from R_d share one
            asked_direct |= stage == "direct"
            few, many = _stage_calls(stage, rows, m.uses_modules)
            low, high = low + few, high + many
        if m.uses_modules:
            bootstrap = config.distill.modules.bootstrap_limit
            low, high = low + bootstrap, high + bootstrap * (1 + FUNCTIONS_PER_ROW)
        steps.append(
            Step(f"{where}: distill ({', '.join(m.stages)})", rows, (low, high), storage.join(where, "distill"))
        )
    return steps


def _stage_calls(stage: str, rows: int, grows: bool) -> tuple[int, int]:
    """Teacher calls of one distill stage over ``rows`` rows: at least, at most."""
    if stage in ("direct", "cot", "anstest"):
        return rows, rows
    if stage in ("decompose", "repair"):
        return (rows, 2 * rows) if stage == "decompose" else (0, rows)
    if stage == "waves":  # the final answer, and a test per new function where the table grows
        return rows, rows * (1 + FUNCTIONS_PER_ROW) if grows else rows
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
