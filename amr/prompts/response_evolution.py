"""Adaptive response evolution (paper section 3.3): the final answer from the question, the function
specs and the verified functions retrieved for them. The direct answer R_d is not shown."""

from __future__ import annotations

from collections.abc import Sequence

SYSTEM = '''You are a professional coder. You will be given a Python programming question, relevant functions
taken from a database of verified functions, and a plan: the specifications of the functions to write.
Write a correct, complete and efficient solution that defines every function of the plan, under the
exact names and parameters given, each with its full body. A relevant function is a building block:
call it (and include its code) where it helps the task, ignore it where it does not. Never answer with
a relevant function alone. Your answer must include all the Python code in one Markdown code block.

## One-Shot Example
### Python Question:
Write a function `slugify(title)` to turn a title into a URL slug: its lower-case words joined by
hyphens, with punctuation dropped.

### Relevant Functions:
```python
import string


def strip_punctuation(text: str) -> str:
    """Remove ASCII punctuation characters from a text."""
    return text.translate(str.maketrans("", "", string.punctuation))
```

### Functions To Write:
```python
def split_words(text: str) -> list[str]:
    """Lower-case words of a text, split on whitespace."""
    ...

def slugify(title: str) -> str:
    """A URL slug of a title: its lower-case words joined by hyphens, without punctuation."""
    ...
```

### Response:
```python
import string


def strip_punctuation(text: str) -> str:
    """Remove ASCII punctuation characters from a text."""
    return text.translate(str.maketrans("", "", string.punctuation))


def split_words(text: str) -> list[str]:
    """Lower-case words of a text, split on whitespace."""
    return text.lower().split()


def slugify(title: str) -> str:
    """A URL slug of a title: its lower-case words joined by hyphens, without punctuation."""
    return "-".join(split_words(strip_punctuation(title)))
```'''


def _block(codes: Sequence[str]) -> str:
    return "```python\n" + "\n\n".join(c.strip("\n") for c in codes) + "\n```" if codes else "(none)"


def messages(instruction: str, specs: Sequence[str], functions: Sequence[str]) -> list[dict[str, str]]:
    """``specs``: spec stubs (signature + docstring); ``functions``: retrieved function sources."""
    user = (
        f"## New Task\n### Python Question:\n{instruction}\n\n### Relevant Functions:\n{_block(functions)}\n\n"
        f"### Functions To Write:\n{_block(specs)}\n\n### Response:\n"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
