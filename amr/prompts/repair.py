"""Answer repair (baseline AnsRepair, paper section 4) and the teacher-written tests of the checked methods.

AnsRepair, the paper's: the teacher writes a test function from the question and the answer R_d (``TESTS_SYSTEM``,
``tests_messages``); R_d runs against it in the sandbox, and a failing R_d is repaired from the wrong solution and
the failure (``REPAIR_SYSTEM``, ``repair_messages``). The paper's exact text is not reachable offline here: the
slots (question and answer for the test; question, wrong solution and failure for the repair) are the paper's,
the wording and the one-shot examples are reconstructed.

The checked methods (beyond the paper): assert statements written from the question alone (``ASSERTS_SYSTEM``,
``asserts_messages``), so that they judge R_d and the evolved answer alike."""

from __future__ import annotations

TESTS_SYSTEM = """You are a professional coder and tester. You will be given a Python programming question and a
solution to it. Write one test function named `test_solution` that checks whether the solution answers the
question: assert statements on typical inputs, edge cases and corner cases, each with the exact result the
question asks for, worked out from the question (the solution may be wrong). Call the solution's function. Do
not repeat the solution; do not use any test framework. Put the test function in one Python code block.

## One-Shot Example
### Python Question:
Write a function `initials(name)` that returns the upper-case initials of a person's name, one letter per word.

### Solution:
```python
def initials(name):
    return "".join(word[0] for word in name.split()).upper()
```

### Test Function:
```python
def test_solution():
    assert initials("ada lovelace") == "AL"
    assert initials("Grace Brewster Hopper") == "GBH"
    assert initials("  alan   turing ") == "AT"
    assert initials("") == ""
```"""

ASSERTS_SYSTEM = """You are a professional coder and tester. You will be given a Python programming question.
Write assert statements that check a solution to it: typical inputs, edge cases and corner cases, each
with the exact expected result. Call the function by the name the question implies. Put only the
assert statements in one Python code block.

## One-Shot Example
### Python Question:
Write a function `initials(name)` that returns the upper-case initials of a person's name, one letter per word.

### Tests:
```python
assert initials("ada lovelace") == "AL"
assert initials("Grace Brewster Hopper") == "GBH"
assert initials("  alan   turing ") == "AT"
assert initials("") == ""
```"""

REPAIR_SYSTEM = """You are a professional coder. You will be given a Python programming question, a wrong
solution to it, and the failure it met when run against a test. Find the bug and write a corrected, complete
solution in one Markdown code block. A test may itself be wrong: follow the question where they disagree.

## One-Shot Example
### Python Question:
Write a function `initials(name)` that returns the upper-case initials of a person's name, one letter per word.

### Wrong Solution:
```python
def initials(name):
    return "".join(word[0] for word in name.split())
```

### Failure:
AssertionError at test.py:2: assert initials('ada lovelace') == 'AL'

### Response:
The solution keeps the case of each initial; the question asks for upper-case initials.

```python
def initials(name):
    return "".join(word[0] for word in name.split()).upper()
```"""


def tests_messages(instruction: str, solution: str) -> list[dict[str, str]]:
    """AnsRepair's test function, from the question and the answer's code."""
    user = (
        f"## New Task\n### Python Question:\n{instruction}\n\n### Solution:\n```python\n{solution.strip()}\n```\n\n"
        "### Test Function:\n"
    )
    return [{"role": "system", "content": TESTS_SYSTEM}, {"role": "user", "content": user}]


def asserts_messages(instruction: str) -> list[dict[str, str]]:
    """The checked methods' asserts, from the question alone."""
    user = f"## New Task\n### Python Question:\n{instruction}\n\n### Tests:\n"
    return [{"role": "system", "content": ASSERTS_SYSTEM}, {"role": "user", "content": user}]


def repair_messages(instruction: str, solution: str, failure: str) -> list[dict[str, str]]:
    user = (
        f"## New Task\n### Python Question:\n{instruction}\n\n### Wrong Solution:\n```python\n{solution.strip()}\n"
        f"```\n\n### Failure:\n{failure.strip()}\n\n### Response:\n"
    )
    return [{"role": "system", "content": REPAIR_SYSTEM}, {"role": "user", "content": user}]
