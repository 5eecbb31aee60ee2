"""Self-instruct (Wang et al. 2023, as the paper grows MBPP seeds): a new programming problem in the manner of
a few sampled seeds."""

from __future__ import annotations

import re

SYSTEM = """You are a professional coder who writes programming exercises. You will be given a few example
problems. Write one new Python programming problem in the same style: a self-contained task for a single
function, stated in one to three sentences, different from every example. Write only the problem under
"### New Problem:", without a solution, tests or examples of its output.

## One-Shot Example
### Example Problems:
1. Write a function to group a list of file names by their extension, returning a dictionary from each extension
to the names that have it.
2. Write a function to format a number of bytes as a human-readable size such as '1.5 KB' or '3.0 MB'.

### New Problem:
Write a function to convert a spreadsheet column number to its letter name, such as 1 to 'A', 26 to 'Z' and 28
to 'AB'."""


def messages(examples: list[str]) -> list[dict[str, str]]:
    numbered = "\n".join(f"{i}. {e.strip()}" for i, e in enumerate(examples, start=1))
    user = f"## New Task\n### Example Problems:\n{numbered}\n\n### New Problem:\n"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def problem(response: str | None, heading: str = "New Problem:", keep_code: bool = False) -> str:
    """The problem text: what follows ``heading`` if the answer repeats it; code blocks dropped unless ``keep_code``
    (a solution the model added is not part of the problem)."""
    text = (response or "").split(heading)[-1]
    if not keep_code:
        text = re.sub(r"```.*?(```|$)", "", text, flags=re.S)
    return text.strip().lstrip("#").strip()
