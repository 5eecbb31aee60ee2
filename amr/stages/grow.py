"""Database growth: functions of the final answers that are novel get a teacher-written test, run in the
sandbox, and those that pass become modules. One writer (the caller) commits each wave's inserts."""

from __future__ import annotations

from typing import Any

import numpy as np

from amr.embeddings import Encoder
from amr.engines import Teacher
from amr.modules import ModuleDB, spec_text
from amr.parsing import defined_functions, python_code, vacuous_test
from amr.prompts import bootstrap as bootstrap_prompt
from amr.prompts import testgen
from amr.sandbox.stage import SandboxActors
from amr.stages import ask_rows

CANDIDATE_FIELDS = ("instruction_id", "name", "signature", "description", "code")


def bootstrap(rows: list[dict[str, Any]], teacher: Teacher) -> list[dict[str, Any]]:
    """The teacher's solution to each instruction as small, general functions: rows gain ``bootstrap_*`` columns."""
    return ask_rows(rows, teacher, lambda row: bootstrap_prompt.messages(row["instruction"]), "bootstrap")


def candidates(rows: list[dict[str, Any]], response: str = "are_response") -> list[dict[str, Any]]:
    """Top-level functions defined in each row's final answer (made standalone with its imports)."""
    out = []
    for row in rows:
        code = python_code(row[response] or "")
        for function in defined_functions(code) if code else []:
            out.append({"instruction_id": row["id"], **function})
    return out


def novel(
    cands: list[dict[str, Any]],
    db: ModuleDB,
    embedder: Encoder,
    version: int,
    threshold: float,
    embedded: dict[str, np.ndarray] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split candidates into novel ones (with ``vector``) and the rest (with ``outcome``): a candidate is
    novel when its cosine to every module of ``version`` and to every earlier novel candidate of the
    wave is below ``threshold``. ``embedded``: vectors of texts embedded already (the wave's retrieval queries: a
    function that keeps its spec's signature and docstring has its spec's text), by text; the rest are embedded."""
    if not cands:
        return [], []
    vectors = embed_texts([spec_text(c["signature"], c["description"]) for c in cands], embedder, embedded or {})
    nearest = db.max_similarity(vectors, version)
    twins = wave_twins(vectors, [similarity < threshold for similarity in nearest], threshold)
    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for i, (cand, vector, similarity) in enumerate(zip(cands, vectors, nearest)):
        if similarity >= threshold:
            rejected.append({**cand, "outcome": "known", "similarity": round(similarity, 4)})
        elif i in twins:
            rejected.append({**cand, "outcome": "duplicate in wave", "similarity": round(twins[i], 4)})
        else:
            kept.append({**cand, "vector": vector, "similarity": round(similarity, 4)})
    return kept, rejected


def wave_twins(vectors: np.ndarray, novel: list[bool], threshold: float, block: int = 1024) -> dict[int, float]:
    """The ``novel`` vectors, in order, whose cosine to an earlier one kept reaches ``threshold`` (the others novel
    are kept), by index, with their highest cosine to one kept. The cosines come a block of rows at a time from one
    matrix product: a wave's candidates pairwise in Python took ~10 s of the driver for 3,840 of them."""
    kept = np.zeros(len(vectors), dtype=bool)
    twins: dict[int, float] = {}
    for start in range(0, len(vectors), block):
        stop = min(start + block, len(vectors))
        cosines = vectors[start:stop] @ vectors[:stop].T
        for i in range(start, stop):
            if not novel[i]:
                continue
            earlier = cosines[i - start, :i][kept[:i]]
            if earlier.size and (nearest := float(earlier.max())) >= threshold:
                twins[i] = nearest
            else:
                kept[i] = True
    return twins


def still_novel(
    outcomes: list[dict[str, Any]], db: ModuleDB, tested_at: int, version: int, threshold: float
) -> list[dict[str, Any]]:
    """``outcomes`` with each verified function (novel at version ``tested_at``) whose cosine to a module added after
    that version, up to ``version``, reaches ``threshold`` made ``known``: another writer's turn (an earlier wave)
    inserted it while it was tested."""
    verified = [i for i, c in enumerate(outcomes) if c["outcome"] == "verified"]
    if not verified or version == tested_at:
        return outcomes
    nearest = db.max_similarity_added(np.asarray([outcomes[i]["vector"] for i in verified]), tested_at, version)
    out = list(outcomes)
    for i, similarity in zip(verified, nearest):
        if similarity >= threshold:
            out[i] = {
                **outcomes[i],
                "outcome": "known",
                "reason": "inserted by an earlier wave while it was tested",
                "similarity": round(similarity, 4),
            }
    return out


def embed_texts(texts: list[str], embedder: Encoder, embedded: dict[str, np.ndarray]) -> np.ndarray:
    """One vector per text: from ``embedded`` where it has the text, else from one ``encode`` call of the others."""
    missing = list(dict.fromkeys(t for t in texts if t not in embedded))
    fresh = dict(zip(missing, embedder.encode(missing))) if missing else {}
    return np.asarray([embedded[t] if t in embedded else fresh[t] for t in texts], dtype=np.float32)


def verify(kept: list[dict[str, Any]], teacher: Teacher, sandbox: SandboxActors) -> list[dict[str, Any]]:
    """Teacher-written test per function, run in the sandbox: adds ``test``, ``outcome``, ``reason``. A test
    without an assert that calls the function is no test: nothing would be verified by its passing."""
    rows = [{f: c[f] for f in CANDIDATE_FIELDS} for c in kept]
    tested = ask_rows(rows, teacher, lambda r: testgen.messages(r["code"], r["name"]), "test")
    # a test cut off at max_tokens keeps its whole asserts
    tests = [python_code(r["test_response"] or "", cut_off=True) or "" for r in tested]
    unchecked = {
        i: row["test_error"]
        or ("no Python test in the answer" if not test.strip() else vacuous_test(test, row["name"]))
        for i, (row, test) in enumerate(zip(tested, tests))
    }
    checkable = [i for i, why in unchecked.items() if not why]
    records = dict(zip(checkable, sandbox.run([{"code": kept[i]["code"], "test": tests[i]} for i in checkable])))
    out = []
    for i, (cand, row, test) in enumerate(zip(kept, tested, tests)):
        if i not in records:
            outcome, reason = "no test", unchecked[i]
        elif records[i]["status"] == "passed":
            outcome, reason = "verified", ""
        else:
            outcome, reason = "rejected", f"{records[i]['status']}: {records[i]['reason']}"
        out.append(
            {
                **cand,
                "test": test,
                "outcome": outcome,
                "reason": reason,
                "test_input_tokens": row["test_input_tokens"],
                "test_output_tokens": row["test_output_tokens"],
                "test_error": row["test_error"],
                "test_faults": row["test_faults"],
                "test_finish": row["test_finish"],
            }
        )
    return out


def insert(verified: list[dict[str, Any]], db: ModuleDB, run: str, stage: str) -> int:
    """Insert the verified functions with provenance; returns rows added (retries add none)."""
    return db.insert(
        {
            **{f: c[f] for f in ("name", "signature", "description", "code", "test")},
            "vector": np.asarray(c["vector"], dtype=np.float32),
            "run": run,
            "instruction_id": c["instruction_id"],
            "stage": stage,
            "verdict": "passed",
        }
        for c in verified
        if c["outcome"] == "verified"
    )
