"""Database growth (amr/stages/grow.py) on the driver, with fakes for the teacher, the embedder, the module table
and the sandbox: which candidates are novel at the threshold's boundary, which tests count, what is inserted.
The real teacher, table, embeddings and sandbox are in tests/test_stages.py."""

from __future__ import annotations

import numpy as np
import pytest

from amr.config import TeacherConfig
from amr.stages import grow

pytestmark = pytest.mark.timeout(60)


class Teacher:
    """Answers each chat with ``answers[name of the function under test]``: (response, error)."""

    def __init__(self, answers: dict[str, tuple[str | None, str | None]]):
        self.answers, self.requests = answers, []
        self.config = TeacherConfig()

    def complete(self, requests, carry=("id",)):
        self.requests += requests
        out = []
        for i, request in enumerate(requests):
            key = request.get("name") or request.get("instruction")
            response, error = self.answers[key]
            out.append(
                {
                    **{k: request[k] for k in carry},
                    "response": response,
                    "error": error,
                    "num_input_tokens": 10 + i,
                    "num_output_tokens": 20 + i,
                    "faults": "HTTP 500, HTTP 500" if error else "",
                    "finish": None if error else "stop",
                }
            )
        return out


class Embedder:
    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors, self.texts, self.calls = vectors, [], 0

    def encode(self, texts):
        self.texts += texts
        self.calls += 1
        return np.asarray([self.vectors[t] for t in texts], dtype=np.float32)


class DB:
    def __init__(self, nearest: list[float] | None = None, added: int = 7):
        self.nearest, self.added, self.calls, self.inserted = nearest, added, [], None

    def max_similarity(self, vectors, version):
        self.calls.append((np.asarray(vectors).tolist(), version))
        return self.nearest

    def insert(self, modules):
        self.inserted = list(modules)
        return self.added


class Sandbox:
    def __init__(self, records: dict[str, dict[str, str]]):
        self.records, self.checks = records, []

    def run(self, checks):
        self.checks += checks
        return [self.records[c["code"]] for c in checks]


def cand(name: str, instruction_id: str = "a", **extra) -> dict:
    return {
        "instruction_id": instruction_id,
        "name": name,
        "signature": f"def {name}(x)",
        "description": f"The {name} of x.",
        "code": f"def {name}(x):\n    return x\n",
        **extra,
    }


def test_candidates_are_the_functions_of_each_answer():
    rows = [
        {"id": "a", "are_response": "```python\nimport math\n\ndef f(x):\n    return math.sqrt(x)\n```", "r": None},
        {"id": "b", "are_response": None, "r": "```python\ndef g():\n    return 1\n```"},
        {"id": "c", "are_response": "no code", "r": "```python\ndef broken(:\n```"},
    ]
    assert grow.candidates(rows) == [
        {
            "instruction_id": "a",
            "name": "f",
            "signature": "def f(x)",
            "description": "",
            "code": "import math\n\n\ndef f(x):\n    return math.sqrt(x)\n",
        }
    ]
    assert grow.candidates(rows, response="r") == [
        {
            "instruction_id": "b",
            "name": "g",
            "signature": "def g()",
            "description": "",
            "code": "def g():\n    return 1\n",
        }
    ]


