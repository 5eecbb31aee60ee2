"""AMR-Evol stage logic with a scripted teacher over real HTTP, on a real Ray, a real LanceDB table,
real MiniLM embeddings and the real sandbox: given these MD and ARE answers, these modules are
retrieved, inserted and rejected."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pytest

from amr.config import EmbeddingConfig, SandboxConfig
from amr.embeddings import Embedder, EmbedderActors
from amr.engines import OpenAITeacher
from amr.modules import ModuleDB, spec_text
from amr.parsing import code_blocks
from amr.prompts import decompose, response_evolution, testgen
from amr.sandbox.stage import SandboxActors
from amr.stages import decompose as md_stage
from amr.stages import direct as direct_stage
from amr.stages import embed as embed_stage
from amr.stages import grow, retrieve
from amr.stages import response_evolution as are_stage
from tests.support.scripted_teacher import ScriptedTeacher

IS_PRIME = '''def is_prime(n: int) -> bool:
    """Return True when n is a prime number."""
    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))
'''
MD_ANSWER = '''```python
def is_prime(n: int) -> bool:
    """Return True when n is a prime number."""
    ...

def primes_below(limit: int) -> list[int]:
    """All prime numbers smaller than limit, ascending."""
    ...
```'''
FINAL = f'''```python
import math


{IS_PRIME}

def primes_below(limit: int) -> list[int]:
    """All prime numbers smaller than limit, ascending."""
    return [n for n in range(limit) if is_prime(n)]


def digit_sum(n: int) -> int:
    """Sum of the decimal digits of a non-negative integer."""
    return sum(int(c) for c in str(n)) + 1
```'''
TESTS = {
    "primes_below": "def test_primes_below():\n    assert primes_below(10) == [2, 3, 5, 7]\n    assert primes_below(2) == []",
    "digit_sum": "def test_digit_sum():\n    assert digit_sum(123) == 6",  # the function is wrong: rejected
    "always_true": "def test_always_true():\n    always_true()",  # passes, and checks nothing
}


def script(messages: list[dict[str, str]]) -> str:
    system, user = messages[0]["content"], messages[1]["content"]
    if messages[-1]["content"] == decompose.REMINDER:  # the retry of an answer without specs
        return (
            "```python\ndef digit_sum(n: int) -> int:\n    # Description: Sum of the decimal digits of n.\n    ...\n```"
            if "digits" in user
            else "Still no split."
        )
    if system == decompose.SYSTEM:
        return "Plan:\n" + MD_ANSWER if "primes" in user else "I would not split this."
    if system == response_evolution.SYSTEM:  # the paper's prompt: the answer under its heading
        return f"A more refined solution.\n{response_evolution.HEADING}\n{FINAL}\n\n## New Task\nanother"
    if system == response_evolution.GATED_SYSTEM:
        return "Here is the solution:\n" + FINAL
    if system == testgen.SYSTEM:
        name = re.search(r"### Function Under Test: (\w+)", user).group(1)
        return f"```python\n{TESTS[name]}\n```" if name in TESTS else "No test."
    raise AssertionError(f"unexpected prompt: {system[:60]}")


@pytest.fixture(scope="module")
def scripted():
    with ScriptedTeacher(script) as server:
        yield server


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    from amr.model_store import pull

    return Embedder(str(pull("all-minilm-l6-v2")))


@pytest.fixture
def db(tmp_path, embedder) -> ModuleDB:
    db = ModuleDB(str(tmp_path / "modules"), embedder.dim)
    vector = embedder.encode([spec_text("def is_prime(n: int) -> bool", "Return True when n is a prime number.")])[0]
    db.insert(
        [
            {
                "name": "is_prime",
                "signature": "def is_prime(n: int) -> bool",
                "description": "Return True when n is a prime number.",
                "code": IS_PRIME,
                "test": "assert is_prime(7)",
                "run": "seed",
                "instruction_id": "seed/1",
                "stage": "seed",
                "verdict": "passed",
                "vector": vector,
            }
        ]
    )
    return db


def test_decompose_parses_specs_and_says_why_none(ray_local, scripted):
    rows = [
        {"id": "a", "instruction": "List the primes below n.", "direct_response": "```python\n...\n```"},
        {"id": "b", "instruction": "Print hello.", "direct_response": "print('hello')"},
    ]
    out = {
        r["id"]: r for r in md_stage.run(ray_local.data.from_items(rows), OpenAITeacher(scripted.config())).take_all()
    }
    assert [s["name"] for s in json.loads(out["a"]["specs"])] == ["is_prime", "primes_below"]
    assert out["a"]["md_reason"] is None and out["a"]["md_output_tokens"] > 0
    assert json.loads(out["b"]["specs"]) == [] and out["b"]["md_reason"].startswith("no function")


def test_a_stage_sends_the_batches_of_one_block_from_several_tasks(ray_local):
    """A stage's rows in one block (as a stage file is read back) go to the teacher from teacher.openai.concurrency
    tasks of a batch each, not from one task that sends its batches one after another (one request in flight)."""
    with ScriptedTeacher(lambda messages: "```python\nprint(1)\n```", latency_s=0.5) as teacher:
        rows = pa.table({"id": [f"r{i}" for i in range(16)], "instruction": ["Print 1."] * 16})
        answered = direct_stage.run(
            ray_local.data.from_arrow(rows), OpenAITeacher(teacher.config(concurrency=4, batch_size=2))
        ).take_all()
    assert sorted(r["id"] for r in answered) == sorted(rows["id"].to_pylist())
    assert teacher.most_in_flight >= 2


def test_decompose_retries_once_with_a_reminder_of_the_format(ray_local, scripted):
    rows = [
        {"id": "c", "instruction": "Sum the digits of n.", "direct_response": "```python\nx = 1\n```"},
        {"id": "b", "instruction": "Print hello.", "direct_response": "print('hello')"},
    ]
    teacher = OpenAITeacher(scripted.config())
    first = md_stage.run(ray_local.data.from_items(rows), teacher).take_all()
    assert all(md_stage.needs_retry(r) and not r["md_retried"] for r in first)
    seen = len(scripted.requests)
    again = {r["id"]: r for r in md_stage.retry(ray_local.data.from_items(first), teacher).take_all()}
    assert json.loads(again["c"]["specs"]) == [
        {
            "name": "digit_sum",
            "signature": "def digit_sum(n: int) -> int",
            "description": "Sum of the decimal digits of n.",
        }
    ]
    assert again["c"]["md_retried"] and again["c"]["md_reason"] is None
    assert again["b"]["md_retried"] and again["b"]["md_reason"].startswith("no function")  # left as it is, counted
    request = next(r for r in scripted.requests[seen:] if "digits" in r[1]["content"])
    assert [m["role"] for m in request] == ["system", "user", "assistant", "user"]
    assert request[2]["content"] == "I would not split this."  # the answer it gave the first time


@pytest.mark.timeout(300)
def test_retrieval_and_evolution_show_the_retrieved_function(ray_local, scripted, db, embedder):
    specs = json.dumps(
        [
            {
                "name": "is_prime",
                "signature": "def is_prime(n: int) -> bool",
                "description": "Check whether n is prime.",
            },
            {
                "name": "primes_below",
                "signature": "def primes_below(limit: int) -> list[int]",
                "description": "All prime numbers smaller than limit.",
            },
        ]
    )
    rows = [{"id": "a", "instruction": "List the primes below n.", "direct_response": "x", "specs": specs}]
    with EmbedderActors(EmbeddingConfig(dtype="float32")) as embedders:  # the in-process embedder's dtype
        rows = embed_stage.run(ray_local.data.from_items(rows), embedders, "specs").take_all()
    # one vector per spec, of its signature and description (written out here, not made by the code under test)
    expected = embedder.encode(
        [
            "def is_prime(n: int) -> bool\nCheck whether n is prime.",
            "def primes_below(limit: int) -> list[int]\nAll prime numbers smaller than limit.",
        ]
    )
    assert np.allclose(np.asarray(rows[0]["query_vectors"]), expected, atol=1e-5)
    code = "def f(x):\n    return x + 1"  # amr-no-md: the code of R_d is the one query
    assert retrieve.queries({"direct_response": f"Here:\n```python\n{code}\n```\nDone."}, "direct") == [code]
    assert retrieve.queries({"direct_response": "no code"}, "direct") == []
    [row] = retrieve.run(rows, db, db.version, k=1)
    hits = json.loads(row["retrieved"])
    assert [h["name"] for h in hits] == ["is_prime"] and hits[0]["similarity"] > 0.8  # one hit, not repeated
    assert row["module_version"] == db.version
    assert json.loads(retrieve.run(rows, db, db.version, min_similarity=0.99)[0]["retrieved"]) == []
    seen = len(scripted.requests)
    [final] = are_stage.run([row], OpenAITeacher(scripted.config()))
    prompt = scripted.requests[seen][1]["content"]
    assert (
        "### Relevant Functions:\n```python\ndef is_prime" in prompt
        and "x" not in prompt.split("### Python Question:")[0]
    )
    assert 'def primes_below(limit: int) -> list[int]:\n    """All prime numbers' in prompt
    # the answer under the paper's heading, up to the next heading; as the teacher wrote it
    assert final["are_response"] == final["evolved_response"] == FINAL and final["are_heading"]
    assert (final["are_kept"], final["are_source"]) == (None, "are")
    seen = len(scripted.requests)
    [gated] = are_stage.run([row], OpenAITeacher(scripted.config()), gated=True)
    assert scripted.requests[seen][0]["content"] == response_evolution.GATED_SYSTEM
    assert gated["are_response"] == "Here is the solution:\n" + FINAL and gated["are_heading"] is None


