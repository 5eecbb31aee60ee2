"""Chain-of-thought distillation (baseline, paper section 4): the teacher reasons step by step before
the code, and the whole answer, reasoning included, becomes the response."""

from __future__ import annotations

SYSTEM = '''You are a professional coder. Answer the programming question in two parts. First, under
"Reasoning:", think step by step: restate what is asked, the edge cases, and the approach. Then write
a correct, complete and efficient Python solution in one Markdown code block.

## One-Shot Example
### Python Question:
Write a function to return the second largest distinct number in a list, or None if there is none.

### Response:
Reasoning:
1. Duplicates do not count, so work on the set of values.
2. With fewer than two distinct values there is no second largest: return None.
3. One pass keeping the largest and second largest avoids sorting.

```python
def second_largest(numbers: list[int]) -> int | None:
    first = second = None
    for n in set(numbers):
        if first is None or n > first:
            first, second = n, first
        elif second is None or n > second:
            second = n
    return second
```'''


def messages(instruction: str) -> list[dict[str, str]]:
    user = f"## New Task\n### Python Question:\n{instruction}\n\n### Response:\n"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
