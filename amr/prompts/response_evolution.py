"""Adaptive response evolution (paper section 3.3): the final answer from the question, the function
specs and the verified functions retrieved for them. The direct answer R_d is not shown."""

from __future__ import annotations

from typing import Sequence

SYSTEM = '''You are a professional coder. You will be given a Python programming question, a plan of
function specifications, and relevant functions taken from a database of verified functions. Write a
correct, complete and efficient solution. Follow the plan where it helps; reuse or adapt a relevant
function when it fits the task, and ignore it when it does not. Your answer must include all the
Python code in one Markdown code block.
Define the function the question asks for under the exact name and parameters the question or
its example test uses, and write its full body: a relevant function alone is not an answer.

## One-Shot Example
### Python Question:
Write a function `repeated_words(sentence)` to find the words in a sentence that appear more than
once, in order of first use.

### Function Specifications:
```python
def tokenize_words(sentence: str) -> list[str]:
    """Split a sentence into lower-case words on whitespace."""
    ...

def repeated_words(sentence: str) -> list[str]:
    """Words that occur more than once in a sentence, in order of first occurrence."""
    ...
```

### Relevant Functions:
```python
from collections import Counter


def count_occurrences(items: list) -> dict:
    """Count how many times each item occurs."""
    return dict(Counter(items))
```

### Response:
```python
from collections import Counter


def tokenize_words(sentence: str) -> list[str]:
    """Split a sentence into lower-case words on whitespace."""
    return sentence.lower().split()


def count_occurrences(items: list) -> dict:
    """Count how many times each item occurs."""
    return dict(Counter(items))


def repeated_words(sentence: str) -> list[str]:
    """Words that occur more than once in a sentence, in order of first occurrence."""
    words = tokenize_words(sentence)
    counts = count_occurrences(words)
    seen = set()
    result = []
    for word in words:
        if counts[word] > 1 and word not in seen:
            seen.add(word)
            result.append(word)
    return result
```'''


def _block(codes: Sequence[str]) -> str:
    return "```python\n" + "\n\n".join(c.strip("\n") for c in codes) + "\n```" if codes else "(none)"


def messages(instruction: str, specs: Sequence[str], functions: Sequence[str]) -> list[dict[str, str]]:
    """``specs``: spec stubs (signature + docstring); ``functions``: retrieved function sources."""
    user = (f"## New Task\n### Python Question:\n{instruction}\n\n### Function Specifications:\n{_block(specs)}\n\n"
            f"### Relevant Functions:\n{_block(functions)}\n\n### Response:\n")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
