"""The module table's vector index and upkeep on real LanceDB tables (small vectors, small thresholds): the index
exact, then IVF from min_rows and retrained as the table doubles, searches at pinned versions while the writer
inserts, the index rebuilt from the table by another process's handle, the count's B-tree index read, old versions
removed and pinned ones kept."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from amr import ann
from amr.ann import Upkeep
from amr.filters import NearDuplicates
from amr.modules import ModuleDB

DIM = 16


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    """Unit vectors in clusters, like embeddings of related specs."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, DIM))
    x = centres[rng.integers(0, 40, 3000)] + 0.5 * rng.standard_normal((3000, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(autouse=True)
def four_codes(monkeypatch):
    """A 16-d vector in four 4-bit codes (a 1024-d one has 64): one code for all 16 dimensions ranks too coarsely to
    hold the nearest rows among its candidates."""
    monkeypatch.setattr(ann, "PQ_DIMS", 4)


@pytest.fixture
def small_partitions(monkeypatch):
    """Partitions of 50 rows, 4 of them visited: the IVF index is approximate on a table of a few thousand rows."""
    monkeypatch.setattr(ann, "PARTITION_ROWS", 50)
    monkeypatch.setattr(ann, "NPROBES", 4)


def _modules(vectors: np.ndarray, first: int, last: int) -> list[dict]:
    return [
        {
            "name": f"f{i}",
            "signature": f"def f{i}()",
            "description": f"function {i}",
            "code": f"def f{i}():\n    return {i}",
            "test": f"assert f{i}() == {i}",
            "run": "r1",
            "instruction_id": f"i{i}",
            "stage": "growth",
            "verdict": "passed",
            "vector": vectors[i],
        }
        for i in range(first, last)
    ]


def _nearest_names(db: ModuleDB, queries: np.ndarray, version: int | None = None) -> list[str]:
    return [hits[0]["name"] for hits in db.search(queries, 1, version)]


def _exact(vectors: np.ndarray, queries: np.ndarray, rows: int) -> list[str]:
    return [f"f{i}" for i in np.argmax(queries @ vectors[:rows].T, axis=1)]


@pytest.mark.timeout(120)
def test_the_index_is_exact_then_trained_as_the_table_doubles(tmp_path, vectors, small_partitions):
    db = ModuleDB(str(tmp_path / "db"), DIM, upkeep=Upkeep(min_rows=600, every=2, scalar=("instruction_id",)))
    trained, upkept = [], []
    for wave in range(20):
        db.insert(_modules(vectors, wave * 100, (wave + 1) * 100))
        trained.append(db.vectors.trained)
        upkept.append(db.upkeep(keep_from=db.version))
    assert trained == [0] * 5 + [600] * 6 + [1200] * 9  # from min_rows, then each time the table doubled
    assert db.vectors.rows == 2000 and db.vectors.partitions == 24
    assert upkept[0] is None and upkept[1] is not None  # every 2 commits
    assert [wave for wave, done in enumerate(upkept) if done and "indexed" in done] == [5]
    # the nearest module of a slightly moved copy of a row is that row, as brute force finds it, at exact cosines
    rng = np.random.default_rng(1)
    queries = vectors[:2000:10] + 0.01 * rng.standard_normal((200, DIM)).astype(np.float32)
    hits = db.search(queries, 2)
    assert np.mean(np.array([h[0]["name"] for h in hits]) == _exact(vectors, queries, 2000)) >= 0.95
    # held-out queries, whose nearest rows lie across partitions: NPROBES of them visited (one alone finds 0.966)
    held_out = vectors[2500:3000]
    assert np.mean(np.array(_nearest_names(db, held_out)) == _exact(vectors, held_out, 2000)) >= 0.99
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    for query, (best, second) in zip(unit[:20], hits):
        assert best["similarity"] == pytest.approx(float(query @ vectors[int(best["name"][1:])]), abs=1e-5)
        assert best["similarity"] >= second["similarity"] and best["name"] != second["name"]
    # a wave's count by instruction ids reads the B-tree index, not the column
    plan = db.table.search().where("instruction_id IN ('i5', 'i1999')").explain_plan(True)
    assert "ScalarIndexQuery" in plan and "instruction_id_idx(BTree)" in plan
    assert db.count(run="r1", stage="growth", instruction_id=["i5", "i1999", "nope"]) == 2


@pytest.mark.timeout(120)
@pytest.mark.parametrize("min_rows", [10_000, 300], ids=["exact", "ivf"])
def test_a_pinned_version_is_searched_while_the_writer_inserts(tmp_path, vectors, min_rows):
    db = ModuleDB(str(tmp_path / "db"), DIM, upkeep=Upkeep(min_rows=min_rows, every=1))
    db.insert(_modules(vectors, 0, 400))
    pinned = db.version
    db.pin("wave-00001.read", pinned)
    queries = vectors[2000:2200]
    before = _nearest_names(db, queries, pinned)
    assert np.mean(np.array(before) == _exact(vectors, queries, 400)) >= 0.95
    failures: list[BaseException] = []

    def read() -> None:  # an evolve thread's retrieval at its pinned version, again and again
        try:
            for _ in range(10):
                assert _nearest_names(db, queries, pinned) == before
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    for wave in range(4, 10):  # the committer: inserts (retraining the IVF index at 800 rows) and upkeep
        db.insert(_modules(vectors, wave * 100, (wave + 1) * 100))
        db.upkeep(keep_from=db.version)
    for reader in readers:
        reader.join()
    assert not failures, failures[0]
    assert db.vectors.rows == 1000 and db.vectors.trained == (0 if min_rows > 1000 else 800)
    assert db.search(vectors[:1], version=pinned)[0][0]["name"] == "f0"
    assert np.mean(np.array(_nearest_names(db, queries)) == _exact(vectors, queries, 1000)) >= 0.95
    # another handle (a resumed job) builds its index from the table and finds the same rows at both versions
    resumed = ModuleDB(str(tmp_path / "db"), DIM, upkeep=Upkeep(min_rows=min_rows, every=1))
    assert _nearest_names(resumed, queries, pinned) == before
    assert _nearest_names(resumed, queries) == _nearest_names(db, queries)


@pytest.mark.timeout(120)
def test_upkeep_removes_old_versions_but_the_pinned_ones(tmp_path, vectors):
    db = ModuleDB(str(tmp_path / "db"), DIM, upkeep=Upkeep(min_rows=300, every=1, scalar=("instruction_id",)))
    db.insert(_modules(vectors, 0, 100))
    pinned = db.version
    before = _nearest_names(db, vectors[100:400], pinned)
    db.pin("run/1.wave-00001", pinned)  # a name with a character tags refuse: made valid
    unpinned = []
    for wave in range(1, 5):
        db.insert(_modules(vectors, wave * 100, (wave + 1) * 100))
        unpinned.append(db.version)
        db.upkeep(keep_from=db.version)
    versions = {v["version"] for v in db.table.list_versions()}
    assert pinned in versions and not versions & set(unpinned[:-1]) and unpinned[-1] in versions
    assert db.at(pinned).count_rows() == 100 and _nearest_names(db, vectors[100:400], pinned) == before
    db.unpin("run/1.wave-00001")
    db.upkeep(keep_from=db.version, force=True)
    assert pinned not in {v["version"] for v in db.table.list_versions()}
    assert db.count() == 500 and len(db.dataset().get_fragments()) < 5  # compacted, in insertion order:
    assert db.dataset().to_table(columns=["name"])["name"].to_pylist() == [f"f{i}" for i in range(500)]


@pytest.mark.timeout(120)
def test_a_table_that_lost_rows_is_refused(tmp_path, vectors):
    db = ModuleDB(str(tmp_path / "db"), DIM)
    db.insert(_modules(vectors, 0, 100))
    assert db.search(vectors[:1])[0][0]["name"] == "f0"
    db.table.delete("name = 'f0'")
    with pytest.raises(ValueError, match="has 99 rows, fewer than the 100 indexed: the table lost rows"):
        db.search(vectors[:1])


@pytest.mark.timeout(120)
def test_near_duplicates_past_the_index(tmp_path, vectors, small_partitions):
    class Fixed:  # the texts are row numbers: their vectors are chosen
        dim = DIM

        def encode(self, texts):
            return vectors[[int(t) for t in texts]]

    seen = NearDuplicates(Fixed(), 0.999, uri=str(tmp_path / "dedup"), upkeep=Upkeep(min_rows=500, every=2))
    for first in range(0, 1000, 100):
        assert seen.keep([str(i) for i in range(first, first + 100)]) == [True] * 100
    assert seen.keep(["5", "1500", "999"]) == [False, True, False]  # each row kept before is found again
    assert seen.index.trained == 1000 and seen.index.rows == 1000  # the kept rows, as the last batch found them
