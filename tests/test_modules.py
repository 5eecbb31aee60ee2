"""The module database: a real LanceDB table and real all-MiniLM-L6-v2 embeddings."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from amr.embeddings import Embedder
from amr.modules import ModuleDB, ModuleDBError, module_key

FUNCTIONS = {
    "is_prime": (
        "def is_prime(n: int) -> bool",
        "Return True when n is a prime number.",
        "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))",
    ),
    "reverse_words": (
        "def reverse_words(s: str) -> str",
        "Reverse the order of the words in a sentence.",
        "def reverse_words(s):\n    return ' '.join(s.split()[::-1])",
    ),
    "gcd": (
        "def gcd(a: int, b: int) -> int",
        "Greatest common divisor of two integers.",
        "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a",
    ),
}


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    from amr.model_store import pull

    return Embedder(str(pull("all-minilm-l6-v2")))


def modules(embedder: Embedder, names=FUNCTIONS, run="r1") -> list[dict]:
    specs = [f"{FUNCTIONS[n][0]}: {FUNCTIONS[n][1]}" for n in names]
    return [
        {
            "name": n,
            "signature": FUNCTIONS[n][0],
            "description": FUNCTIONS[n][1],
            "code": FUNCTIONS[n][2],
            "test": f"def test_{n}():\n    pass",
            "run": run,
            "instruction_id": f"mbpp/{i}",
            "stage": "seed",
            "verdict": "passed",
            "vector": v,
        }
        for i, (n, v) in enumerate(zip(names, embedder.encode(specs)))
    ]


def test_embeddings_are_unit_vectors_that_rank_by_meaning(embedder):
    vectors = embedder.encode(
        ["check whether a number is prime", "is n a prime number?", "sort a list of dictionaries by a key"]
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > 0.6 > 0.2 > vectors[0] @ vectors[2]


def test_insert_search_and_pinned_versions(tmp_path, embedder):
    db = ModuleDB(str(tmp_path / "db"), embedder.dim)
    empty = db.version
    assert db.search(embedder.encode(["anything"])) == [[]]
    assert db.insert(modules(embedder, ["is_prime", "gcd"])) == 2
    first = db.version
    assert db.insert(modules(embedder, ["reverse_words"])) == 1
    [[hit]] = db.search(embedder.encode(["test if an integer is prime"]))
    assert hit["name"] == "is_prime" and hit["similarity"] > 0.6 and hit["run"] == "r1"
    # a read pinned to the version before reverse_words does not see it
    query = embedder.encode(["reverse the words of a string"])
    assert db.search(query, version=first)[0][0]["name"] != "reverse_words"
    assert db.search(query)[0][0]["name"] == "reverse_words"
    assert db.search(query, version=empty) == [[]]
    # many queries in one call: each gets its own hits, best first
    many = db.search(embedder.encode(["reverse the words of a string", "greatest common divisor", "prime test"]), k=2)
    assert [hits[0]["name"] for hits in many] == ["reverse_words", "gcd", "is_prime"]
    assert all(len(h) == 2 and h[0]["similarity"] >= h[1]["similarity"] for h in many)
    assert db.count() == 3 and db.stats()["by_stage"] == {"seed": 3}


def test_the_modules_added_between_two_versions(tmp_path, embedder):
    """What a wave's second novelty check reads: only the rows the later version added, after a compaction too."""
    db = ModuleDB(str(tmp_path / "db"), embedder.dim)
    db.insert(modules(embedder, ["is_prime"]))
    first = db.version
    db.insert(modules(embedder, ["gcd"]))
    db.insert(modules(embedder, ["reverse_words"]))
    db.upkeep(keep_from=None, force=True)  # compaction keeps the rows' order
    gcd, words, prime = modules(embedder, ["gcd", "reverse_words", "is_prime"])
    queries = np.stack([gcd["vector"], words["vector"], prime["vector"]])
    added = db.max_similarity_added(queries, first, db.version)
    assert added[:2] == pytest.approx([1.0, 1.0], abs=1e-5) and added[2] < 0.5
    assert db.max_similarity_added(queries, db.version, db.version) == [-1.0, -1.0, -1.0]


def test_merge_insert_never_duplicates(tmp_path, embedder):
    db = ModuleDB(str(tmp_path / "db"), embedder.dim)
    rows = modules(embedder)
    reformatted = dict(rows[0], code=rows[0]["code"].replace("return", "return  ") + "  # same function")
    assert module_key(reformatted["code"]) == module_key(rows[0]["code"])
    assert db.insert(rows + [reformatted]) == 3
    assert db.insert(rows) == 0  # a retried wave
    assert db.count() == 3


