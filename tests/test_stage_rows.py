"""The stages' rules row by row, in this process (tests/support/rows.py stands in for Ray, the teacher and the
sandbox): which answer each row ends with, and what the teacher and the sandbox are given. The same stages on a
real Ray, teacher and sandbox: tests/test_stages.py and tests/test_distill.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from amr.prompts import cot as cot_prompt
from amr.prompts import decompose as md_prompt
from amr.prompts import direct as direct_prompt
from amr.prompts import repair as repair_prompt
from amr.prompts import response_evolution as are_prompt
from amr.runtime import CALLER_TASK
from amr.stages import (
    ask_rows,
    check,
    cot,
    decompose,
    decontaminate,
    direct,
    embed,
    repair,
    response_evolution,
    teacher_counts,
)
from tests.support.rows import Rows, Sandbox, Teacher

pytestmark = pytest.mark.timeout(60)

ADD = 'def add(a, b):\n    """Return a + b."""\n    return a + b'
ADD_THREE = "def add_three(a, b, c):\n    return add(add(a, b), c)"
SPECS = json.dumps(
    [
        {"name": "add", "signature": "def add(a, b)", "description": "Return a + b."},
        {"name": "add_three", "signature": "def add_three(a, b, c)", "description": "Sum of three."},
    ]
)


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def user(messages: list[dict[str, str]]) -> str:
    """The chat's first user message (the task; a retry adds a reminder after it)."""
    return next(m["content"] for m in messages if m["role"] == "user")


def test_direct_and_cot_ask_once_per_instruction_and_name_their_columns():
    teacher = Teacher(lambda messages: (fenced("def f():\n    return 1"), None))
    rows = Rows([{"id": "a", "instruction": "Write f."}, {"id": "b", "instruction": "Write g."}])
    answered = direct.run(rows, teacher).take_all()
    assert [r["messages"] for r in teacher.requests] == [
        direct_prompt.messages("Write f."),
        direct_prompt.messages("Write g."),
    ]
    assert answered[1] == {
        "id": "b",
        "instruction": "Write g.",
        "direct_response": fenced("def f():\n    return 1"),
        "direct_error": None,
        "direct_input_tokens": sum(len(m["content"].split()) for m in direct_prompt.messages("Write g.")),
        "direct_output_tokens": 6,
        "direct_faults": "",
        "direct_finish": "stop",
    }
    assert all("sampling" not in r for r in teacher.requests)  # the direct stage changes nothing of teacher.sampling
    [reasoned, _] = cot.run(rows, teacher).take_all()
    assert teacher.requests[2]["messages"] == cot_prompt.messages("Write f.") and "cot_response" in reasoned


def test_a_call_no_stage_samples_is_refused():
    with pytest.raises(ValueError, match=r"teacher call 'nope': no stage of teacher.stages samples it"):
        ask_rows([{"id": "a"}], Teacher(lambda messages: ("", None)), lambda row: [], "nope")
    teacher = Teacher(lambda messages: ("", None))  # instruction building: each row brings its own sampling
    ask_rows([{"id": "a"}, {"id": "b", "sampling": {"seed": 3}}], teacher, lambda row: [], "si")
    assert "sampling" not in teacher.requests[0] and teacher.requests[1]["sampling"] == {"seed": 3}


def test_teacher_counts_sum_the_calls_and_keep_three_error_examples():
    batches = [
        {"e_error": [None, "HTTP 500: a", "HTTP 503: b"], "e_input_tokens": [1, 2, None], "e_output_tokens": [3, 0, 4],
         "e_faults": ["", "HTTP 500", "HTTP 503, HTTP 503"], "e_finish": ["stop", None, None]},
        {"e_error": ["timeout: c", "timeout: d"], "e_input_tokens": [5, 6], "e_output_tokens": [None, 7],
         "e_faults": ["timeout", "timeout"], "e_finish": [None, "length"]},
    ]  # fmt: skip
    counts = teacher_counts(batches, "e")
    assert {k: counts[k] for k in ("rows", "errors", "error_examples", "input_tokens", "output_tokens")} == {
        "rows": 5,
        "errors": 4,
        "error_examples": ["HTTP 500: a", "HTTP 503: b", "timeout: c"],
        "input_tokens": 14,
        "output_tokens": 14,
    }
    assert counts["finished"] == {"length": 1, "stop": 1}
    assert (counts["retries"], counts["errors_by_kind"]) == (
        {"HTTP 503": 1},
        {"HTTP 500": 1, "HTTP 503": 1, "timeout": 2},
    )


def md_row(id: str, **extra) -> dict:
    return {"id": id, "instruction": f"Task {id}.", "direct_response": fenced(ADD), "direct_error": None, **extra}


