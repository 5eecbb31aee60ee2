"""Tests for a new function before it may enter the module database (paper section 3.4)."""

from __future__ import annotations

SYSTEM = '''You are a professional coder and tester. You will be given a Python function, with the code it
uses. Write one test function named `test_<function name>` that checks the function under test with
several assert statements: typical inputs, edge cases and corner cases, each with the exact expected
result. Do not repeat the code; do not use any test framework. Put the test in one Python code block.

## One-Shot Example
### Function Under Test: count_occurrences
### Python Function:
```python
def count_occurrences(items: list) -> dict:
    """Count how many times each item occurs."""
    counts = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts
```

### Test:
```python
def test_count_occurrences():
    assert count_occurrences([]) == {}
    assert count_occurrences(["a"]) == {"a": 1}
    assert count_occurrences(["a", "b", "a"]) == {"a": 2, "b": 1}
    assert count_occurrences([1, 1, 1]) == {1: 3}
```'''


def messages(code: str, name: str) -> list[dict[str, str]]:
    user = f"## New Task\n### Function Under Test: {name}\n### Python Function:\n```python\n{code.strip()}\n```\n\n### Test:\n"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
