"""Retrieval (amr/stages/retrieve.py) with a fake module table: the query texts, one search for all the query
vectors, hits merged per row by code (the best similarity), the floor, the order. The real table and embeddings
are in tests/test_stages.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from amr.stages import retrieve

pytestmark = pytest.mark.timeout(60)


class DB:
    def __init__(self, hits: list[list[dict]]):
        self.hits, self.calls = hits, []

    def search(self, vectors, k, version):
        self.calls.append((vectors.dtype, vectors.tolist(), k, version))
        return self.hits


def hit(name: str, similarity: float, code: str | None = None) -> dict:
    return {"name": name, "code": code or f"def {name}(): ...", "similarity": similarity, "test": "unused"}


def test_queries_are_the_specs_or_the_code_of_r_d():
    specs = json.dumps(
        [
            {"name": "f", "signature": "def f(x: int) -> int", "description": "Double x."},
            {"name": "g", "signature": "def g()", "description": ""},
        ]
    )
    assert retrieve.queries({"specs": specs, "direct_response": "```python\nx = 1\n```"}, "specs") == [
        "def f(x: int) -> int\nDouble x.",
        "def g()",
    ]
    assert retrieve.queries({"specs": "[]", "direct_response": "```python\nx = 1\n```"}, "direct") == ["x = 1"]
    assert retrieve.queries({"specs": "[]", "direct_response": None}, "direct") == []
    assert retrieve.queries({"specs": "[]", "direct_response": "```python\ndef broken(:\n```"}, "direct") == []


def test_run_merges_the_hits_of_a_row_by_code_best_first():
    rows = [
        {"id": "a", "query_vectors": [[1.0, 0.0], [0.0, 1.0]]},
        {"id": "b", "query_vectors": []},
        {"id": "c", "query_vectors": [[0.5, 0.5]]},
    ]
    db = DB(
        [
            [hit("f", 0.5), hit("g", 0.4)],
            [hit("g", 0.912345), hit("f", 0.3), hit("h", 0.3999)],  # g again, better: kept once, at 0.9123
            [hit("f", 0.7), hit("f2", 0.7, code="def f(): ..."), hit("k", 0.4)],  # f2: the same code, not better
        ]
    )
    out = retrieve.run(rows, db, 5, k=3, min_similarity=0.4)
    assert db.calls == [(np.float32, [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], 3, 5)]
    assert [(r["id"], r["module_version"]) for r in out] == [("a", 5), ("b", 5), ("c", 5)]
    assert [json.loads(r["retrieved"]) for r in out] == [
        [
            {"name": "g", "code": "def g(): ...", "similarity": 0.9123},
            {"name": "f", "code": "def f(): ...", "similarity": 0.5},  # f at 0.3 and h at 0.3999: under the floor
        ],
        [],
        [
            {"name": "f", "code": "def f(): ...", "similarity": 0.7},
            {"name": "k", "code": "def k(): ...", "similarity": 0.4},  # at the floor: kept
        ],
    ]
    assert out[0]["query_vectors"] == [[1.0, 0.0], [0.0, 1.0]]  # the row's columns stay


def test_run_without_a_floor_and_without_queries():
    db = DB([[hit("f", -0.25)]])
    [row] = retrieve.run([{"id": "a", "query_vectors": [[1.0]]}], db, 2)
    assert db.calls == [(np.float32, [[1.0]], 1, 2)]  # k defaults to 1
    assert json.loads(row["retrieved"]) == [{"name": "f", "code": "def f(): ...", "similarity": -0.25}]
    empty = DB([])
    assert retrieve.run([{"id": "a", "query_vectors": []}], empty, 2) == [
        {"id": "a", "query_vectors": [], "retrieved": "[]", "module_version": 2}
    ]
    assert empty.calls == []  # nothing to search: no search