def test_decompose_parses_specs_says_why_none_and_retries_only_those():
    answers = {"Task a.": (fenced('def add(a, b):\n    """Return a + b."""\n    ...'), None),
               "Task b.": ("I would split it in two.", None), "Task c.": (None, "HTTP 503: down")}  # fmt: skip
    teacher = Teacher(lambda messages: _md(answers, messages))
    rows = decompose.run(Rows([md_row("a"), md_row("b"), md_row("c")]), teacher).take_all()
    assert teacher.requests[0]["messages"] == md_prompt.messages("Task a.", fenced(ADD))
    assert teacher.requests[0]["sampling"] == {"max_tokens": 1024}  # teacher.stages.decompose over teacher.sampling
    assert [(json.loads(r["specs"]), r["md_reason"], r["md_retried"]) for r in rows] == [
        ([{"name": "add", "signature": "def add(a, b)", "description": "Return a + b."}], None, False),
        ([], "no function with a signature and docstring in the answer", False),
        ([], "teacher error: HTTP 503: down", False),
    ]
    assert [decompose.needs_retry(r) for r in rows] == [False, True, False]  # an error is asked again on a rerun
    answers["Task b."] = (fenced('def half(x):\n    """Half of x."""'), None)
    [again] = decompose.retry(Rows([rows[1]]), teacher).take_all()
    assert teacher.requests[-1]["messages"] == md_prompt.retry_messages(
        "Task b.", fenced(ADD), "I would split it in two."
    )
    assert (json.loads(again["specs"])[0]["name"], again["md_reason"], again["md_retried"]) == ("half", None, True)
    assert again["md_response"] == answers["Task b."][0] and again["direct_response"] == fenced(ADD)
    # the request carries the row without the answer it replaces
    assert set(teacher.requests[-1]) == {"id", "instruction", "direct_response", "direct_error", "messages", "sampling"}
    decompose.retry(Rows([{**rows[1], "md_response": ""}]), teacher)
    assert teacher.requests[-1]["messages"][2] == {"role": "assistant", "content": ""}


def _md(answers: dict, messages: list[dict[str, str]]) -> tuple[str | None, str | None]:
    return next(answer for task, answer in answers.items() if task in user(messages))


def test_asserts_from_the_question_judge_r_d_and_ansrepair_repairs_only_the_failing_answers_from_their_failure():
    tests = {"Task a.": "```python\nassert add(1, 2) == 3\nassert add(0, 0) == 0\n```", "Task b.": "No tests here.",
             "Task c.": "```python\nassert add(1, 1) == 2\n```"}  # fmt: skip
    teacher = Teacher(lambda messages: (next(t for k, t in tests.items() if k in user(messages)), None))
    sandbox = Sandbox(lambda code, test: "passed" if "a + b" in code else "failed")
    rows = [md_row("a"), md_row("b"), md_row("c", direct_response="Here: " + fenced("def add(a, b):\n    return a"))]
    tested = repair.test(Rows(rows), teacher, sandbox, paper=False).take_all()  # the checked methods' asserts
    assert teacher.requests[0]["messages"] == repair_prompt.asserts_messages("Task a.")
    assert sandbox.checks == [
        {"code": ADD, "test": "assert add(1, 2) == 3\nassert add(0, 0) == 0"},
        {"code": ADD, "test": ""},
        {"code": "def add(a, b):\n    return a", "test": "assert add(1, 1) == 2"},
    ]
    assert [(r["self_tests"], r["self_test_status"]) for r in tested] == [
        (["assert add(1, 2) == 3", "assert add(0, 0) == 0"], "passed"),
        ([], "no tests"),
        (["assert add(1, 1) == 2"], "failed"),
    ]
    assert tested[1]["self_test_reason"] == "no assert statement in the answer"
    assert "code" not in tested[0] and "status" not in tested[0] and tested[0]["anstest_response"] == tests["Task a."]
    assert [repair.needs_repair(r) for r in tested] == [False, False, True]
    assert not repair.needs_repair({**tested[2], "direct_error": "HTTP 503"})  # no R_d to repair
    teacher.answer = lambda messages: (fenced(ADD), None)
    [repaired] = repair.run(Rows([tested[2]]), teacher).take_all()
    # the repair sees the code of the wrong answer (not its prose) and the failure
    assert teacher.requests[-1]["messages"] == repair_prompt.repair_messages(
        "Task c.", "def add(a, b):\n    return a", "AssertionError in assert add(1, 1) == 2"
    )
    assert repair.final(tested[2], repaired)["ansrepair_response"] == fenced(ADD)
    assert repair.final(tested[0], None)["ansrepair_response"] == tested[0]["direct_response"]
    assert [
        repair.final(tested[2], repaired)["ansrepair_source"],
        repair.final(tested[0], None)["ansrepair_source"],
    ] == [
        "repair",
        "direct",
    ]  # the dataset's source of each answer
    assert repair.final({**tested[0], "direct_error": "HTTP 503"}, None)["ansrepair_error"] == "HTTP 503"
    prose = {**tested[2], "direct_response": "Add them: a plus b."}  # an R_d without code is shown as it is
    for row, shown in ((prose, "Add them: a plus b."), ({**tested[2], "direct_response": ""}, "")):
        repair.run(Rows([row]), teacher).take_all()
        assert teacher.requests[-1]["messages"] == repair_prompt.repair_messages(
            "Task c.", shown, tested[2]["self_test_reason"]
        )
    repair.test(Rows([md_row("d", direct_response="No code.")]), teacher, sandbox).take_all()
    assert sandbox.checks[-1]["code"] == ""
    errored = {**tested[2], "repair_response": None, "repair_error": "HTTP 503"}
    assert repair.final(tested[2], errored)["ansrepair_error"] == "HTTP 503"


