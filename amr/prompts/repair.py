"""Answer repair (baseline AnsRepair, paper section 4): the teacher writes tests for the question, R_d
runs against them in the sandbox, and a failing R_d is repaired from the execution feedback."""

from __future__ import annotations

TESTS_SYSTEM = '''You are a professional coder and tester. You will be given a Python programming question.
Write assert statements that check a solution to it: typical inputs, edge cases and corner cases, each
with the exact expected result. Call the function by the name the question implies. Put only the
assert statements in one Python code block.

## One-Shot Example
### Python Question:
Write a function `is_palindrome(text)` to check whether a string reads the same backwards, ignoring case.

### Tests:
```python
assert is_palindrome("") == True
assert is_palindrome("Abba") == True
assert is_palindrome("abc") == False
assert is_palindrome("a") == True
```'''

REPAIR_SYSTEM = '''You are a professional coder. You will be given a Python programming question, a
solution to it, and the result of running the solution against tests. The solution fails. Find the
bug and write a corrected, complete solution in one Markdown code block. A test may itself be wrong:
follow the question where they disagree.

## One-Shot Example
### Python Question:
Write a function `is_palindrome(text)` to check whether a string reads the same backwards, ignoring case.

### Solution:
```python
def is_palindrome(text):
    return text == text[::-1]
```

### Execution Feedback:
assertion failed: assert is_palindrome("Abba") == True

### Response:
The solution compares case-sensitively; the question asks to ignore case.

```python
def is_palindrome(text):
    text = text.lower()
    return text == text[::-1]
```'''


def tests_messages(instruction: str) -> list[dict[str, str]]:
    user = f"## New Task\n### Python Question:\n{instruction}\n\n### Tests:\n"
    return [{"role": "system", "content": TESTS_SYSTEM}, {"role": "user", "content": user}]


def repair_messages(instruction: str, solution: str, feedback: str) -> list[dict[str, str]]:
    user = (f"## New Task\n### Python Question:\n{instruction}\n\n### Solution:\n```python\n{solution.strip()}\n```\n\n"
            f"### Execution Feedback:\n{feedback.strip()}\n\n### Response:\n")
    return [{"role": "system", "content": REPAIR_SYSTEM}, {"role": "user", "content": user}]
