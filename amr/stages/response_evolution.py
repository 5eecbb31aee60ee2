"""Adaptive response evolution: the final answer from the instruction, the specs and the retrieved
functions (R_d is not shown). Without retrieval (ablation w/o ARE) the answer comes from the specs.

The paper's ARE (``run``): every row's answer is its evolved answer, the part of the teacher's answer under
"### Correct Solution:"; an answer without that heading is taken whole, as every other stage's answer is, and
the row is marked (``are_heading`` False; the manifest counts them). The gated variant (``gated=True``, method
``amr-gated``, beyond the paper) keeps R_d where ARE adapted no module (``kept``)."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from amr.engines import Teacher
from amr.parsing import python_code, under_heading
from amr.prompts import response_evolution
from amr.stages import ask_rows


def spec_stub(spec: dict[str, str]) -> str:
    doc = spec["description"].replace('"""', "'''")
    body = "\n    ".join(doc.splitlines())
    return f'{spec["signature"]}:\n    """{body}"""\n    ...'


def chat(row: dict[str, Any], use_retrieved: bool = True, gated: bool = False) -> list[dict[str, str]]:
    specs = [spec_stub(s) for s in json.loads(row["specs"])]
    functions = [h["code"] for h in json.loads(row["retrieved"])] if use_retrieved else []
    build = response_evolution.gated_messages if gated else response_evolution.messages
    return build(row["instruction"], specs, functions)


def run(
    rows: list[dict[str, Any]], teacher: Teacher, use_retrieved: bool = True, gated: bool = False
) -> list[dict[str, Any]]:
    """A wave's rows with ``instruction``, ``specs``, ``retrieved`` and R_d -> + ``are_*`` columns (the final
    answer), ``are_source`` (``are``, or ``direct`` where R_d stayed), ``evolved_response`` (the teacher's answer;
    None where it was not asked), ``are_kept`` (why R_d stayed the answer, else None) and ``are_heading`` (whether
    the answer had the paper's heading; None for the gated prompt, which has none), in order."""
    if gated:
        return _gated(rows, teacher, use_retrieved)
    answers = ask_rows(rows, teacher, lambda row: chat(row, use_retrieved), "are")
    return [evolved(r) for r in answers]


def evolved(row: dict[str, Any]) -> dict[str, Any]:
    """An answered row with its evolved answer as the final answer: the part under the paper's heading, else the
    whole answer."""
    solution = under_heading(row["are_response"] or "", response_evolution.HEADING)
    response = row["are_response"] if solution is None else solution
    return {
        **row,
        "are_response": response,
        "are_heading": solution is not None,
        "are_source": "are",
        "evolved_response": response,
        "are_kept": None,
    }


def _gated(rows: list[dict[str, Any]], teacher: Teacher, use_retrieved: bool) -> list[dict[str, Any]]:
    """The gated method's ARE: R_d stays the answer of a row whose rewrite leaves out a function the task asks for
    ("incomplete", ``missing``); with retrieval, also of a row that retrieved nothing ("nothing retrieved": no
    module to adapt, no teacher call) or whose rewrite calls none of the retrieved functions ("no module used": a
    rewrite from the specs alone). A rewrite gets the code of the retrieved functions it calls (``linked``)."""
    asked = [r for r in rows if not use_retrieved or matched(r)]
    answers = ask_rows(asked, teacher, lambda row: chat(row, use_retrieved, gated=True), "are")
    answered = {r["id"]: {**r, "are_response": linked(r), "are_heading": None} for r in answers}
    out = []
    for row in rows:
        answer = answered.get(row["id"])
        if answer is None:
            out.append(kept({**row, "are_heading": None}, "nothing retrieved"))
        elif not answer["are_error"] and missing(answer):
            out.append(kept(answer, "incomplete"))
        elif not answer["are_error"] and use_retrieved and not uses_module(answer):
            out.append(kept(answer, "no module used"))
        else:
            out.append({**answer, "evolved_response": answer["are_response"], "are_kept": None, "are_source": "are"})
    return out


def matched(row: dict[str, Any]) -> bool:
    """Whether retrieval found a module for any of the row's specs (above the floor)."""
    return row["retrieved"] not in (None, "[]")


def missing(row: dict[str, Any]) -> list[str]:
    """The functions of the plan that the rewrite does not define: those the instruction names, else the plan's
    last (MD lists the function the task asks for after its helpers)."""
    names = [s["name"] for s in json.loads(row["specs"] or "[]")]
    wanted = [n for n in names if re.search(rf"\b{re.escape(n)}\b", row["instruction"])] or names[-1:]
    defined, _ = _names(python_code(row["are_response"] or "") or "")
    return [n for n in wanted if n not in defined]


def linked(row: dict[str, Any]) -> str | None:
    """The rewrite with the code of each retrieved function it calls but does not define put before its own
    (verified modules the answer builds on: the answer must run on its own)."""
    response = row["are_response"]
    code = python_code(response or "")
    if not code:
        return response
    defined, called = _names(code)
    modules = [h["code"].strip("\n") for h in json.loads(row["retrieved"] or "[]") if h["name"] in called - defined]
    return response.replace(code, "\n\n\n".join([*modules, code]), 1) if modules else response


def _names(code: str) -> tuple[set[str], set[str]]:
    """The functions a program defines at its top level, and the names it calls directly."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set(), set()
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return defined, {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def uses_module(row: dict[str, Any]) -> bool:
    """Whether the rewrite calls one of the retrieved functions."""
    names = {h["name"] for h in json.loads(row["retrieved"] or "[]")}
    return bool(names & _names(python_code(row["are_response"] or "") or "")[1])


def kept(row: dict[str, Any], reason: str) -> dict[str, Any]:
    """R_d as the row's final answer, in the ``are_*`` columns; the rewrite, if the teacher was asked for one, in
    ``evolved_response`` (with the call's tokens)."""
    return {
        **row,
        "are_response": row["direct_response"],
        "are_error": row["direct_error"],
        "are_input_tokens": row.get("are_input_tokens", 0),
        "are_output_tokens": row.get("are_output_tokens", 0),
        "are_faults": row.get("are_faults", ""),
        "are_finish": row.get("are_finish"),
        "evolved_response": row.get("are_response"),
        "are_kept": reason,
        "are_source": "direct",
    }
