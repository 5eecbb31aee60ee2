"""Prompt builders follow the paper's structure, and their one-shot examples are well formed."""

from __future__ import annotations

import ast
import itertools

import pytest

from amr.parsing import (
    assert_statements,
    code_blocks,
    defined_functions,
    function_specs,
)
from amr.prompts import bootstrap, cot, decompose, direct, repair, response_evolution, testgen

BUILDERS = {
    "decompose": lambda: decompose.messages("Add two numbers.", "```python\ndef add(a, b):\n    return a + b\n```"),
    "evolve": lambda: response_evolution.messages(
        "Add two numbers.",
        ['def add(a: int, b: int) -> int:\n    """Sum."""\n    ...'],
        ["def plus(x, y):\n    return x + y"],
    ),
    "evolve-gated": lambda: response_evolution.gated_messages(
        "Add two numbers.",
        ['def add(a: int, b: int) -> int:\n    """Sum."""\n    ...'],
        ["def plus(x, y):\n    return x + y"],
    ),
    "testgen": lambda: testgen.messages("def add(a, b):\n    return a + b", "add"),
    "cot": lambda: cot.messages("Add two numbers."),
    "anstest": lambda: repair.tests_messages("Add two numbers.", "def add(a, b):\n    return a + b"),
    "asserts": lambda: repair.asserts_messages("Add two numbers."),
    "repair": lambda: repair.repair_messages(
        "Add two numbers.", "def add(a, b):\n    return a - b", "AssertionError at test.py:1: assert add(1, 1) == 2"
    ),
}


@pytest.mark.parametrize("stage", BUILDERS)
def test_paper_structure(stage):
    system, user = BUILDERS[stage]()
    assert (system["role"], user["role"]) == ("system", "user")
    assert "## One-Shot Example" in system["content"] and user["content"].startswith("## New Task\n")
    assert "### Python " in user["content"]


def test_one_shot_examples_parse_as_what_they_teach():
    specs = function_specs(decompose.SYSTEM.split("### Function Specifications:")[1])
    assert [s["name"] for s in specs] == ["parse_score", "rank_by_score", "top_scorers"]
    draft: dict = {}
    exec(code_blocks(decompose.SYSTEM)[0], draft)
    assert draft["top_scorers"](["ann, 7", "bob,9", "al,7", "cy,1"], 3) == ["bob", "al", "ann"]
    for system, heading in (
        (response_evolution.SYSTEM, "### Correct Solution:"),
        (response_evolution.GATED_SYSTEM, "### Response:"),
    ):
        answer = code_blocks(system.split(heading)[-1])[0]
        namespace: dict = {}
        exec(answer, namespace)
        assert namespace["slugify"]("  Hello, World! It's 2024 ") == "hello-world-its-2024"
        assert [f["name"] for f in defined_functions(answer)] == ["strip_punctuation", "split_words", "slugify"]
    helpers: dict = {}
    exec(code_blocks(bootstrap.SYSTEM)[0], helpers)
    assert helpers["cart_total"]([("pen", 2, 1.25), ("pad", 1, 3.0)], 10) == 4.95
    assert helpers["apply_discount"](10.0, 150) == 0.0
    test = code_blocks(testgen.SYSTEM.split("### Test:")[1])[0]
    exec(code_blocks(testgen.SYSTEM)[0] + "\n" + test + "\ntest_clamp()", {})


def test_stages_with_a_function_table_show_different_example_functions():
    """MD, ARE, bootstrapping and test generation each teach with their own functions: a weak teacher that copies
    an example does not put one function into the module table from every stage."""
    names = {
        m.__name__: {f["name"] for block in code_blocks(m.SYSTEM) for f in defined_functions(block)}
        | {s["name"] for s in function_specs(m.SYSTEM)}
        for m in (decompose, response_evolution, bootstrap, testgen)
    }
    assert all(names.values()), names
    for a, b in itertools.combinations(names, 2):
        assert not names[a] & names[b], (a, b, names[a] & names[b])


def test_baseline_one_shot_examples_hold():
    namespace: dict = {}
    exec(code_blocks(cot.SYSTEM)[0], namespace)
    merge = namespace["merge_intervals"]
    assert merge([(5, 6), (1, 3), (2, 4), (4, 4)]) == [(1, 4), (5, 6)] and merge([]) == []
    solution, test = code_blocks(repair.TESTS_SYSTEM)
    assert assert_statements(repair.ASSERTS_SYSTEM) == assert_statements(repair.TESTS_SYSTEM)  # the same checks
    broken, fixed = code_blocks(repair.REPAIR_SYSTEM)
    assert fixed == solution
    with pytest.raises(AssertionError):
        exec(broken + "\n" + test + "\ntest_solution()", {})
    exec(fixed + "\n" + test + "\ntest_solution()", {})
    failure = repair.REPAIR_SYSTEM.split("### Failure:\n")[1].splitlines()[0]
    line = int(failure.split("test.py:")[1].split(":")[0])
    # what the sandbox reports when the stage runs the test function (amr.stages.repair)
    assert failure == f"AssertionError at test.py:{line}: {ast.unparse(ast.parse(test.splitlines()[line - 1].strip()))}"


def test_evolve_shows_no_draft_and_marks_empty_retrieval():
    user = response_evolution.messages("Q", [], [])[1]["content"]
    assert "### Relevant Functions:\n(none)" in user and "Draft" not in user
    user = response_evolution.gated_messages("Q", ['def f():\n    """d"""\n    ...'], [])[1]["content"]
    assert "### Relevant Functions:\n(none)" in user and "Draft" not in user
    assert direct.messages("Q")[1]["content"] == "Q"


def test_the_papers_are_prompt_has_one_relevant_functions_slot_and_its_words():
    system, user = (m["content"] for m in BUILDERS["evolve"]())
    assert user.count("### Relevant Functions:") == 1 and user.endswith("### Correct Solution:\n")
    slot = user.split("### Relevant Functions:\n")[1]
    assert slot.index("def plus(x, y)") < slot.index("def add(a: int, b: int)")  # retrieved first, then the specs
    assert "a more refined and accurate solution" in system
    assert "pretend that you have never seen the Relevant Functions" in system
    assert "Let's think step by step." in cot.messages("Q")[1]["content"]