def test_novel_at_the_threshold_is_known_and_a_twin_at_it_a_duplicate():
    cands = [cand("a"), cand("b"), cand("c"), cand("d"), cand("e"), cand("f")]
    embedder = Embedder(
        {
            "def a(x)\nThe a of x.": [1.0, 0.0],
            "def b(x)\nThe b of x.": [0.5, 0.5],  # 0.5 to a: at the threshold, a duplicate in the wave
            "def c(x)\nThe c of x.": [0.0, 1.0],  # 0.0 to a, 0.5 to b (not kept): novel
            "def d(x)\nThe d of x.": [1.0, 0.0],
            "def e(x)\nThe e of x.": [0.612345, -0.5],  # 0.612345 to a: a duplicate
            "def f(x)\nThe f of x.": [0.0, -1.0],
        }
    )
    db = DB(nearest=[0.123456, 0.25, 0.49999, 0.512345, 0.2, 0.5])  # d, f: at least the threshold to a module
    kept, rejected = grow.novel(cands, db, embedder, 3, threshold=0.5)
    assert embedder.texts == [
        "def a(x)\nThe a of x.",
        "def b(x)\nThe b of x.",
        "def c(x)\nThe c of x.",
        "def d(x)\nThe d of x.",
        "def e(x)\nThe e of x.",
        "def f(x)\nThe f of x.",
    ]
    assert db.calls == [([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [1.0, 0.0], [0.6123449802398682, -0.5], [0.0, -1.0]], 3)]
    assert [(c["name"], c["similarity"], c["vector"].tolist()) for c in kept] == [
        ("a", 0.1235, [1.0, 0.0]),
        ("c", 0.5, [0.0, 1.0]),
    ]
    assert [(c["name"], c["outcome"], c["similarity"]) for c in rejected] == [
        ("b", "duplicate in wave", 0.5),
        ("d", "known", 0.5123),
        ("e", "duplicate in wave", 0.6123),
        ("f", "known", 0.5),  # at the threshold
    ]
    assert all("vector" not in c for c in rejected) and all("outcome" not in c for c in kept)
    empty = Embedder({})
    assert grow.novel([], DB(), empty, 3, threshold=0.5) == ([], []) and empty.texts == []


def test_verify_runs_only_tests_that_assert_on_their_function():
    kept = [cand(n, vector=[1.0]) for n in ("ok", "bad", "vacuous", "prose", "failed_call")]
    teacher = Teacher(
        {
            "ok": ("```python\nassert ok(1) == 1\n```", None),
            "bad": ("Test:\n```python\nassert bad(1) == 2\n```", None),
            "vacuous": ("```python\nassert True\n```", None),
            "prose": ("I cannot write a test.", None),
            "failed_call": (None, "HTTP 500: overloaded"),
        }
    )
    sandbox = Sandbox(
        {
            "def ok(x):\n    return x\n": {"status": "passed", "reason": ""},
            "def bad(x):\n    return x\n": {"status": "failed", "reason": "AssertionError"},
        }
    )
    out = grow.verify(kept, teacher, sandbox)
    assert [r["name"] for r in teacher.requests] == ["ok", "bad", "vacuous", "prose", "failed_call"]
    assert all(set(r) == {*grow.CANDIDATE_FIELDS, "messages", "sampling"} for r in teacher.requests)  # no vector
    assert all(r["sampling"] == {"max_tokens": 384} for r in teacher.requests)  # teacher.stages.tests' budget
    assert (
        "### Function Under Test: ok\n### Python Function:\n```python\ndef ok(x):\n    return x\n```"
        in (teacher.requests[0]["messages"][-1]["content"])
    )
    assert sandbox.checks == [
        {"code": "def ok(x):\n    return x\n", "test": "assert ok(1) == 1"},
        {"code": "def bad(x):\n    return x\n", "test": "assert bad(1) == 2"},
    ]
    assert [(r["name"], r["outcome"], r["reason"], r["test"]) for r in out] == [
        ("ok", "verified", "", "assert ok(1) == 1"),
        ("bad", "rejected", "failed: AssertionError", "assert bad(1) == 2"),
        ("vacuous", "no test", "no assert calls vacuous", "assert True"),
        ("prose", "no test", "no Python test in the answer", ""),
        ("failed_call", "no test", "HTTP 500: overloaded", ""),
    ]
    assert [(r["test_error"], r["test_faults"], r["test_finish"]) for r in out] == [
        *[(None, "", "stop")] * 4,
        ("HTTP 500: overloaded", "HTTP 500, HTTP 500", None),
    ]
    assert [(r["test_input_tokens"], r["test_output_tokens"]) for r in out] == [
        (10, 20),
        (11, 21),
        (12, 22),
        (13, 23),
        (14, 24),
    ]
    assert all(r["vector"] == [1.0] and r["instruction_id"] == "a" for r in out)  # the candidate's fields stay


