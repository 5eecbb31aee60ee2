"""Modular decomposition: the teacher splits R_d into function specs (typed signature + docstring)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import ray

from amr.engines import Teacher
from amr.parsing import function_specs
from amr.prompts import decompose
from amr.stages import ask, calls


def parse(row: dict[str, Any]) -> dict[str, Any]:
    """Add ``specs`` (a JSON list of name/signature/description) and ``md_reason`` (why none)."""
    specs = [] if row["md_error"] else function_specs(row["md_response"])
    reason = None
    if row["md_error"]:
        reason = f"teacher error: {row['md_error']}"
    elif not specs:
        reason = "no function with a signature and docstring in the answer"
    return {**row, "specs": json.dumps(specs), "md_reason": reason}


def run(ds: ray.data.Dataset, teacher: Teacher, columns: Sequence[str] | None = None) -> ray.data.Dataset:
    """Rows of ``columns`` with ``instruction`` and ``direct_response`` -> + MD answer, ``specs``, ``md_reason``,
    ``md_retried`` (False). Name the columns where ``ds`` is direct's rows as they are made (``Job.chain``): Ray
    Data would learn them by running its first rows."""
    build = lambda row: decompose.messages(row["instruction"], row["direct_response"])  # noqa: E731
    return ask(ds, teacher, build, "md", columns).map(parse).map(lambda row: {**row, "md_retried": False})


def needs_retry(row: dict[str, Any]) -> bool:
    """The teacher answered, and no spec parsed from the answer."""
    return not row["md_error"] and row["md_reason"] is not None


def retry(ds: ray.data.Dataset, teacher: Teacher) -> ray.data.Dataset:
    """Rows of ``run`` that need a retry -> asked once more with a reminder of the format; their MD columns
    replaced by the new answer's, ``md_retried`` True."""
    answer = ("md_response", *calls("md"), "specs", "md_reason", "md_retried")
    carry = [c for c in ds.columns() if c not in answer]

    def build(row: dict[str, Any]) -> list[dict[str, str]]:
        return decompose.retry_messages(row["instruction"], row["direct_response"], row["md_response"] or "")

    return ask(ds, teacher, build, "md", carry).map(parse).map(lambda row: {**row, "md_retried": True})
