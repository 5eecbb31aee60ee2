"""Vendored benchmark and seed data (see PROVENANCE.md), and the instruction loader.

An instruction record is ``{"id": str, "instruction": str, "tests": list[str]}``; ``tests`` holds
assert statements (empty when unknown). Inputs are JSONL or Parquet; a malformed record stops the
load with an error naming the file, the line (row) and the field.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any, Iterator

DATA_DIR = Path(__file__).parent
MBPP = DATA_DIR / "mbpp" / "mbpp.jsonl"
SANITIZED_MBPP = DATA_DIR / "mbpp" / "sanitized-mbpp.json"
HUMANEVAL_PLUS = DATA_DIR / "evalplus" / "HumanEvalPlus-v0.1.10.jsonl.gz"
MBPP_PLUS_V010 = DATA_DIR / "evalplus" / "MbppPlus-v0.1.0.jsonl.gz"
MBPP_PLUS_V020 = DATA_DIR / "evalplus" / "MbppPlus-v0.2.0.jsonl.gz"

MBPP_TRAIN_IDS = range(601, 975)
BUILTIN_SOURCES = ("mbpp-train",)


class InputError(ValueError):
    """A malformed instruction file: the message names file, line and field."""


def mbpp_train() -> list[dict[str, Any]]:
    """MBPP train problems 601-974 as instruction records.

    The instruction is the problem text plus its first test, as MBPP is usually prompted, so that the
    answer uses the function name the tests call. ``tests`` holds the setup code and all asserts.
    """
    records = []
    for row in map(json.loads, MBPP.read_text().splitlines()):
        if row["task_id"] not in MBPP_TRAIN_IDS:
            continue
        setup = [row["test_setup_code"]] if row["test_setup_code"].strip() else []
        records.append({
            "id": f"mbpp/{row['task_id']}",
            "instruction": f"{row['text']}\nYour code should pass this test:\n{row['test_list'][0]}",
            "tests": setup + row["test_list"] + row["challenge_test_list"],
        })
    return records


def load_instructions(source: str, limit: int | None = None, keep_fields: bool = False) -> list[dict[str, Any]]:
    """Load and validate instruction records from a built-in source name or a JSONL/Parquet file;
    ``keep_fields``: keep a file's other fields too (lineage, contamination), not only id, instruction, tests."""
    return list(iter_instructions(source, limit, keep_fields))


def iter_instructions(source: str, limit: int | None = None, keep_fields: bool = False) -> Iterator[dict[str, Any]]:
    """``load_instructions`` one record at a time, for inputs larger than memory."""
    records = iter(mbpp_train()) if source == "mbpp-train" else _validated(Path(source), keep_fields)
    return itertools.islice(records, limit or None)


def _validated(path: Path, keep_fields: bool = False) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"{path}: no such input file (or use one of: {', '.join(BUILTIN_SOURCES)})")
    seen: dict[str, int] = {}
    for line, row in _rows(path):
        where = f"{path}:{line}"
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected an object with 'id' and 'instruction'")
        for field in ("id", "instruction"):
            value = row.get(field)
            if value is None:
                raise InputError(f"{where}: field '{field}' is missing")
            if field == "id" and isinstance(value, int):
                value = str(value)
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"{where}: field '{field}' must be a non-empty string")
            row[field] = value
        if row["id"] in seen:
            raise InputError(f"{where}: field 'id': duplicate id {row['id']!r} (first on line {seen[row['id']]})")
        seen[row["id"]] = line
        tests = row.get("tests")
        if tests is None:
            tests = []
        if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
            raise InputError(f"{where}: field 'tests' must be a list of strings")
        yield {**(row if keep_fields else {}), "id": row["id"], "instruction": row["instruction"], "tests": list(tests)}


def load_requests(path: str | Path) -> list[dict[str, Any]]:
    """Chat requests for the teacher: ``id`` plus ``messages`` (or a ``prompt`` string), optional ``sampling``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such input file")
    requests, seen = [], {}
    for line, row in _rows(path):
        where = f"{path}:{line}"
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected an object with 'id' and 'messages' or 'prompt'")
        if "id" not in row:
            raise InputError(f"{where}: field 'id' is missing")
        rid = str(row["id"])
        if rid in seen:
            raise InputError(f"{where}: field 'id': duplicate id {rid!r} (first on line {seen[rid]})")
        seen[rid] = line
        messages = row.get("messages")
        if messages is None:
            prompt = row.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                raise InputError(f"{where}: field 'messages' is missing (or give a non-empty 'prompt')")
            messages = [{"role": "user", "content": prompt}]
        if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        ):
            raise InputError(f"{where}: field 'messages' must be a non-empty list of {{role, content}} strings")
        sampling = row.get("sampling") or {}
        if not isinstance(sampling, dict):
            raise InputError(f"{where}: field 'sampling' must be an object")
        requests.append({"id": rid, "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
                         "sampling": sampling})
    return requests


def _rows(path: Path) -> Iterator[tuple[int, Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = (row for batch in pq.ParquetFile(path).iter_batches() for row in batch.to_pylist())
        yield from enumerate(rows, start=1)
        return
    with path.open() as f:
        for i, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                yield i, json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{i}: invalid JSON: {exc.msg} (column {exc.colno})") from None
