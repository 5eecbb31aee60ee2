"""Answer repair (baseline AnsRepair, paper section 4): the teacher writes tests for the question, R_d
runs against them in the sandbox, and a failing R_d is repaired from the execution feedback."""

from __future__ import annotations

TESTS_SYSTEM = """You are a professional coder and tester. You will be given a Python programming question.
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

REPAIR_SYSTEM = """You are a professional coder. You will be given a Python programming question, a
solution to it, and the result of running the solution against tests. The solution fails. Find the
bug and write a corrected, complete solution in one Markdown code block. A test may itself be wrong:
follow the question where they disagree.

## One-Shot Example
### Python Question:
Write a function `initials(name)` that returns the upper-case initials of a person's name, one letter per word.

### Solution:
```python
def initials(name):
    return "".join(word[0] for word in name.split())
```

### Execution Feedback:
AssertionError at test.py:1: assert initials('ada lovelace') == 'AL'

### Response:
The solution keeps the case of each initial; the question asks for upper-case initials.

```python
def initials(name):
    return "".join(word[0] for word in name.split()).upper()
```"""


def tests_messages(instruction: str) -> list[dict[str, str]]:
    user = f"## New Task\n### Python Question:\n{instruction}\n\n### Tests:\n"
    return [{"role": "system", "content": TESTS_SYSTEM}, {"role": "user", "content": user}]


def repair_messages(instruction: str, solution: str, feedback: str) -> list[dict[str, str]]:
    user = (
        f"## New Task\n### Python Question:\n{instruction}\n\n### Solution:\n```python\n{solution.strip()}\n```\n\n"
        f"### Execution Feedback:\n{feedback.strip()}\n\n### Response:\n"
    )
    return [{"role": "system", "content": REPAIR_SYSTEM}, {"role": "user", "content": user}]
