"""Answer repair (baseline AnsRepair, the paper's): the teacher writes a test function from the question and R_d,
R_d runs against it in the sandbox, and a failing R_d is repaired once from the wrong solution and the failure.
The checked methods run R_d against asserts the teacher writes from the question alone (``test(..., paper=False)``).

Open choices, as defaults: one repair round; the tests are only the teacher's (an instruction's own
``tests`` are never shown, they measure response accuracy); R_d stands when the teacher writes no test.
"""

from __future__ import annotations

import ast
from typing import Any

import ray

from amr.engines import Teacher
from amr.parsing import assert_statements, python_code
from amr.prompts import repair
from amr.sandbox.stage import SandboxActors
from amr.stages import ask, asked


def runnable_test(response: str) -> list[str]:
    """AnsRepair's test: the answer's test code, if the sandbox would run an assert of it (at the top level or in a
    ``test_*`` function, which the sandbox calls), else none."""
    code = python_code(response, cut_off=True)
    if not code:
        return []
    tree = ast.parse(code)
    run = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    run += [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_") and not n.args.args]
    return [code] if any(isinstance(a, ast.Assert) for n in run for a in ast.walk(n)) else []


def _with_check(row: dict[str, Any], paper: bool) -> dict[str, Any]:
    response = row["anstest_response"] or ""
    tests = runnable_test(response) if paper else assert_statements(response)
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


def _solution(row: dict[str, Any]) -> str:
    return python_code(row["direct_response"] or "") or row["direct_response"] or ""


def test(ds: ray.data.Dataset, teacher: Teacher, sandbox: SandboxActors, paper: bool = True) -> ray.data.Dataset:
    """Rows with ``instruction`` and ``direct_response`` -> + ``anstest_*``, ``self_tests`` and the sandbox
    verdict of R_d against them: ``self_test_status`` (passed, failed, ..., no tests), ``self_test_reason``.
    ``paper``: AnsRepair's test function from the question and R_d; else asserts from the question alone."""

    def build(row: dict[str, Any]) -> list[dict[str, str]]:
        if paper:
            return repair.tests_messages(row["instruction"], _solution(row))
        return repair.asserts_messages(row["instruction"])

    answered = ask(ds, teacher, build, "anstest")
    carry = asked(ds.columns(), "anstest")
    return sandbox.check_dataset(answered.map(lambda row: _with_check(row, paper))).map(
        lambda row: _verdict(row, carry)
    )


def run(ds: ray.data.Dataset, teacher: Teacher) -> ray.data.Dataset:
    """Rows whose R_d failed its tests -> + ``repair_*`` columns: the repaired answer."""
    return ask(
        ds,
        teacher,
        lambda row: repair.repair_messages(row["instruction"], _solution(row), row["self_test_reason"]),
        "repair",
    )


def needs_repair(row: dict[str, Any]) -> bool:
    return not row["direct_error"] and row["self_test_status"] not in ("passed", "no tests")


def final(row: dict[str, Any], repaired: dict[str, Any] | None) -> dict[str, Any]:
    """The row with ``ansrepair_response``/``ansrepair_error``: the repair where there was one, else R_d."""
    if repaired is None:
        return {
            **row,
            "ansrepair_response": row["direct_response"],
            "ansrepair_error": row["direct_error"],
            "ansrepair_source": "direct",
        }
    return {
        **row,
        "ansrepair_response": repaired["repair_response"],
        "ansrepair_error": repaired["repair_error"],
        "ansrepair_source": "repair",
    }
