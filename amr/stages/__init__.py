"""Pipeline stages: each maps records (a Ray Dataset, or a wave of rows on the driver) to the next."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import ray

from amr.engines import Teacher, fault_counts


def ask(
    ds: ray.data.Dataset,
    teacher: Teacher,
    build: Callable[[dict[str, Any]], list[dict[str, str]]],
    name: str,
    carry: Sequence[str] | None = None,
) -> ray.data.Dataset:
    """One teacher call per row: ``build(row)`` gives the chat; the row keeps ``carry`` (default: all
    its columns) and gains ``{name}_response`` and the ``calls(name)`` columns."""
    carry = tuple(carry or ds.columns())
    return teacher.generate(ds.map(lambda row: _request(row, build, carry)), carry=carry).map(
        lambda row: _renamed(row, name, carry)
    )


def ask_rows(
    rows: list[dict[str, Any]], teacher: Teacher, build: Callable[[dict[str, Any]], list[dict[str, str]]], name: str
) -> list[dict[str, Any]]:
    """``ask`` for rows the driver holds (a wave): all sent at once through ``Teacher.complete``, in order."""
    if not rows:
        return []
    carry = tuple(rows[0])
    answers = teacher.complete([_request(row, build, carry) for row in rows], carry=carry)
    return [_renamed(row, name, carry) for row in answers]


def _request(
    row: dict[str, Any], build: Callable[[dict[str, Any]], list[dict[str, str]]], carry: tuple[str, ...]
) -> dict[str, Any]:
    return {**{k: row[k] for k in carry}, "messages": build(row)}


def _renamed(row: dict[str, Any], name: str, carry: tuple[str, ...]) -> dict[str, Any]:
    return {
        **{k: row[k] for k in carry},
        f"{name}_response": row["response"],
        f"{name}_error": row["error"],
        f"{name}_input_tokens": row["num_input_tokens"],
        f"{name}_output_tokens": row["num_output_tokens"],
        f"{name}_faults": row["faults"],
    }


def calls(name: str) -> list[str]:
    """The columns ``ask(..., name)`` adds that describe the calls: error, token counts, faults met."""
    return [f"{name}_error", f"{name}_input_tokens", f"{name}_output_tokens", f"{name}_faults"]


def teacher_counts(batches: Iterable[dict[str, list[Any]]], name: str) -> dict[str, Any]:
    """Rows, errors (and three examples), tokens, and the retried attempts and errors by kind (``fault_counts``)
    from batches of the ``calls(name)`` columns."""
    counts: dict[str, Any] = {"rows": 0, "errors": 0, "error_examples": [], "input_tokens": 0, "output_tokens": 0}
    by_kind: dict[str, Counter[str]] = {"retries": Counter(), "errors_by_kind": Counter()}
    for batch in batches:
        errors, inputs, outputs, faults = (batch[c] for c in calls(name))
        counts["rows"] += len(errors)
        found = [e for e in errors if e]
        counts["errors"] += len(found)
        counts["error_examples"] += found[: 3 - len(counts["error_examples"])]
        counts["input_tokens"] += int(sum(t or 0 for t in inputs))
        counts["output_tokens"] += int(sum(t or 0 for t in outputs))
        for key, kinds in fault_counts(faults, errors).items():
            by_kind[key].update(kinds)
    return {**counts, **{key: dict(sorted(kinds.items())) for key, kinds in by_kind.items()}}
