"""Pipeline stages: each maps records (a Ray Dataset, or a wave of rows on the driver) to the next."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import ray

from amr.engines import Teacher, fault_counts

SAMPLED_AS: dict[str, str | None] = {
    "direct": "direct",
    "resample": "direct",
    "cot": "cot",
    "md": "decompose",
    "are": "response_evolution",
    "test": "tests",
    "anstest": "tests",
    "bootstrap": "bootstrap",
    "repair": "repair",
    "si": None,  # instruction building: each row carries its own sampling (self_instruct.sampling, evolve.sampling)
    "evol": None,
}
"""Which stage of ``teacher.stages`` samples a teacher call, by the call's name (its columns' prefix)."""


def stage_sampling(teacher: Teacher, name: str) -> dict[str, Any]:
    """The sampling keys the stage of call ``name`` sets over ``teacher.sampling``."""
    try:
        stage = SAMPLED_AS[name]
    except KeyError:
        raise ValueError(
            f"teacher call {name!r}: no stage of teacher.stages samples it (amr.stages.SAMPLED_AS)"
        ) from None
    return {} if stage is None else getattr(teacher.config.stages, stage).model_dump(exclude_none=True)


def ask(
    ds: ray.data.Dataset,
    teacher: Teacher,
    build: Callable[[dict[str, Any]], list[dict[str, str]]],
    name: str,
    carry: Sequence[str] | None = None,
) -> ray.data.Dataset:
    """One teacher call per row: ``build(row)`` gives the chat; the row keeps ``carry`` (default: all
    its columns) and gains ``{name}_response`` and the ``calls(name)`` columns."""
    carry, stage, tasks = tuple(carry or ds.columns()), stage_sampling(teacher, name), teacher.task_args()
    requests = teacher.batched(ds).map(lambda row: _request(row, build, carry, stage), **tasks)
    return teacher.generate(requests, carry=carry).map(lambda row: _renamed(row, name, carry), **tasks)


def ask_rows(
    rows: list[dict[str, Any]], teacher: Teacher, build: Callable[[dict[str, Any]], list[dict[str, str]]], name: str
) -> list[dict[str, Any]]:
    """``ask`` for rows the driver holds (a wave): all sent at once through ``Teacher.complete``, in order."""
    if not rows:
        return []
    carry, stage = tuple(rows[0]), stage_sampling(teacher, name)
    answers = teacher.complete([_request(row, build, carry, stage) for row in rows], carry=carry)
    return [_renamed(row, name, carry) for row in answers]


def _request(
    row: dict[str, Any],
    build: Callable[[dict[str, Any]], list[dict[str, str]]],
    carry: tuple[str, ...],
    stage: dict[str, Any],
) -> dict[str, Any]:
    """A request row: the carried columns, the chat, and the stage's sampling under the row's own (a resample's
    seed, an instruction's); no ``sampling`` where neither sets any."""
    request = {**{k: row[k] for k in carry}, "messages": build(row)}
    if sampling := {**stage, **{k: v for k, v in (row.get("sampling") or {}).items() if v is not None}}:
        request["sampling"] = sampling
    return request


def _renamed(row: dict[str, Any], name: str, carry: tuple[str, ...]) -> dict[str, Any]:
    return {
        **{k: row[k] for k in carry},
        f"{name}_response": row["response"],
        f"{name}_error": row["error"],
        f"{name}_input_tokens": row["num_input_tokens"],
        f"{name}_output_tokens": row["num_output_tokens"],
        f"{name}_faults": row["faults"],
        f"{name}_finish": row["finish"],
    }


def asked(columns: Sequence[str], name: str) -> list[str]:
    """The columns of ``ask(..., name)`` over rows of ``columns`` (carrying all of them)."""
    return [*columns, f"{name}_response", *calls(name)]


def calls(name: str) -> list[str]:
    """The columns ``ask(..., name)`` adds that describe the calls: error, token counts, faults met, why the answer
    ended."""
    return [f"{name}_error", f"{name}_input_tokens", f"{name}_output_tokens", f"{name}_faults", f"{name}_finish"]


def teacher_counts(batches: Iterable[dict[str, list[Any]]], name: str) -> dict[str, Any]:
    """Rows, errors (and three examples), tokens, the retried attempts and errors by kind (``fault_counts``), and the
    answers by how they ended (``finished``: stop, length, runaway) from batches of the ``calls(name)`` columns."""
    counts: dict[str, Any] = {"rows": 0, "errors": 0, "error_examples": [], "input_tokens": 0, "output_tokens": 0}
    by_kind: dict[str, Counter[str]] = {"retries": Counter(), "errors_by_kind": Counter(), "finished": Counter()}
    for batch in batches:
        errors, inputs, outputs, faults, finished = (batch[c] for c in calls(name))
        by_kind["finished"].update(f for f in finished if f)
        counts["rows"] += len(errors)
        found = [e for e in errors if e]
        counts["errors"] += len(found)
        counts["error_examples"] += found[: 3 - len(counts["error_examples"])]
        counts["input_tokens"] += int(sum(t or 0 for t in inputs))
        counts["output_tokens"] += int(sum(t or 0 for t in outputs))
        for key, kinds in fault_counts(faults, errors).items():
            by_kind[key].update(kinds)
    return {**counts, **{key: dict(sorted(kinds.items())) for key, kinds in by_kind.items()}}


def endings(counts: dict[str, Any]) -> list[str]:
    """A stage's answers (and its tests') that did not end by themselves, in words: stopped as runaways, cut at
    max_tokens (from ``teacher_counts``' ``finished`` and growth's ``test_finished``)."""
    ended = Counter(counts.get("finished", {})) + Counter(counts.get("test_finished", {}))
    words = (("runaway", "runaways stopped"), ("length", "cut at max_tokens"))
    return [f"{ended[kind]} {word}" for kind, word in words if ended[kind]]