def test_ansrepair_writes_a_test_function_from_the_question_and_r_d():
    tests = {
        "Task a.": fenced("def test_solution():\n    assert add(1, 2) == 3"),
        "Task b.": fenced("def check_solution():\n    assert add(1, 2) == 3"),  # the sandbox would never call it
        "Task c.": fenced("def test_solution():\n    add(1, 2)"),  # asserts nothing
        "Task d.": fenced("assert add(1, 2) == 3"),
        "Task e.": "```python\ndef test_solution():\n    assert add(1, 2) == 3\n    assert add(2, 2) ==",  # cut off
    }
    teacher = Teacher(lambda messages: (next(t for k, t in tests.items() if k in user(messages)), None))
    sandbox = Sandbox(lambda code, test: "passed")
    rows = [md_row(i, direct_response="Here: " + fenced(ADD)) for i in "abcde"]
    tested = repair.test(Rows(rows), teacher, sandbox).take_all()
    assert teacher.requests[0]["messages"] == repair_prompt.tests_messages("Task a.", ADD)  # the question and R_d
    assert [r["self_test_status"] for r in tested] == ["passed", "no tests", "no tests", "passed", "passed"]
    # a test cut off at max_tokens keeps its whole lines
    assert tested[0]["self_tests"] == tested[4]["self_tests"] == ["def test_solution():\n    assert add(1, 2) == 3"]
    assert sandbox.checks[0] == {"code": ADD, "test": "def test_solution():\n    assert add(1, 2) == 3"}


def test_ansrepair_without_tests_is_no_tests_whatever_the_answer():
    teacher = Teacher(lambda messages: (None, "HTTP 503: down"))
    [row] = repair.test(Rows([md_row("a")]), teacher, Sandbox(lambda code, test: "passed")).take_all()
    assert (row["self_test_status"], row["self_test_reason"]) == ("no tests", "HTTP 503: down")


def are_row(id: str, retrieved: list[dict] | None = None, **extra) -> dict:
    return {
        "id": id,
        "instruction": f"Task {id}: write add_three(a, b, c).",
        "specs": SPECS,
        "retrieved": json.dumps(retrieved or []),
        "direct_response": f"R_d of {id}",
        "direct_error": None,
        **extra,
    }


MODULE = {"name": "add", "code": ADD, "similarity": 0.9}


def test_the_gated_rewrite_keeps_r_d_where_it_adapts_no_module():
    rewrites = {
        "uses": fenced(f"{ADD}\n\n\n{ADD_THREE}"),  # calls the retrieved add
        "ignores": fenced("def add_three(a, b, c):\n    return a + b + c"),  # calls no retrieved function
        "incomplete": fenced(ADD),  # leaves out add_three, the function asked for
        "none": fenced(ADD_THREE),  # never asked: nothing retrieved
    }
    teacher = Teacher(lambda messages: (next(v for k, v in rewrites.items() if f"Task {k}:" in user(messages)), None))
    rows = [are_row("uses", [MODULE]), are_row("ignores", [MODULE]), are_row("incomplete", [MODULE]), are_row("none")]
    out = {r["id"]: r for r in response_evolution.run(rows, teacher, gated=True)}
    assert [r["id"] for r in teacher.requests] == ["uses", "ignores", "incomplete"]
    assert "return a + b" in user(teacher.requests[0]["messages"])  # the retrieved module is shown
    assert {k: r["are_kept"] for k, r in out.items()} == {
        "uses": None,
        "ignores": "no module used",
        "incomplete": "incomplete",
        "none": "nothing retrieved",
    }
    assert out["uses"]["are_response"] == out["uses"]["evolved_response"] == rewrites["uses"]
    for kept in ("ignores", "incomplete", "none"):
        assert out[kept]["are_response"] == f"R_d of {kept}" and out[kept]["are_source"] == "direct"
    assert out["uses"]["are_source"] == "are"
    assert all(r["messages"][0]["content"] == are_prompt.GATED_SYSTEM for r in teacher.requests)
    assert out["ignores"]["evolved_response"] == rewrites["ignores"] and out["none"]["evolved_response"] is None
    assert out["uses"]["are_heading"] is out["none"]["are_heading"] is None  # the gated prompt asks for no heading
    assert out["ignores"]["are_output_tokens"] > 0 and out["none"]["are_output_tokens"] == 0


