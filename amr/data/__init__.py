"""Vendored benchmark and seed data (see PROVENANCE.md), and the instruction loader.

An instruction record is ``{"id": str, "instruction": str, "tests": list[str]}``; ``tests`` holds
assert statements (empty when unknown). Inputs are JSONL or Parquet files, local or object-store URIs
(``amr.storage``); a malformed record stops the load with an error naming the file, the line (row) and the
field.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from amr import storage

DATA_DIR = Path(__file__).parent
MBPP = DATA_DIR / "mbpp" / "mbpp.jsonl"
SANITIZED_MBPP = DATA_DIR / "mbpp" / "sanitized-mbpp.json"
HUMANEVAL_PLUS = DATA_DIR / "evalplus" / "HumanEvalPlus-v0.1.10.jsonl.gz"
MBPP_PLUS_V010 = DATA_DIR / "evalplus" / "MbppPlus-v0.1.0.jsonl.gz"
MBPP_PLUS_V020 = DATA_DIR / "evalplus" / "MbppPlus-v0.2.0.jsonl.gz"

MBPP_TRAIN_OVERLAPS = DATA_DIR / "mbpp" / "mbpp-train-overlaps.json"  # amr.data.overlaps writes it

MBPP_TRAIN_IDS = range(601, 975)
BUILTIN_SOURCES = ("mbpp-train", "mbpp-train-raw")
"""``mbpp-train``: MBPP train 601-974 without the problems that overlap the evaluation benchmarks (230 of 374;
``mbpp_train_decontaminated``), what a run distils by default; ``mbpp-train-raw``: all 374 (``mbpp_train``), 111
of them MBPP+ tasks with their asserts, for ``amr instructions seed`` (which decontaminates them itself, with its
config, and reports what it removed) and for comparing with earlier runs."""


class InputError(ValueError):
    """A malformed instruction file: the message names file, line and field."""


def mbpp_train() -> list[dict[str, Any]]:
    """MBPP train problems 601-974 as instruction records, all of them (the source ``mbpp-train-raw``): 111 are
    MBPP+ tasks and others overlap the benchmarks; ``mbpp_train_decontaminated`` leaves those out.

    The instruction is the problem text plus its first test, as MBPP is usually prompted, so that the
    answer uses the function name the tests call. ``tests`` holds the setup code and all asserts.
    """
    records = []
    for row in map(json.loads, MBPP.read_text().splitlines()):
        if row["task_id"] not in MBPP_TRAIN_IDS:
            continue
        setup = [row["test_setup_code"]] if row["test_setup_code"].strip() else []
        records.append(
            {
                "id": f"mbpp/{row['task_id']}",
                "instruction": f"{row['text']}\nYour code should pass this test:\n{row['test_list'][0]}",
                "tests": setup + row["test_list"] + row["challenge_test_list"],
            }
        )
    return records


def mbpp_train_overlaps() -> list[dict[str, Any]]:
    """The MBPP train problems that overlap the evaluation benchmarks (HumanEval+, MBPP 1-600, MBPP+ v0.1.0 and
    v0.2.0), as ``amr instructions seed`` finds them with the default decontamination: ``{id, check,
    benchmark_id, score}`` each. Vendored (``amr.data.overlaps`` computes it); an error if the data files it was
    computed from have changed."""
    overlaps = json.loads(MBPP_TRAIN_OVERLAPS.read_text())
    changed = [
        name
        for name, sha in overlaps["data_sha256"].items()
        if hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest() != sha
    ]
    if changed:
        raise RuntimeError(
            f"{MBPP_TRAIN_OVERLAPS}: computed from other versions of {', '.join(changed)}; "
            "regenerate it: python -m amr.data.overlaps"
        )
    return overlaps["removed"]


def mbpp_train_decontaminated() -> list[dict[str, Any]]:
    """MBPP train problems 601-974 without those that overlap the evaluation benchmarks (the source
    ``mbpp-train``): 230 of 374, in id order."""
    removed = {r["id"] for r in mbpp_train_overlaps()}
    return [r for r in mbpp_train() if r["id"] not in removed]


def load_instructions(source: str, limit: int | None = None, keep_fields: bool = False) -> list[dict[str, Any]]:
    """Load and validate instruction records from a built-in source name or a JSONL/Parquet file;
    ``keep_fields``: keep a file's other fields too (lineage, contamination), not only id, instruction, tests."""
    return list(iter_instructions(source, limit, keep_fields))


