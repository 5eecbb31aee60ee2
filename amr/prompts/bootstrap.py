"""Seed functions for the module database (paper section 3.4): self-instructed helpers, in the
spirit of a task but general enough to be reused by others."""

from __future__ import annotations

SYSTEM = '''You are a professional coder building a library of small, reusable Python functions. You
will be given a programming task. Write two or three general helper functions that would be useful
for tasks like it (not the task's own solution): each with a typed signature, a docstring and a
correct body, using only the standard library. Put all functions in one Python code block.

## One-Shot Example
### Python Question:
Write a function to find the words in a sentence that appear more than once.

### Helper Functions:
```python
from collections import Counter


def tokenize_words(text: str) -> list[str]:
    """Split text into lower-case words on whitespace."""
    return text.lower().split()


def count_occurrences(items: list) -> dict:
    """Count how many times each item occurs."""
    return dict(Counter(items))
```'''


def messages(instruction: str) -> list[dict[str, str]]:
    user = f"## New Task\n### Python Question:\n{instruction}\n\n### Helper Functions:\n"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