def test_the_papers_rewrite_is_every_rows_answer():
    rewrites = {"ignores": fenced("def add_three(a, b, c):\n    return a + b + c"), "incomplete": fenced(ADD),
                "headed": f"Refined.\n### Correct Solution:\n{fenced(ADD_THREE)}\n## New Task\nmore", "failed": None}  # fmt: skip
    answer = lambda messages: next(  # noqa: E731
        (v, None if v else "HTTP 503") for k, v in rewrites.items() if f"Task {k}:" in user(messages)
    )
    teacher = Teacher(answer)
    rows = [are_row("ignores", [MODULE]), are_row("incomplete"), are_row("headed"), are_row("failed")]
    out = {r["id"]: r for r in response_evolution.run(rows, teacher)}
    assert [r["id"] for r in teacher.requests] == ["ignores", "incomplete", "headed", "failed"]  # every row asked
    # the paper's prompt: the retrieved module, then the specs, in the one Relevant Functions slot
    assert teacher.requests[0]["messages"][0]["content"] == are_prompt.SYSTEM
    assert user(teacher.requests[0]["messages"]).count("### Relevant Functions:") == 1
    assert (
        user(teacher.requests[1]["messages"])
        .split("### Relevant Functions:\n")[1]
        .startswith("```python\ndef add(a, b)")
    )
    assert {k: (r["are_kept"], r["are_source"]) for k, r in out.items()} == dict.fromkeys(out, (None, "are"))
    assert out["ignores"]["are_response"] == rewrites["ignores"] and out["incomplete"]["are_response"] == fenced(ADD)
    assert out["headed"]["are_response"] == out["headed"]["evolved_response"] == fenced(ADD_THREE)
    assert out["headed"]["are_heading"]
    assert out["ignores"]["are_heading"] is False  # taken whole, and marked
    assert out["failed"]["are_error"] == "HTTP 503"  # asked again on a rerun
    # without retrieval (the ablation w/o ARE) the prompt shows no function, whatever was retrieved
    teacher = Teacher(lambda messages: (rewrites["ignores"], None))
    response_evolution.run([are_row("ignores", [MODULE])], teacher, use_retrieved=False)
    assert "return a + b" not in user(teacher.requests[0]["messages"])


def test_the_papers_prompt_shows_the_retrieved_code_then_the_specs_as_stubs():
    row = are_row("a", [MODULE])
    stubs = [
        'def add(a, b):\n    """Return a + b."""\n    ...',
        'def add_three(a, b, c):\n    """Sum of three."""\n    ...',
    ]
    assert response_evolution.chat(row) == are_prompt.messages(row["instruction"], stubs, [ADD])
    teacher = Teacher(lambda messages: (fenced(ADD_THREE), None))
    response_evolution.run([row], teacher)
    assert teacher.requests[0]["messages"] == are_prompt.messages(row["instruction"], stubs, [ADD])
    spec = {"signature": "def f(x)", "description": 'Line one, with """quotes""".\nLine two.'}
    assert (
        response_evolution.spec_stub(spec)
        == "def f(x):\n    \"\"\"Line one, with '''quotes'''.\n    Line two.\"\"\"\n    ..."
    )


def test_the_gated_rewrite_gets_the_code_of_the_retrieved_functions_it_calls_once():
    module = {"name": "add", "code": "\ndef add(a, b):\n    X = a + b\n    return X\n", "similarity": 0.9}
    rewrite = f"{fenced(ADD_THREE)}\nOnce more:\n{fenced(ADD_THREE)}"  # calls add, does not define it
    teacher = Teacher(lambda messages: (rewrite, None))
    [out] = response_evolution.run([are_row("a", [module])], teacher, gated=True)
    linked = fenced(f"{module['code'].strip()}\n\n\n{ADD_THREE}")
    assert out["are_response"] == out["evolved_response"] == f"{linked}\nOnce more:\n{fenced(ADD_THREE)}"
    assert (out["are_source"], out["are_kept"], out["are_heading"]) == ("are", None, None)
    # without retrieval every row is asked, with no function shown
    [alone] = response_evolution.run([{**are_row("b"), "retrieved": None}], teacher, use_retrieved=False, gated=True)
    assert "return X" not in user(teacher.requests[-1]["messages"]) and alone["are_response"] == rewrite


