"""Pure parsing of teacher responses."""

from __future__ import annotations

import ast
import re

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def code_blocks(response: str) -> list[str]:
    """Fenced code blocks of a Markdown response, in order (an unclosed last fence counts)."""
    return [block.strip("\n") for block in _FENCE.findall(response or "")]


def python_code(response: str) -> str | None:
    """The first code block that parses as Python, else None."""
    for block in code_blocks(response):
        try:
            ast.parse(block)
        except SyntaxError:
            continue
        return block
    return None
