"""Adaptive response evolution: the final answer from the instruction, the specs and the retrieved
functions (R_d is not shown). Without retrieval (ablation w/o ARE) the answer comes from the specs."""

from __future__ import annotations

import json
from typing import Any

from amr.engines import Teacher
from amr.prompts import response_evolution
from amr.stages import ask_rows


def spec_stub(spec: dict[str, str]) -> str:
    doc = spec["description"].replace('"""', "'''")
    body = "\n    ".join(doc.splitlines())
    return f'{spec["signature"]}:\n    """{body}"""\n    ...'


def chat(row: dict[str, Any], use_retrieved: bool = True) -> list[dict[str, str]]:
    specs = [spec_stub(s) for s in json.loads(row["specs"])]
    functions = [h["code"] for h in json.loads(row["retrieved"])] if use_retrieved else []
    return response_evolution.messages(row["instruction"], specs, functions)


def run(rows: list[dict[str, Any]], teacher: Teacher, use_retrieved: bool = True) -> list[dict[str, Any]]:
    """A wave's rows with ``instruction``, ``specs``, ``retrieved`` -> + ``are_*`` columns, in order."""
    return ask_rows(rows, teacher, lambda row: chat(row, use_retrieved), "are")