def test_the_function_asked_for_is_the_one_the_instruction_names_else_the_plans_last():
    specs = [{"name": n, "signature": f"def {n}(x)", "description": "."} for n in ("add", "double", "add_three")]
    row = {"specs": json.dumps(specs), "instruction": "Sum three numbers.", "are_response": fenced(ADD_THREE)}
    assert response_evolution.missing(row) == []
    assert response_evolution.missing({**row, "are_response": fenced(ADD)}) == ["add_three"]
    assert response_evolution.missing({**row, "instruction": "Write double(x).", "are_response": fenced(ADD)}) == [
        "double"
    ]


def test_r_d_kept_carries_the_rewrite_and_its_call_where_there_was_one():
    asked = are_row("a", are_response="rewrite", are_error=None, are_input_tokens=5, are_output_tokens=7,
                    are_faults="HTTP 429", are_finish="length")  # fmt: skip
    columns = ("are_response", "are_error", "are_input_tokens", "are_output_tokens", "are_faults", "are_finish",
               "evolved_response", "are_kept", "are_source")  # fmt: skip
    row = response_evolution.kept(asked, "incomplete")
    assert [row[c] for c in columns] == [
        "R_d of a",
        None,
        5,
        7,
        "HTTP 429",
        "length",
        "rewrite",
        "incomplete",
        "direct",
    ]
    never = response_evolution.kept(are_row("b", direct_response=None, direct_error="HTTP 503"), "nothing retrieved")
    assert [never[c] for c in columns] == [None, "HTTP 503", 0, 0, "", None, None, "nothing retrieved", "direct"]


def checked_row(id: str, direct_ok: bool, evolved_ok: bool | None, tests: bool = True, **extra) -> dict:
    return {
        "id": id,
        "instruction": f"Task {id}.",
        "direct_response": fenced("def f():\n    return 'direct " + ("right" if direct_ok else "wrong") + "'"),
        "direct_error": None,
        "are_response": None if evolved_ok is None else fenced(f"def f():\n    return 'are {'right' if evolved_ok else 'wrong'}'"),
        "are_error": None if evolved_ok is not None else "HTTP 503",
        "self_tests": ["assert f().endswith('right')"] if tests else [],
        "self_test_status": ("passed" if direct_ok else "failed") if tests else "no tests",
        **extra,
    }  # fmt: skip


def test_the_check_takes_the_evolved_answer_only_where_it_passes_the_teachers_tests_and_r_d_does_not():
    sandbox = Sandbox(lambda code, test: "passed" if "right" in code else "failed")
    rows = [
        checked_row("both pass", direct_ok=True, evolved_ok=True),
        checked_row("evolved passes", direct_ok=False, evolved_ok=True),
        checked_row("r_d passes", direct_ok=True, evolved_ok=False),
        checked_row("both fail", direct_ok=False, evolved_ok=False),
        checked_row("no tests", direct_ok=False, evolved_ok=True, tests=False),
        checked_row("no evolved answer", direct_ok=False, evolved_ok=None),
        checked_row("no r_d", direct_ok=False, evolved_ok=False, direct_response=None, direct_error="HTTP 503"),
        checked_row("empty evolved answer", direct_ok=False, evolved_ok=True, are_response=""),
        checked_row("empty r_d", direct_ok=False, evolved_ok=False, direct_response=""),
    ]
    out = {r["id"]: r for r in check.run(Rows(rows), sandbox).take_all()}
    assert {k: (r["checked_source"], r["are_self_test_status"], r["checked_status"]) for k, r in out.items()} == {
        "both pass": ("direct", "passed", "passed"),  # the tests cannot tell them apart: R_d stays
        "evolved passes": ("are", "passed", "passed"),
        "r_d passes": ("direct", "failed", "passed"),
        "both fail": ("direct", "failed", "failed"),
        "no tests": ("direct", "no tests", "no tests"),
        "no evolved answer": ("direct", "no answer", "failed"),
        "no r_d": ("are", "failed", "failed"),  # the only answer there is
        "empty evolved answer": ("direct", "no answer", "failed"),
        "empty r_d": ("are", "failed", "failed"),
    }
    assert out["evolved passes"]["checked_response"] == rows[1]["are_response"]
    assert out["both pass"]["checked_response"] == rows[0]["direct_response"]
    assert (out["no r_d"]["checked_response"], out["no r_d"]["checked_error"]) == (rows[6]["are_response"], None)
    assert sandbox.checks[0] == {"code": "def f():\n    return 'are right'", "test": "assert f().endswith('right')"}
    assert all(not set(r) & {"status", "reason", "code", "test", "isolation"} for r in out.values())
    assert [k for k, r in out.items() if check.unresolved(r)] == [
        "both fail",
        "no evolved answer",
        "no r_d",
        "empty evolved answer",
        "empty r_d",
    ]
    two = checked_row("two tests", direct_ok=False, evolved_ok=True, self_tests=["assert f()", "assert f() != 1"])
    check.run(Rows([two]), sandbox).take_all()
    assert sandbox.checks[-1]["test"] == "assert f()\nassert f() != 1"


