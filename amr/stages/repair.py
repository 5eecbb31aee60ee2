"""Answer repair (baseline AnsRepair): teacher-written tests for each question, R_d run against them
in the sandbox, one repair of a failing R_d from the execution feedback.

Open choices, as defaults: one repair round; the tests are only the teacher's (an instruction's own
``tests`` are never shown, they measure response accuracy); R_d stands when the teacher writes no test.
"""

from __future__ import annotations

from typing import Any

import ray

from amr.engines import Teacher
from amr.parsing import assert_statements, python_code
from amr.prompts import repair
from amr.sandbox.stage import SandboxActors
from amr.stages import ask, calls


def _with_check(row: dict[str, Any]) -> dict[str, Any]:
    tests = assert_statements(row["anstest_response"] or "")
    return {
        **row,
        "self_tests": tests,
        "code": python_code(row["direct_response"] or "") or "",
        "test": "\n".join(tests),
    }


def _verdict(row: dict[str, Any], carry: list[str]) -> dict[str, Any]:
    if row["anstest_error"] or not row["self_tests"]:
        status, reason = "no tests", row["anstest_error"] or "no assert statement in the answer"
    else:
        status, reason = row["status"], row["reason"]
    return {
        **{k: row[k] for k in carry},
        "self_tests": row["self_tests"],
        "self_test_status": status,
        "self_test_reason": reason,
    }


def test(ds: ray.data.Dataset, teacher: Teacher, sandbox: SandboxActors) -> ray.data.Dataset:
    """Rows with ``instruction`` and ``direct_response`` -> + ``anstest_*``, ``self_tests`` and the
    sandbox verdict of R_d against them: ``self_test_status`` (passed, failed, ..., no tests), ``self_test_reason``."""
    asked = ask(ds, teacher, lambda row: repair.tests_messages(row["instruction"]), "anstest")
    carry = [*ds.columns(), "anstest_response", *calls("anstest")]
    return sandbox.check_dataset(asked.map(_with_check)).map(lambda row: _verdict(row, carry))


def run(ds: ray.data.Dataset, teacher: Teacher) -> ray.data.Dataset:
    """Rows whose R_d failed its tests -> + ``repair_*`` columns: the repaired answer."""

    def build(row: dict[str, Any]) -> list[dict[str, str]]:
        solution = python_code(row["direct_response"] or "") or row["direct_response"] or ""
        return repair.repair_messages(row["instruction"], solution, row["self_test_reason"])

    return ask(ds, teacher, build, "repair")


def needs_repair(row: dict[str, Any]) -> bool:
    return not row["direct_error"] and row["self_test_status"] not in ("passed", "no tests")


def final(row: dict[str, Any], repaired: dict[str, Any] | None) -> dict[str, Any]:
    """The row with ``ansrepair_response``/``ansrepair_error``: the repair where there was one, else R_d."""
    if repaired is None:
        return {**row, "ansrepair_response": row["direct_response"], "ansrepair_error": row["direct_error"]}
    return {**row, "ansrepair_response": repaired["repair_response"], "ansrepair_error": repaired["repair_error"]}
