"""The SFT dataset of a distill run, checked, as TRL prompt-completion examples.

Rows come from ``dataset.parquet`` (else ``dataset.jsonl``) of a run directory (a local path or an
object-store URI) or from one such file, streamed: the driver checks them all, each worker reads them
into a disk-backed Hugging Face dataset. The prompt is the instruction, the completion the response;
the loss covers the completion only (TRL ``completion_only_loss``: labels are -100 on the prompt).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from amr.data import InputError
from amr.prompts.student import ALPACA
from amr.storage import RunDir

FILES = ("dataset.parquet", "dataset.jsonl")


def dataset_file(source: str) -> tuple[RunDir, str]:
    """Where the rows of ``source`` (a run directory or a .parquet/.jsonl file) are: a folder and a name."""
    if source.endswith((".parquet", ".jsonl")):
        folder, _, name = source.rpartition("/")
        run_dir, names = RunDir(folder or "."), (name,)
    else:
        run_dir, names = RunDir(source), FILES
    name = next((n for n in names if run_dir.exists(n)), None)
    if name is None:
        raise InputError(
            f"{run_dir.path(names[0])}: no such dataset file"
            + (f" (nor {names[1]})" if len(names) > 1 else "")
            + "; run `amr distill` first"
        )
    return run_dir, name


def iter_examples(source: str, template: str) -> Iterator[dict[str, Any]]:
    """The examples of ``source``, a row at a time (nothing is held), each checked: an error names the row
    and the field."""
    return _examples(*dataset_file(source), template)


def count_examples(source: str, template: str) -> tuple[int, str]:
    """Every example of ``source`` checked; their number and the file they come from (none is an error)."""
    run_dir, name = dataset_file(source)
    count = sum(1 for _ in _examples(run_dir, name, template))
    if not count:
        raise InputError(f"{run_dir.path(name)}: no rows: nothing to train on")
    return count, run_dir.path(name)


def _examples(run_dir: RunDir, name: str, template: str) -> Iterator[dict[str, Any]]:
    where = run_dir.path(name)
    for i, row in enumerate(_rows(run_dir, name, where)):
        at = f"{where}: row {i}" + (f" (id {row['id']!r})" if isinstance(row, dict) and "id" in row else "")
        yield example(row, template, at)


def _rows(run_dir: RunDir, name: str, where: str) -> Iterator[Any]:
    if name.endswith(".parquet"):
        try:
            yield from (row for batch in run_dir.scan_stage(name) for row in batch.to_pylist())
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(f"{where}: not a readable Parquet file: {exc}") from None
        return
    for i, line in enumerate(run_dir.read_lines(name), 1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}:{i}: invalid JSON: {exc.msg}") from None


def example(row: Any, template: str, at: str) -> dict[str, Any]:
    """A prompt-completion example: chat messages (``chat``) or strings (``alpaca``); ``at`` names the row."""
    if not isinstance(row, dict):
        raise InputError(f"{at}: expected an object with 'instruction' and 'response'")
    if template == "chat" and row.get("messages") is not None:
        messages = _messages(row["messages"], at)
        return {"prompt": messages[:-1], "completion": messages[-1:]}
    instruction, response = (_text(row, field, at) for field in ("instruction", "response"))
    if template == "chat":
        return {
            "prompt": [{"role": "user", "content": instruction}],
            "completion": [{"role": "assistant", "content": response}],
        }
    return {"prompt": ALPACA.format(instruction=instruction), "completion": response}


def _text(row: dict[str, Any], field: str, at: str) -> str:
    if field not in row:
        raise InputError(f"{at}: field {field!r} is missing (columns: {', '.join(map(str, row))})")
    value = row[field]
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{at}: field {field!r} must be a non-empty string")
    return value


def _messages(messages: Any, at: str) -> list[dict[str, str]]:
    ok = (
        isinstance(messages, list)
        and len(messages) >= 2
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        )
    )
    if not ok:
        raise InputError(f"{at}: field 'messages' must be a list of at least two {{role, content}} strings")
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise InputError(f"{at}: field 'messages' must end with a non-empty assistant message (the response)")
    return [{"role": m["role"], "content": m["content"]} for m in messages]