def test_the_check_of_direct_checked_has_r_d_alone_and_runs_nothing():
    sandbox = Sandbox(lambda code, test: "passed")
    rows = [checked_row("r_d passes", direct_ok=True, evolved_ok=None), checked_row("r_d fails", False, None)]
    rows.append(checked_row("no r_d", direct_ok=False, evolved_ok=None, direct_response=None, direct_error="HTTP 503"))
    out = {r["id"]: r for r in check.run(Rows(rows), sandbox, evolved=False).take_all()}
    assert {k: (r["checked_source"], r["checked_status"]) for k, r in out.items()} == {
        "r_d passes": ("direct", "passed"),  # R_d's verdict from the asserts, as anstest found it
        "r_d fails": ("direct", "failed"),
        "no r_d": ("direct", "failed"),
    }
    assert out["r_d fails"]["checked_response"] == rows[1]["direct_response"] and sandbox.checks == []
    assert [(r["checked_response"], r["checked_error"]) for r in out.values()][1:] == [
        (rows[1]["direct_response"], None),
        (None, "HTTP 503"),  # R_d's error is the answer's
    ]
    assert [k for k, r in out.items() if check.unresolved(r)] == ["r_d fails", "no r_d"]


def test_resampling_adopts_a_sample_only_where_it_passes_the_teachers_tests():
    samples = {"Task a.": fenced("def f():\n    return 'right'"), "Task b.": fenced("def f():\n    return 'wrong'"),
               "Task c.": None}  # fmt: skip
    teacher = Teacher(
        lambda messages: next((v, None if v else "HTTP 503") for k, v in samples.items() if k in user(messages))
    )
    sandbox = Sandbox(lambda code, test: "passed" if "right" in code else "failed")
    rows = [
        {**checked_row(i, direct_ok=False, evolved_ok=False), "checked_source": "direct", "checked_status": "failed",
         "checked_response": "R_d", "checked_error": None, "resample_response": "an earlier round's"}
        for i in "abc"
    ]  # fmt: skip
    rows[0]["checked_error"] = "an earlier error"
    teacher.config.stages.direct.max_tokens = 50  # the direct stage's budget, under the round's sampling
    sampling = {"temperature": 0.8, "top_p": 0.95, "seed": 3, "stop": None}
    out = check.resample(Rows(rows), teacher, sandbox, sampling).take_all()
    assert teacher.requests[0]["messages"] == direct_prompt.messages("Task a.")
    expected = {"max_tokens": 50, "temperature": 0.8, "top_p": 0.95, "seed": 3}
    assert all(r["sampling"] == expected for r in teacher.requests) and all("sampling" not in r for r in out)
    assert [(r["checked_source"], r["checked_status"], r["checked_error"]) for r in out] == [
        ("resample", "passed", None),
        ("direct", "failed", None),
        ("direct", "failed", None),
    ]
    assert out[0]["checked_response"] == samples["Task a."] and out[1]["checked_response"] == "R_d"
    assert out[1]["resample_response"] == samples["Task b."]  # this round's, not an earlier round's
    assert [c["code"] for c in sandbox.checks] == ["def f():\n    return 'right'", "def f():\n    return 'wrong'", ""]


class _Actor:
    """An embedder actor whose ``encode.remote`` answers at once: one vector per text, its length and 1."""

    def __init__(self):
        self.texts: list[list[str]] = []
        self.encode = self

    def remote(self, texts: list[str]):
        self.texts.append(texts)
        return np.asarray([[len(t), 1.0] for t in texts])


