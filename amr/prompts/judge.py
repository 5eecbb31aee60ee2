"""The contamination judge (the paper's decontamination): is an instruction the same problem as a benchmark item?"""

from __future__ import annotations

import re

SYSTEM = """You are a careful reviewer of programming problems. You will be given a benchmark problem and a
training instruction. Answer "Yes" if the instruction asks for the same task as the benchmark problem, even
when it is reworded, renames the function or changes the example values; answer "No" if it asks for a
different task, even a related one. Reply with "Yes" or "No" on the first line, then one sentence why.

## One-Shot Example
### Benchmark Problem:
Write a function to mask every character of a card number except the last four with '*'.

### Training Instruction:
Create a Python function that hides all but the final four digits of a credit card string behind asterisks.

### Same Problem:
Yes. Both ask to replace all but the last four characters of a card number with asterisks."""


def messages(benchmark: str, instruction: str) -> list[dict[str, str]]:
    user = (
        f"## New Task\n### Benchmark Problem:\n{benchmark.strip()}\n\n### Training Instruction:\n"
        f"{instruction.strip()}\n\n### Same Problem:\n"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def verdict(response: str | None) -> bool | None:
    """True for a "Yes", False for a "No", None when the answer starts with neither."""
    match = re.match(r"\W*(yes|no)\b", response or "", re.IGNORECASE)
    return None if match is None else match.group(1).lower() == "yes"
