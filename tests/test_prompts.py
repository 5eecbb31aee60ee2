"""Prompt builders follow the paper's structure, and their one-shot examples are well formed."""

from __future__ import annotations

import pytest

from amr.parsing import (
    assert_statements,
    code_blocks,
    defined_functions,
    function_specs,
)
from amr.prompts import cot, decompose, direct, repair, response_evolution, testgen

BUILDERS = {
    "decompose": lambda: decompose.messages("Add two numbers.", "```python\ndef add(a, b):\n    return a + b\n```"),
    "evolve": lambda: response_evolution.messages("Add two numbers.", ["def add(a: int, b: int) -> int:\n    \"\"\"Sum.\"\"\"\n    ..."],
                                      ["def plus(x, y):\n    return x + y"]),
    "testgen": lambda: testgen.messages("def add(a, b):\n    return a + b", "add"),
    "cot": lambda: cot.messages("Add two numbers."),
    "anstest": lambda: repair.tests_messages("Add two numbers."),
    "repair": lambda: repair.repair_messages("Add two numbers.", "def add(a, b):\n    return a - b",
                                             "AssertionError at test.py:1: assert add(1, 1) == 2"),
}


@pytest.mark.parametrize("stage", BUILDERS)
def test_paper_structure(stage):
    system, user = BUILDERS[stage]()
    assert (system["role"], user["role"]) == ("system", "user")
    assert "## One-Shot Example" in system["content"] and user["content"].startswith("## New Task\n")
    assert "### Python " in user["content"]


def test_one_shot_examples_parse_as_what_they_teach():
    specs = function_specs(decompose.SYSTEM.split("### Function Specifications:")[1])
    assert [s["name"] for s in specs] == ["tokenize_words", "count_occurrences", "repeated_words"]
    answer = code_blocks(response_evolution.SYSTEM.split("### Response:")[1])[0]
    namespace: dict = {}
    exec(answer, namespace)
    assert namespace["repeated_words"]("the cat saw The dog and the cat") == ["the", "cat"]
    assert [f["name"] for f in defined_functions(answer)] == ["tokenize_words", "count_occurrences", "repeated_words"]
    test = code_blocks(testgen.SYSTEM.split("### Test:")[1])[0]
    exec(code_blocks(testgen.SYSTEM)[0] + "\n" + test + "\ntest_count_occurrences()", {})


def test_baseline_one_shot_examples_hold():
    namespace: dict = {}
    exec(code_blocks(cot.SYSTEM)[0], namespace)
    assert namespace["second_largest"]([3, 1, 3, 2]) == 2 and namespace["second_largest"]([1, 1]) is None
    tests = "\n".join(assert_statements(repair.TESTS_SYSTEM))
    broken, fixed = code_blocks(repair.REPAIR_SYSTEM)
    with pytest.raises(AssertionError):
        exec(broken + "\n" + tests, {})
    exec(fixed + "\n" + tests, {})


def test_evolve_shows_no_draft_and_marks_empty_retrieval():
    user = response_evolution.messages("Q", ["def f():\n    \"\"\"d\"\"\"\n    ..."], [])[1]["content"]
    assert "### Relevant Functions:\n(none)" in user and "Draft" not in user
    assert direct.messages("Q")[1]["content"] == "Q"