def test_query_embedding_gives_each_row_one_vector_per_query_in_order(monkeypatch):
    monkeypatch.setattr(embed.ray, "get", lambda answer: answer)  # the fake actor answers at once
    actor = _Actor()
    batch = pd.DataFrame([are_row("a"), are_row("b", specs="[]"), {**are_row("c"), "direct_response": fenced(ADD)}])
    out = embed._embedded(batch, [actor], "specs")
    assert actor.texts == [["def add(a, b)\nReturn a + b.", "def add_three(a, b, c)\nSum of three."] * 2]
    assert [len(v) for v in out["query_vectors"]] == [2, 0, 2]
    assert out["query_vectors"][0] == [[27.0, 1.0], [36.0, 1.0]] and list(out["id"]) == ["a", "b", "c"]
    out = embed._embedded(batch, [actor], "direct")  # without MD: the code of R_d, where it has any
    assert actor.texts[-1] == [ADD] and [len(v) for v in out["query_vectors"]] == [0, 0, 1]
    assert len(embed._embedded(batch.iloc[:2], [actor], "direct")) == 2 and len(actor.texts) == 2  # nothing to embed
    embedders = type("Embedders", (), {"actors": [actor, _Actor()], "batch_size": 16})()
    out = embed.run(Rows([are_row("a")]), embedders, "specs")
    assert out.take_all()[0]["query_vectors"] == [[27.0, 1.0], [36.0, 1.0]]
    options = out.batch_options  # tasks that take next to no CPU (the actors do the work), two per actor, and
    # declare their worker's memory
    assert (options["batch_format"], options["batch_size"]) == ("pandas", 16) and CALLER_TASK.items() <= options.items()
    assert options["compute"].size == 4 and options["fn_kwargs"] == {"actors": embedders.actors, "query": "specs"}


class _Embedder:
    """Three directions: HumanEval/0's statement, HumanEval/1's, and every other benchmark statement; an
    instruction points where its words say."""

    def __init__(self):
        from amr.decontam import benchmark_items

        problems = {i["id"]: i["problem"] for i in benchmark_items(["humaneval"])}
        self.first, self.second = problems["HumanEval/0"], problems["HumanEval/1"]

    def encode(self, texts):
        def vector(text: str) -> list[float]:
            if text == self.first or "reworded" in text:
                return [1.0, 0.0, 0.0]
            if text == self.second:
                return [0.0, 1.0, 0.0]
            if "close to both" in text:
                return [0.6, 0.8, 0.0]
            if "askew" in text:
                return [0.123456, 0.992350, 0.0]
            return [0.0, 0.0, 1.0] if text.strip() else [0.0, 0.0, -1.0]

        return np.asarray([vector(t) for t in texts], dtype=np.float32)


def test_decontamination_flags_the_same_task_a_copy_an_overlap_and_a_reworded_problem(monkeypatch):
    from amr.config import DecontamConfig, EmbeddingConfig
    from amr.decontam import benchmark_items, words

    models = []  # the model path each checker's benchmark vectors are cached by
    monkeypatch.setattr(decontaminate, "resolve", lambda model, store: f"{store}/{model}")
    monkeypatch.setattr(
        decontaminate,
        "_benchmark_vectors",
        lambda embedder, model, problems: models.append(model) or embedder.encode(problems),
    )
    # flagged from a cosine of 1.0 (the threshold itself), near from 0.0 (the floor itself), 3 nearest judged
    config = DecontamConfig(benchmarks=["humaneval"], embedding_threshold=1.0, judge_floor=0.0, judge_top_k=3)
    items = benchmark_items(["humaneval"])
    overlap = " ".join(words(items[7]["prompt"])[:20]) + " and then something else entirely"
    rows = Rows(
        [
            {"id": "HUMANEVAL/3", "instruction": "Anything."},
            {"id": "mine/copy", "instruction": items[5]["prompt"]},
            {"id": "mine/overlap", "instruction": overlap},
            {"id": "mine/reworded", "instruction": "A reworded problem."},
            {"id": "mine/near", "instruction": "Something close to both."},
            {"id": "mine/askew", "instruction": "Something askew."},
        ]
    )
    embedding = EmbeddingConfig(batch_size=7, trust_remote_code=True)
    checked = decontaminate.run(rows, config, embedding, "/store", _Embedder())
    out = [{k: None if v is None or v != v else v for k, v in r.items()} for r in checked.take_all()]
    assert [(r["contamination"], r["benchmark_id"]) for r in out] == [
        ("same-task", "HumanEval/3"),
        ("exact", "HumanEval/5"),
        ("ngram", "HumanEval/7"),
        ("embedding", "HumanEval/0"),
        (None, None),
        (None, None),
    ]
    assert [out[i]["contamination_score"] for i in (0, 1, 3)] == [1.0, 1.0, 1.0]
    assert 0 < out[2]["contamination_score"] < 1 and out[2]["contamination_score"] == round(
        out[2]["contamination_score"], 4
    )
    assert [n["score"] for n in out[4]["near"]] == [0.8, 0.6, 0.0]
    assert out[4]["near"][:2] == [
        {"benchmark_id": "HumanEval/1", "score": 0.8},
        {"benchmark_id": "HumanEval/0", "score": 0.6},
    ]
    assert [n["score"] for n in out[5]["near"]] == [0.9923, 0.1235, 0.0]  # four places
    assert out[0]["near"] == out[1]["near"] == out[3]["near"] == []  # flagged: nothing to judge
    options = checked.batch_options  # one actor per CPU, at most config.actors of them
    assert (options["batch_format"], options["batch_size"], options["num_cpus"]) == ("pandas", config.batch_size, 1)
    assert (options["compute"].min_size, options["compute"].max_size) == (1, config.actors)
    checker = decontaminate._Checker(**options["fn_constructor_kwargs"])
    assert isinstance(checker.embedder, _Embedder) and models == ["/store/all-minilm-l6-v2"] * 2
    unjudged = decontaminate._Checker({**config.model_dump(), "embedding_threshold": None}, {}, None, _Embedder())
    assert unjudged.embedder is None
    assert unjudged(pd.DataFrame(rows.rows))["contamination"].tolist()[:3] == ["same-task", "exact", "ngram"]
    assert unjudged(pd.DataFrame(rows.rows))["contamination"].isna().tolist() == [False] * 3 + [True] * 3
    askew = decontaminate._Checker(
        {**config.model_dump(), "embedding_threshold": 0.99}, embedding.model_dump(), None, _Embedder()
    )
    assert askew(pd.DataFrame(rows.rows[5:]))["contamination_score"].tolist() == [0.9923]  # four places


