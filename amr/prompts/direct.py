"""Direct distillation (paper section 3.1): the teacher answers the instruction as is (R_d)."""

from __future__ import annotations

SYSTEM = (
    "You are a professional coder. Answer the programming question with a correct, complete and "
    "efficient Python solution. Your answer must include the Python code in a Markdown code block."
)


def messages(instruction: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": instruction}]