def iter_instructions(
    source: str, limit: int | None = None, keep_fields: bool = False, reserved: tuple[str, ...] = ()
) -> Iterator[dict[str, Any]]:
    """``load_instructions`` one record at a time, for inputs larger than memory; with ``keep_fields``, a
    field named in ``reserved`` (one the caller adds) is an error."""
    if source in BUILTIN_SOURCES:  # ``limit``: the first N of the source, decontaminated or not
        return itertools.islice(mbpp_train_decontaminated() if source == "mbpp-train" else mbpp_train(), limit or None)
    return _validated(source if storage.is_uri(source) else Path(source), limit, keep_fields, reserved)


def _validated(
    path: Path | str, limit: int | None = None, keep_fields: bool = False, reserved: tuple[str, ...] = ()
) -> Iterator[dict[str, Any]]:
    """The file's (a local path or an object-store URI) first ``limit`` records, validated; ids are checked
    unique once all are read (the check keeps 8 bytes per record, not the ids)."""
    if not storage.is_file(path):
        raise InputError(f"{path}: no such input file (or use one of: {', '.join(BUILTIN_SOURCES)})")
    hashes = array("Q")
    for line, row in itertools.islice(_rows(path), limit or None):
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
        if keep_fields and (taken := next((f for f in reserved if f in row), None)):
            raise InputError(f"{where}: field '{taken}' is reserved: the job adds a field of that name")
        hashes.append(_id_hash(row["id"]))
        tests = row.get("tests")
        if tests is None:
            tests = []
        if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
            raise InputError(f"{where}: field 'tests' must be a list of strings")
        yield {**(row if keep_fields else {}), "id": row["id"], "instruction": row["instruction"], "tests": list(tests)}
    _check_unique_ids(path, hashes)


def _id_hash(rid: str) -> int:
    return int.from_bytes(hashlib.blake2b(rid.encode(), digest_size=8).digest(), "little")


def _check_unique_ids(path: Path | str, hashes: array) -> None:
    """Raise on the first repeated id, naming both lines. Only ids whose hash repeats are looked up again
    (rows read a second time); a hash shared by different ids is no error."""
    values, counts = np.unique(np.frombuffer(hashes, dtype=np.uint64), return_counts=True)
    suspects = set(values[counts > 1].tolist())
    if not suspects:
        return
    first: dict[str, int] = {}
    for line, row in itertools.islice(_rows(path), len(hashes)):
        rid = str(row["id"])
        if _id_hash(rid) in suspects:
            if rid in first:
                raise InputError(f"{path}:{line}: field 'id': duplicate id {rid!r} (first on line {first[rid]})")
            first[rid] = line


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
        if (
            not isinstance(messages, list)
            or not messages
            or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages
            )
        ):
            raise InputError(f"{where}: field 'messages' must be a non-empty list of {{role, content}} strings")
        sampling = row.get("sampling") or {}
        if not isinstance(sampling, dict):
            raise InputError(f"{where}: field 'sampling' must be an object")
        requests.append(
            {
                "id": rid,
                "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
                "sampling": sampling,
            }
        )
    return requests


def _rows(path: Path | str) -> Iterator[tuple[int, Any]]:
    if str(path).endswith(".parquet"):
        import pyarrow.parquet as pq

        import pyarrow as pa

        with storage.open_input(path) as f:
            try:
                batches = pq.ParquetFile(f).iter_batches()
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(f"{path}: not a Parquet file ({exc}); write Parquet, or name it .jsonl") from None
            rows = (row for batch in batches for row in batch.to_pylist())
            yield from enumerate(rows, start=1)
        return
    with storage.open_input(path) as f:
        for i, raw in enumerate(io.BufferedReader(f, buffer_size=storage.READ_BUFFER), start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{path}:{i}: not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1}); "
                    "save the file as UTF-8"
                ) from None
            if not text.strip():
                continue
            if "\x00" in text:
                raise InputError(f"{path}:{i}: a NUL byte at column {text.index(chr(0)) + 1}; is this a binary file?")
            try:
                yield i, json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{i}: invalid JSON: {exc.msg} (column {exc.colno})") from None