def test_verify_keeps_the_whole_asserts_of_a_test_cut_off_at_max_tokens():
    cut = "```python\ndef test_f():\n    assert f(1) == 1\n    assert f(2) =="  # the answer ran out of tokens
    sandbox = Sandbox({"def f(x):\n    return x\n": {"status": "passed", "reason": ""}})
    [out] = grow.verify([cand("f", vector=[1.0])], Teacher({"f": (cut, None)}), sandbox)
    assert sandbox.checks == [{"code": "def f(x):\n    return x\n", "test": "def test_f():\n    assert f(1) == 1"}]
    assert (out["outcome"], out["test"]) == ("verified", "def test_f():\n    assert f(1) == 1")


def test_insert_adds_the_verified_ones_with_their_provenance():
    verified = [
        cand("f", "i1", test="assert f(1) == 1", outcome="verified", vector=[0.5, 0.5]),
        cand("g", "i2", test="assert g(1) == 2", outcome="rejected", vector=[1.0, 0.0]),
        cand("h", "i3", test="", outcome="no test", vector=[0.0, 1.0]),
    ]
    db = DB(added=1)
    assert grow.insert(verified, db, run="r7", stage="growth") == 1
    [row] = db.inserted
    vector = row.pop("vector")
    assert vector.dtype == np.float32 and vector.tolist() == [0.5, 0.5]
    assert row == {
        "name": "f",
        "signature": "def f(x)",
        "description": "The f of x.",
        "code": "def f(x):\n    return x\n",
        "test": "assert f(1) == 1",
        "run": "r7",
        "instruction_id": "i1",
        "stage": "growth",
        "verdict": "passed",
    }


def test_bootstrap_asks_once_per_instruction():
    teacher = Teacher({"Sort a list.": ("```python\ndef s(x):\n    return sorted(x)\n```", None)})
    [row] = grow.bootstrap([{"id": "q", "instruction": "Sort a list."}], teacher)
    assert row == {
        "id": "q",
        "instruction": "Sort a list.",
        "bootstrap_response": "```python\ndef s(x):\n    return sorted(x)\n```",
        "bootstrap_error": None,
        "bootstrap_input_tokens": 10,
        "bootstrap_output_tokens": 20,
        "bootstrap_faults": "",
        "bootstrap_finish": "stop",
    }
    assert "Sort a list." in teacher.requests[0]["messages"][-1]["content"]
    assert teacher.requests[0]["sampling"] == {"max_tokens": 1536}  # teacher.stages.bootstrap
    assert grow.bootstrap([], teacher) == []


def test_novel_reuses_the_vectors_of_texts_embedded_already():
    cands = [cand("a"), cand("b"), cand("a")]  # a twice: embedded once
    embedder = Embedder({"def a(x)\nThe a of x.": [1.0, 0.0]})
    db = DB(nearest=[0.1, 0.2, 0.1])
    kept, rejected = grow.novel(cands, db, embedder, 3, threshold=0.5, embedded={"def b(x)\nThe b of x.": [0.0, 1.0]})
    assert embedder.texts == ["def a(x)\nThe a of x."]  # b's spec text came with the wave's queries
    assert db.calls == [([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], 3)]
    assert [c["name"] for c in kept] == ["a", "b"] and [(c["name"], c["outcome"]) for c in rejected] == [
        ("a", "duplicate in wave")
    ]
    # every text embedded already: no encode call, and the vectors in float32 (the table's) whatever they came as
    unused = Embedder({})
    vectors = grow.embed_texts(["def b(x)\nThe b of x."], unused, {"def b(x)\nThe b of x.": [0.0, 1.0]})
    assert vectors.dtype == np.float32 and vectors.tolist() == [[0.0, 1.0]] and unused.calls == 0


def test_wave_twins_across_blocks_are_the_pairwise_greedy_order():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((40, 3)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    novel = [i % 7 != 3 for i in range(40)]
    kept, expected = [], {}
    for i, vector in enumerate(vectors):  # the definition: each novel vector against the earlier ones kept
        if not novel[i]:
            continue
        cosines = [float(vector @ vectors[k]) for k in kept]
        if cosines and max(cosines) >= 0.8:
            expected[i] = max(cosines)
        else:
            kept.append(i)
    assert 5 < len(expected) < 30  # both outcomes occur
    for block in (1, 7, 40, 1024):
        twins = grow.wave_twins(vectors, novel, 0.8, block)
        assert twins.keys() == expected.keys() and np.allclose([twins[i] for i in expected], list(expected.values()))
