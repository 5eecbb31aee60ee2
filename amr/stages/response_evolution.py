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


def run(
    rows: list[dict[str, Any]], teacher: Teacher, use_retrieved: bool = True, evolve_unmatched: bool = True
) -> list[dict[str, Any]]:
    """A wave's rows with ``instruction``, ``specs``, ``retrieved`` -> + ``are_*`` columns and ``are_source``
    (``evolved``, or ``direct``), in order. Unless ``evolve_unmatched``, a row that retrieved nothing keeps R_d
    as its answer, without a teacher call: there is no module to adapt."""
    asked = [r for r in rows if evolve_unmatched or not use_retrieved or matched(r)]
    answered = {r["id"]: r for r in ask_rows(asked, teacher, lambda row: chat(row, use_retrieved), "are")}
    return [{**answered[r["id"]], "are_source": "evolved"} if r["id"] in answered else kept(r) for r in rows]


def matched(row: dict[str, Any]) -> bool:
    """Whether retrieval found a module for any of the row's specs (above the floor)."""
    return row["retrieved"] not in (None, "[]")


def kept(row: dict[str, Any]) -> dict[str, Any]:
    """R_d as the row's final answer, in the ``are_*`` columns."""
    return {
        **row,
        "are_response": row["direct_response"],
        "are_error": row["direct_error"],
        "are_input_tokens": 0,
        "are_output_tokens": 0,
        "are_faults": "",
        "are_source": "direct",
    }
