"""Modular decomposition (paper section 3.2): R_d split into function specs, signatures without bodies."""

from __future__ import annotations

SYSTEM = '''You are a professional coder. You will be given a Python programming question and a draft
answer. Break the solution down into small, reusable functions. For each function write only its
specification: a typed signature and a one-sentence docstring that says what this function returns
for its parameters, in the words of this question. Do not write function bodies: end each function
with `...`. Put all specifications in one Python code block.
Keep the function the question asks for under the exact name and parameters the question or
its example test uses.

## One-Shot Example
### Python Question:
Write a function `top_scorers(lines, n)` that reads lines of the form "name,score" and returns the names
of the n highest scores, highest first, equal scores in alphabetical order of name.

### Draft Answer:
```python
def top_scorers(lines, n):
    scores = []
    for line in lines:
        name, score = line.split(",")
        scores.append((name.strip(), int(score)))
    scores.sort(key=lambda pair: (-pair[1], pair[0]))
    return [name for name, _ in scores[:n]]
```

### Function Specifications:
```python
def parse_score(line: str) -> tuple[str, int]:
    """The name, without surrounding spaces, and the integer score of a comma-separated line."""
    ...

def rank_by_score(scores: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The (name, score) pairs ordered from the highest score down, equal scores by name."""
    ...

def top_scorers(lines: list[str], n: int) -> list[str]:
    """Up to n names with the highest scores among the lines, highest first, ties alphabetical."""
    ...
```'''


def messages(instruction: str, draft: str) -> list[dict[str, str]]:
    user = f"## New Task\n### Python Question:\n{instruction}\n\n### Draft Answer:\n{draft}\n\n### Function Specifications:\n"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


REMINDER = (
    "Your answer has no function specification in the required format. Write each function as a typed "
    "signature followed by a docstring that says what it does, with `...` as its body, all in one Python "
    "code block."
)


def retry_messages(instruction: str, draft: str, previous: str) -> list[dict[str, str]]:
    """The same request once more, after the answer that gave no spec and a reminder of the format."""
    return [
        *messages(instruction, draft),
        {"role": "assistant", "content": previous},
        {"role": "user", "content": REMINDER},
    ]
