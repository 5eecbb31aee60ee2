"""Code Evol-Instruct (Luo et al. 2023, WizardCoder), as the paper evolves its instructions: one rewrite of an
instruction with one heuristic per round; three rounds give complexity levels 1-3."""

from __future__ import annotations

from amr.prompts.selfinstruct import problem

HEURISTICS = {
    "constraints": "Add new constraints and requirements to the original problem, adding approximately 10 "
    "additional words.",
    "rarer": "Replace a commonly used requirement in the programming task with a less common and more specific one.",
    "reasoning": "If the original problem can be solved with only a few logical steps, add more reasoning steps.",
    "misdirection": "Provide a piece of erroneous code as a reference to increase misdirection.",
    "complexity": "Propose higher time or space complexity requirements, but please refrain from doing so frequently.",
}

SYSTEM = """You are a professional coder who makes programming problems harder. You will be given a problem and
a method. Rewrite the problem with the method so that it is more difficult, still self-contained and
solvable by one Python function. Write only the rewritten problem under "### Rewritten Problem:", without a
solution.

## One-Shot Example
### Method:
Add new constraints and requirements to the original problem, adding approximately 10 additional words.

### Problem:
Write a function to parse a query string such as 'a=1&b=2' into a dictionary.

### Rewritten Problem:
Write a function to parse a query string such as 'a=1&b=2' into a dictionary, collecting the values of a
repeated key into a list and ignoring empty pairs."""


def messages(instruction: str, heuristic: str) -> list[dict[str, str]]:
    user = (
        f"## New Task\n### Method:\n{HEURISTICS[heuristic]}\n\n### Problem:\n{instruction.strip()}\n\n"
        "### Rewritten Problem:\n"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def rewritten(response: str | None) -> str:
    """The rewritten problem text, code kept (the misdirection heuristic adds erroneous code to the problem)."""
    return problem(response, "Rewritten Problem:", keep_code=True)
