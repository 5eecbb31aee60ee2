"""The check of the checked methods (beyond the paper): the evolved answer and R_d both run against teacher-written
asserts for the instruction (``repair.test``'s, never the instruction's own tests); the evolved answer replaces R_d
where it passes them and R_d does not (or R_d is missing). Where the tests cannot tell the two apart (both pass,
both fail, no tests), R_d stays: a rewrite changes a right answer as often as a wrong one. ``direct-checked`` has
R_d alone (``evolved=False``).

Where no answer passes, ``resample`` rounds draw one more sample of the direct answer per row and take the first
that passes (rejection sampling against the same tests)."""

from __future__ import annotations

from typing import Any

import ray

from amr.engines import Teacher
from amr.parsing import python_code
from amr.prompts import direct
from amr.sandbox.pool import RECORD_FIELDS
from amr.sandbox.stage import SandboxActors
from amr.stages import ask


def run(ds: ray.data.Dataset, sandbox: SandboxActors, evolved: bool = True) -> ray.data.Dataset:
    """Rows with ``are_*``, ``direct_*``, ``self_tests`` and R_d's ``self_test_status`` -> + the evolved answer's
    ``are_self_test_status``, ``checked_source`` (``are`` or ``direct``), ``checked_response``/``checked_error`` and
    ``checked_status``, the chosen answer's verdict. Without an evolved answer (``evolved`` False: no ``are_*``
    columns), R_d is the chosen answer."""
    if not evolved:
        return ds.map(_direct)
    return sandbox.check_dataset(ds.map(lambda row: _against_tests(row, "are_response"))).map(choose)


def _direct(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "checked_source": "direct",
        "checked_response": row["direct_response"],
        "checked_error": row["direct_error"],
        "checked_status": row["self_test_status"],
    }


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
    return {
        **_without_check(row),
        "are_self_test_status": status,
        "checked_source": source,
        "checked_response": row[f"{source}_response"],
        "checked_error": row[f"{source}_error"],
        "checked_status": status if source == "are" else row["self_test_status"],
    }


def unresolved(row: dict[str, Any]) -> bool:
    """The row has teacher tests and its chosen answer does not pass them."""
    return bool(row["self_tests"]) and row["checked_status"] != "passed"


def resample(
    ds: ray.data.Dataset, teacher: Teacher, sandbox: SandboxActors, sampling: dict[str, Any]
) -> ray.data.Dataset:
    """Unresolved rows -> one sample of the direct answer each (``resample_*``, drawn with ``sampling``), run against
    the teacher's tests; where it passes it becomes the row's answer (``checked_source`` ``resample``)."""
    fresh = ds.map(
        lambda row: {**{k: v for k, v in row.items() if not k.startswith("resample_")}, "sampling": sampling}
    )
    asked = ask(fresh, teacher, lambda row: direct.messages(row["instruction"]), "resample")

    return sandbox.check_dataset(asked.map(lambda row: _against_tests(row, "resample_response"))).map(_adopted)


def _adopted(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in _without_check(row).items() if k != "sampling"}
    if row["resample_error"] or row["status"] != "passed":
        return out
    return {
        **out,
        "checked_source": "resample",
        "checked_response": row["resample_response"],
        "checked_error": None,
        "checked_status": "passed",
    }


def _against_tests(row: dict[str, Any], response: str) -> dict[str, Any]:
    """The row as a sandbox check: the code of its ``response`` column against the teacher's tests."""
    return {**row, "code": python_code(row[response] or "") or "", "test": "\n".join(row["self_tests"])}


def _without_check(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in (*RECORD_FIELDS, "code", "test")}