def test_the_checks_share_a_jobs_embedders_only_where_they_compute_in_float32(monkeypatch):
    """The checks' thresholds were set in float32 on CPU: they embed with the enclosing block's actors of those
    settings (a job's, or another step's), never with actors computing in bfloat16 or on a GPU."""
    from amr import embeddings
    from amr.config import DecontamConfig, EmbeddingConfig

    class Started:  # EmbedderActors without Ray
        def __init__(self, config: EmbeddingConfig, model_store: str | None):
            self.config = config

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(embeddings, "EmbedderActors", Started)
    checks = DecontamConfig()
    job = EmbeddingConfig(model="m", batch_size=7, trust_remote_code=True, dtype="float32")
    with embeddings.open_embedders(job, "/store") as shared:
        with decontaminate.embedders(checks, job, "/store") as embedder:
            assert embedder is shared  # started once for both
    for other in ({"dtype": "bfloat16"}, {"dtype": "auto"}, {"num_gpus": 0.25}):  # auto: bf16 on an AMX CPU
        settings = job.model_copy(update=other)
        with embeddings.open_embedders(settings, "/store") as theirs:
            with decontaminate.embedders(checks, settings, "/store") as embedder:
                assert embedder is not theirs and embedder.config == job
    assert decontaminate.settings(DecontamConfig(actors=3), job) == job.model_copy(update={"actors": 3})
    with decontaminate.embedders(DecontamConfig(embedding_threshold=None), job, "/store") as embedder:
        assert embedder is None  # the n-gram checks only: no model


def test_benchmark_vectors_are_computed_once_per_model_and_benchmarks(monkeypatch, tmp_path):
    monkeypatch.setenv("AMR_CACHE", str(tmp_path))

    class Counting:
        calls = 0

        def encode(self, texts):
            self.calls += 1
            return np.asarray([[float(len(t)), 1.0] for t in texts], dtype=np.float32)

    embedder = Counting()
    first = decontaminate._benchmark_vectors(embedder, "model-a", ["one", "three"])
    again = decontaminate._benchmark_vectors(embedder, "model-a", ["one", "three"])  # read back, not encoded again
    assert first.tolist() == again.tolist() == [[3.0, 1.0], [5.0, 1.0]] and embedder.calls == 1
    [cached] = (tmp_path / "decontam").iterdir()
    assert cached.suffix == ".npy" and len(cached.stem) == 16 and np.load(cached).tolist() == first.tolist()
    decontaminate._benchmark_vectors(embedder, "model-a", ["one", "other"])  # other benchmarks: another file
    decontaminate._benchmark_vectors(embedder, "model-b", ["one", "three"])  # another model: another file
    assert embedder.calls == 3 and len(list((tmp_path / "decontam").iterdir())) == 3
    # by default under ~/.cache/amr, made with its parents; written beside the cache file, then renamed into place
    monkeypatch.delenv("AMR_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    renamed = []
    replace = os.replace
    monkeypatch.setattr(decontaminate.os, "replace", lambda src, dst: renamed.append((src, dst)) or replace(src, dst))
    decontaminate._benchmark_vectors(embedder, "model-a", ["one"])
    [cached] = (tmp_path / "home" / ".cache" / "amr" / "decontam").iterdir()
    assert [(Path(src).parent, Path(dst)) for src, dst in renamed] == [(cached.parent, cached)]
