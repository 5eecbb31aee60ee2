"""Pipeline stages: each maps records (a Ray Dataset, or a wave of rows on the driver) to the next."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import ray

from amr.engines import Teacher


def ask(ds: ray.data.Dataset, teacher: Teacher, build: Callable[[dict[str, Any]], list[dict[str, str]]],
        name: str, carry: Sequence[str] | None = None) -> ray.data.Dataset:
    """One teacher call per row: ``build(row)`` gives the chat; the row keeps ``carry`` (default: all
    its columns) and gains ``{name}_response``, ``{name}_error``, ``{name}_input_tokens`` and
    ``{name}_output_tokens``."""
    carry = tuple(carry or ds.columns())

    def request(row: dict[str, Any]) -> dict[str, Any]:
        return {**{k: row[k] for k in carry}, "messages": build(row)}

    def rename(row: dict[str, Any]) -> dict[str, Any]:
        return {**{k: row[k] for k in carry}, f"{name}_response": row["response"], f"{name}_error": row["error"],
                f"{name}_input_tokens": row["num_input_tokens"], f"{name}_output_tokens": row["num_output_tokens"]}

    return teacher.generate(ds.map(request), carry=carry).map(rename)
