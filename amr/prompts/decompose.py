"""Modular decomposition (paper section 3.2): R_d split into function specs, signatures without bodies."""

from __future__ import annotations

SYSTEM = '''You are a professional coder. You will be given a Python programming question and a draft
answer. Break the solution down into small, reusable functions. For each function write only its
specification: a typed signature and a docstring that says what it does, its parameters and what it
returns. Do not write function bodies: end each function with `...`. Put all specifications in one
Python code block.
Keep the function the question asks for under the exact name and parameters the question or
its example test uses.

## One-Shot Example
### Python Question:
Write a function `repeated_words(sentence)` to find the words in a sentence that appear more than
once, in order of first use.

### Draft Answer:
```python
def repeated_words(sentence):
    words = sentence.lower().split()
    counts = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
    seen, out = set(), []
    for w in words:
        if counts[w] > 1 and w not in seen:
            seen.add(w)
            out.append(w)
    return out
```

### Function Specifications:
```python
def tokenize_words(sentence: str) -> list[str]:
    """Split a sentence into lower-case words on whitespace.

    Args:
        sentence: the text to split.
    Returns:
        The words, in order.
    """
    ...

def count_occurrences(items: list[str]) -> dict[str, int]:
    """Count how many times each item occurs.

    Args:
        items: the items to count.
    Returns:
        A mapping from item to its number of occurrences.
    """
    ...

def repeated_words(sentence: str) -> list[str]:
    """Words that occur more than once in a sentence, in order of first occurrence.

    Args:
        sentence: the text to inspect.
    Returns:
        Each repeated word once, in the order it first appears.
    """
    ...
```'''


def messages(instruction: str, draft: str) -> list[dict[str, str]]:
    user = f"## New Task\n### Python Question:\n{instruction}\n\n### Draft Answer:\n{draft}\n\n### Function Specifications:\n"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