def test_an_answer_without_the_papers_heading_is_taken_whole():
    row = {"are_response": "Here:\n" + FINAL, "are_error": None}
    assert are_stage.evolved(row)["are_response"] == "Here:\n" + FINAL and not are_stage.evolved(row)["are_heading"]
    assert are_stage.evolved({"are_response": None, "are_error": "HTTP 503"})["are_response"] is None


def test_the_gated_method_keeps_r_d_where_a_rewrite_leaves_out_the_function_asked_for():
    specs = [{"name": n, "signature": f"def {n}(n)", "description": "."} for n in ("is_prime", "primes_below")]
    row = {
        "instruction": "Write primes_below(n): the primes below n.",
        "specs": json.dumps(specs),
        "are_response": f"Reuse it:\n```python\n{IS_PRIME}```",  # the retrieved function alone, copied
        "are_error": None,
        "are_input_tokens": 5,
        "are_output_tokens": 7,
        "are_faults": "",
        "direct_response": "R_d",
        "direct_error": None,
    }
    assert are_stage.missing(row) == ["primes_below"]
    assert are_stage.missing({**row, "are_response": FINAL}) == []
    assert are_stage.missing({**row, "instruction": "List the primes below n."}) == ["primes_below"]  # the plan's last
    assert are_stage.missing({**row, "are_response": "no code"}) == ["primes_below"]
    kept = are_stage.kept(row, "incomplete")
    assert (kept["are_response"], kept["evolved_response"], kept["are_kept"], kept["are_source"]) == (
        "R_d",
        row["are_response"],
        "incomplete",
        "direct",
    )
    assert kept["are_output_tokens"] == 7  # the call was made: its tokens count
    retrieved = json.dumps([{"name": "is_prime", "code": IS_PRIME, "similarity": 0.9}])
    assert are_stage.uses_module({**row, "are_response": FINAL, "retrieved": retrieved})  # primes_below calls it
    assert not are_stage.uses_module({**row, "retrieved": retrieved})  # defined, never called
    assert not are_stage.uses_module({**row, "are_response": FINAL, "retrieved": "[]"})
    # a rewrite that calls a retrieved module without its code gets the module's code before its own
    calls_only = "```python\ndef primes_below(limit):\n    return [n for n in range(limit) if is_prime(n)]\n```"
    linked = are_stage.linked({**row, "are_response": calls_only, "retrieved": retrieved})
    namespace: dict = {}
    exec(code_blocks(linked)[0], namespace)
    assert namespace["primes_below"](10) == [2, 3, 5, 7] and linked.startswith("```python\ndef is_prime")
    assert are_stage.linked({**row, "are_response": FINAL, "retrieved": retrieved}) == FINAL  # defined already