def test_wrong_embedding_size_and_missing_fields_are_errors(tmp_path, embedder):
    db = ModuleDB(str(tmp_path / "db"), embedder.dim)
    with pytest.raises(ModuleDBError, match="384.*768-d vectors"):
        ModuleDB(str(tmp_path / "db"), 768)
    with pytest.raises(ModuleDBError, match="missing test"):
        db.insert([dict(modules(embedder, ["gcd"])[0], test=None)])


@pytest.mark.timeout(120)
def test_readers_see_commits_of_the_single_writer(tmp_path, embedder):
    """A reader opened before the writer's first commit sees each commit while the writer is still writing: the
    writer waits, before each insert after its first, until the reader has read the count it committed last."""
    rows = modules(embedder)
    reader = ModuleDB(str(tmp_path / "db"), embedder.dim)  # opened once, before any commit
    db = ModuleDB(str(tmp_path / "db"), embedder.dim)
    observed = [threading.Event() for _ in rows]  # observed[i]: the reader read i rows
    commits = iter(range(len(rows)))
    timed_out: list[int] = []

    def before_write() -> None:  # the writer's hook, called before each insert
        i = next(commits)
        if not observed[i].wait(30):
            timed_out.append(i)

    db.before_write = before_write
    writer = threading.Thread(target=lambda: [db.insert([row]) for row in rows])
    writer.start()
    seen: list[int] = []
    while writer.is_alive():
        count = reader.count()
        if count < len(rows):
            observed[count].set()
        if not seen or seen[-1] != count:
            seen.append(count)
    writer.join()
    assert timed_out == [], f"the reader never read the counts {timed_out} while the writer waited for it"
    assert seen[:3] == [0, 1, 2]  # every state but the last was read while the writer was alive
    assert reader.count() == 3 and reader.search(embedder.encode(["greatest common divisor"]))[0][0]["name"] == "gcd"


def test_count_by_provenance(tmp_path, embedder):
    db = ModuleDB(str(tmp_path / "db"), embedder.dim)
    db.insert(modules(embedder, ["is_prime", "gcd"], run="r'1") + modules(embedder, ["reverse_words"], run="r2"))
    assert db.count(run="r'1") == 2 and db.count(run="r2", instruction_id=["mbpp/0", "x"]) == 1
    assert db.count(instruction_id=["nope"]) == 0 and db.count() == 3


def test_modules_commands(tmp_path, embedder, monkeypatch):
    import json

    from typer.testing import CliRunner

    from jobs.cli import app

    uri = str(tmp_path / "db")
    ModuleDB(uri, embedder.dim).insert(modules(embedder))
    runner = CliRunner()
    stats = runner.invoke(app, ["modules", "stats", "--uri", uri])
    assert stats.exit_code == 0 and json.loads(stats.stdout)["rows"] == 3
    dtypes = []  # what each search's query is embedded in
    encode = Embedder.encode
    monkeypatch.setattr(Embedder, "encode", lambda self, texts: dtypes.append(self.dtype) or encode(self, texts))
    search = ["modules", "search", "greatest common divisor", "--uri", uri, "--k", "1", "--model", embedder.path]
    for dtype in ("float32", "bfloat16"):
        found = runner.invoke(app, [*search, "--set", f"embedding.dtype={dtype}"])
        assert found.exit_code == 0 and "gcd" in found.stdout and "is_prime" not in found.stdout
    assert dtypes == ["float32", "bfloat16"]
    out = tmp_path / "modules.jsonl"
    assert runner.invoke(app, ["modules", "export", str(out), "--uri", uri]).exit_code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["name"] for r in rows) == ["gcd", "is_prime", "reverse_words"] and len(rows[0]["vector"]) == 384
    missing = runner.invoke(app, ["modules", "stats", "--uri", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no module table" in missing.output


def test_a_query_is_embedded_as_the_jobs_actors_embed():
    from amr.config import EmbeddingConfig
    from amr.hardware import cpu_dtype

    on_cpu = Embedder.configured(EmbeddingConfig(batch_size=8), None)
    assert (on_cpu.device, on_cpu.dtype, on_cpu.batch_size) == ("cpu", cpu_dtype(), 8)
    # the actors ran on GPUs in float32 ('auto'): a query embedded on a CPU is float32 too
    assert Embedder.configured(EmbeddingConfig(num_gpus=0.25), None, device="cpu").dtype == "float32"
    assert Embedder.configured(EmbeddingConfig(dtype="bfloat16", num_gpus=0.25), None, "cpu").dtype == "bfloat16"
