"""Adaptive response evolution (paper section 3.3): the final answer R_amr = T(I, F^m, F^v) from the question I,
the function specs of modular decomposition F^m and the verified functions retrieved for them F^v. The direct
answer R_d is not shown.

``SYSTEM`` and ``messages``: the paper's prompt, for ``amr`` and its ablations. The paper's exact text is not
reachable offline here, so it is written from the paper's description. The paper's: one "Relevant Functions" slot
(here F^v's code, then F^m's specs as stubs), the request for "a more refined and accurate solution", the words
"pretend that you have never seen the Relevant Functions", and the answer under "### Correct Solution:"
(``HEADING``; ``amr.parsing.under_heading`` takes it out). Reconstructed: the rest of the wording, the Markdown
headings of the other slots (those of this project's other prompts) and the one-shot example.

``GATED_SYSTEM`` and ``gated_messages``: this project's earlier prompt, for the gated method (``amr-gated``, beyond
the paper): it asks the teacher to call the retrieved functions and include their code, and lists the functions to
write last."""

from __future__ import annotations

from collections.abc import Sequence

HEADING = "### Correct Solution:"

# the one-shot example both prompts teach with: a question, a verified function, the specs, the whole solution
_QUESTION = """Write a function `slugify(title)` to turn a title into a URL slug: its lower-case words joined by
hyphens, with punctuation dropped."""
_RETRIEVED = '''import string


def strip_punctuation(text: str) -> str:
    """Remove ASCII punctuation characters from a text."""
    return text.translate(str.maketrans("", "", string.punctuation))'''
_SPECS = '''def split_words(text: str) -> list[str]:
    """Lower-case words of a text, split on whitespace."""
    ...


def slugify(title: str) -> str:
    """A URL slug of a title: its lower-case words joined by hyphens, without punctuation."""
    ...'''
_SOLUTION = '''import string


def strip_punctuation(text: str) -> str:
    """Remove ASCII punctuation characters from a text."""
    return text.translate(str.maketrans("", "", string.punctuation))


def split_words(text: str) -> list[str]:
    """Lower-case words of a text, split on whitespace."""
    return text.lower().split()


def slugify(title: str) -> str:
    """A URL slug of a title: its lower-case words joined by hyphens, without punctuation."""
    return "-".join(split_words(strip_punctuation(title)))'''

SYSTEM = f"""You are a professional coder. You will be given a Python programming question and its Relevant
Functions: verified functions taken from a database, and the specifications of functions (a signature and a
docstring, with ... as the body) that a solution can be built from.
Your task is to give a more refined and accurate solution to the question.
Use a relevant function where it helps, adapt it where it does not fit the question exactly, and ignore it where
it does not help. Then pretend that you have never seen the Relevant Functions: your solution must be complete
and run on its own, with the full code of every function it calls. Write the solution under "{HEADING}",
with all its Python code in one Markdown code block.

## One-Shot Example
### Python Question:
{_QUESTION}

### Relevant Functions:
```python
{_RETRIEVED}


{_SPECS}
```

{HEADING}
```python
{_SOLUTION}
```"""

GATED_SYSTEM = f"""You are a professional coder. You will be given a Python programming question, relevant functions
taken from a database of verified functions, and a plan: the specifications of the functions to write.
Write a correct, complete and efficient solution that defines every function of the plan, under the
exact names and parameters given, each with its full body. A relevant function is a building block:
call it (and include its code) where it helps the task, ignore it where it does not. Never answer with
a relevant function alone. Your answer must include all the Python code in one Markdown code block.

## One-Shot Example
### Python Question:
{_QUESTION}

### Relevant Functions:
```python
{_RETRIEVED}
```

### Functions To Write:
```python
{_SPECS}
```

### Response:
```python
{_SOLUTION}
```"""


def _block(codes: Sequence[str]) -> str:
    return "```python\n" + "\n\n".join(c.strip("\n") for c in codes) + "\n```" if codes else "(none)"


def messages(instruction: str, specs: Sequence[str], functions: Sequence[str]) -> list[dict[str, str]]:
    """The paper's prompt. ``specs``: spec stubs (signature + docstring); ``functions``: retrieved function
    sources; both in the one Relevant Functions slot, the retrieved ones first."""
    user = (
        f"## New Task\n### Python Question:\n{instruction}\n\n"
        f"### Relevant Functions:\n{_block([*functions, *specs])}\n\n{HEADING}\n"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def gated_messages(instruction: str, specs: Sequence[str], functions: Sequence[str]) -> list[dict[str, str]]:
    """The gated method's prompt: the retrieved functions, then the specs as the functions to write."""
    user = (
        f"## New Task\n### Python Question:\n{instruction}\n\n### Relevant Functions:\n{_block(functions)}\n\n"
        f"### Functions To Write:\n{_block(specs)}\n\n### Response:\n"
    )
    return [{"role": "system", "content": GATED_SYSTEM}, {"role": "user", "content": user}]