def test_growth_inserts_novel_verified_functions_only(ray_local, scripted, db, embedder):
    rows = [
        {"id": "a", "are_response": FINAL},
        {"id": "b", "are_response": FINAL},
        {"id": "c", "are_response": "no code"},
    ]
    cands = grow.candidates(rows)
    assert [(c["instruction_id"], c["name"]) for c in cands] == [
        ("a", "is_prime"),
        ("a", "primes_below"),
        ("a", "digit_sum"),
        ("b", "is_prime"),
        ("b", "primes_below"),
        ("b", "digit_sum"),
    ]
    assert cands[1]["code"].startswith("import math\n\n\ndef is_prime(")  # what primes_below calls comes along
    assert "def primes_below" in cands[1]["code"] and "digit_sum" not in cands[1]["code"]
    before = db.version
    kept, rejected = grow.novel(cands, db, embedder, before, threshold=0.9)
    assert [c["name"] for c in kept] == ["primes_below", "digit_sum"]
    assert [(c["instruction_id"], c["name"], c["outcome"]) for c in rejected] == [
        ("a", "is_prime", "known"),
        ("b", "is_prime", "known"),
        ("b", "primes_below", "duplicate in wave"),
        ("b", "digit_sum", "duplicate in wave"),
    ]
    with SandboxActors(SandboxConfig(require="bwrap", workers=1)) as sandbox:
        vacuous = {
            "instruction_id": "a",
            "name": "always_true",
            "signature": "def always_true() -> bool",
            "description": "True.",
            "code": "def always_true() -> bool:\n    return True\n",
            "vector": kept[0]["vector"],
        }
        verified = grow.verify([*kept, vacuous], OpenAITeacher(scripted.config()), sandbox)
    outcomes = {c["name"]: (c["outcome"], c["reason"]) for c in verified}
    assert outcomes["always_true"] == ("no test", "no assert statement in the test")  # never run, never inserted
    assert outcomes["primes_below"] == ("verified", "")
    assert outcomes["digit_sum"][0] == "rejected" and "assert digit_sum(123) == 6" in outcomes["digit_sum"][1]
    assert grow.insert(verified, db, run="r1", stage="growth") == 1
    assert grow.insert(verified, db, run="r1", stage="growth") == 0  # a retried wave adds nothing
    assert db.count() == 2 and db.version > before
    [[hit]] = db.search(embedder.encode(["primes smaller than a limit"]))
    assert (hit["name"], hit["stage"], hit["instruction_id"], hit["run"]) == ("primes_below", "growth", "a", "r1")
    assert "def test_primes_below" in hit["test"]
