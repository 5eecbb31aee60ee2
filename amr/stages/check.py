"""The check of ``amr-checked`` (beyond the paper): the evolved answer and R_d both run against teacher-written
tests for the instruction (``repair.test``'s, never the instruction's own tests); the evolved answer replaces R_d
where it passes them and R_d does not (or R_d is missing). Where the tests cannot tell the two apart (both pass,
both fail, no tests), R_d stays: a rewrite changes a right answer as often as a wrong one."""

from __future__ import annotations

from typing import Any

import ray

from amr.parsing import python_code
from amr.sandbox.pool import RECORD_FIELDS
from amr.sandbox.stage import SandboxActors


def run(ds: ray.data.Dataset, sandbox: SandboxActors) -> ray.data.Dataset:
    """Rows with ``are_*``, ``direct_*``, ``self_tests`` and R_d's ``self_test_status`` -> + the evolved answer's
    ``are_self_test_status``, ``checked_source`` (``are`` or ``direct``) and ``checked_response``/``checked_error``."""

    def with_code(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "code": python_code(row["are_response"] or "") or "", "test": "\n".join(row["self_tests"])}

    return sandbox.check_dataset(ds.map(with_code)).map(choose)


def choose(row: dict[str, Any]) -> dict[str, Any]:
    """The row without the check's columns, with the chosen answer."""
    evolved = not row["are_error"] and bool(row["are_response"])
    if not row["self_tests"]:
        status = "no tests"
    elif not evolved:
        status = "no answer"
    else:
        status = row["status"]
    direct_ok = not row["direct_error"] and bool(row["direct_response"])
    better = evolved and status == "passed" and row["self_test_status"] != "passed"
    source = "are" if better or (evolved and not direct_ok) else "direct"
    out = {k: v for k, v in row.items() if k not in (*RECORD_FIELDS, "code", "test")}
    return {
        **out,
        "are_self_test_status": status,
        "checked_source": source,
        "checked_response": row[f"{source}_response"],
        "checked_error": row[f"{source}_error"],
    }
