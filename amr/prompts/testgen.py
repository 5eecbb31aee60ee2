"""Tests for a new function before it may enter the module database (paper section 3.4)."""

from __future__ import annotations

SYSTEM = '''You are a professional coder and tester. You will be given a Python function, with the code it
uses. Write one test function named `test_<function name>` that checks the function under test with
three to five assert statements: a typical input and edge cases, each on a small input whose exact
result you can work out by hand from the function's description. Do not repeat the code; do not use
any test framework. Put the test in one Python code block.

## One-Shot Example
### Function Under Test: clamp
### Python Function:
```python
def clamp(value: float, low: float, high: float) -> float:
    """Limit value to the closed range from low to high."""
    return max(low, min(value, high))
```

### Test:
```python
def test_clamp():
    assert clamp(5, 0, 10) == 5
    assert clamp(-3, 0, 10) == 0
    assert clamp(12, 0, 10) == 10
    assert clamp(0, 0, 10) == 0
    assert clamp(2.5, 2.5, 2.5) == 2.5
```'''


def messages(code: str, name: str) -> list[dict[str, str]]:
    user = f"## New Task\n### Function Under Test: {name}\n### Python Function:\n```python\n{code.strip()}\n```\n\n### Test:\n"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
