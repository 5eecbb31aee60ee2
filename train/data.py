"""The SFT dataset of a distill run, checked, as TRL prompt-completion examples.

Rows come from ``dataset.parquet`` (else ``dataset.jsonl``) of a run directory (a local path or an
object-store URI) or from one such file. The prompt is the instruction, the completion the response;
the loss covers the completion only (TRL ``completion_only_loss``: labels are -100 on the prompt).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from amr.data import InputError
from amr.storage import RunDir

FILES = ("dataset.parquet", "dataset.jsonl")

ALPACA = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    "\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
"""The Alpaca / WizardCoder prompt (``template: alpaca``); the response follows, then the EOS token."""


def load_rows(source: str) -> tuple[list[dict[str, Any]], str]:
    """The rows of ``source`` (a run directory or a .parquet/.jsonl file) and the file they came from."""
    if source.endswith((".parquet", ".jsonl")):
        folder, _, name = source.rpartition("/")
        run_dir, names = RunDir(folder or "."), (name,)
    else:
        run_dir, names = RunDir(source), FILES
    name = next((n for n in names if run_dir.exists(n)), None)
    if name is None:
        raise InputError(f"{run_dir.path(names[0])}: no such dataset file"
                         + (f" (nor {names[1]})" if len(names) > 1 else "") + "; run `amr distill` first")
    where = run_dir.path(name)
    if name.endswith(".parquet"):
        try:
            rows = run_dir.read_table(name).to_pylist()
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(f"{where}: not a readable Parquet file: {exc}") from None
    else:
        rows = []
        for i, line in enumerate(run_dir.read_text(name).splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise InputError(f"{where}:{i}: invalid JSON: {exc.msg}") from None
    if not rows:
        raise InputError(f"{where}: no rows: nothing to train on")
    return rows, where


def examples(rows: list[dict[str, Any]], template: str, where: str) -> list[dict[str, Any]]:
    """Prompt-completion examples: chat messages (``chat``) or strings (``alpaca``); errors name row and field."""
    out = []
    for i, row in enumerate(rows):
        at = f"{where}: row {i}" + (f" (id {row['id']!r})" if isinstance(row, dict) and "id" in row else "")
        if not isinstance(row, dict):
            raise InputError(f"{at}: expected an object with 'instruction' and 'response'")
        if template == "chat" and row.get("messages") is not None:
            messages = _messages(row["messages"], at)
            out.append({"prompt": messages[:-1], "completion": messages[-1:]})
            continue
        instruction, response = (_text(row, field, at) for field in ("instruction", "response"))
        if template == "chat":
            out.append({"prompt": [{"role": "user", "content": instruction}],
                        "completion": [{"role": "assistant", "content": response}]})
        else:
            out.append({"prompt": ALPACA.format(instruction=instruction), "completion": response})
    return out


def _text(row: dict[str, Any], field: str, at: str) -> str:
    if field not in row:
        raise InputError(f"{at}: field {field!r} is missing (columns: {', '.join(map(str, row))})")
    value = row[field]
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{at}: field {field!r} must be a non-empty string")
    return value


def _messages(messages: Any, at: str) -> list[dict[str, str]]:
    ok = (isinstance(messages, list) and len(messages) >= 2
          and all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                  for m in messages))
    if not ok:
        raise InputError(f"{at}: field 'messages' must be a list of at least two {{role, content}} strings")
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise InputError(f"{at}: field 'messages' must end with a non-empty assistant message (the response)")
    return [{"role": m["role"], "content": m["content"]} for m in messages]
