"""The module table's upkeep on a real LanceDB table (small vectors, small thresholds): its ANN index built, refreshed
and retrained, the count's B-tree index read, old versions removed and pinned ones kept."""

from __future__ import annotations

import numpy as np
import pytest

from amr import ann
from amr.ann import VECTOR_INDEX, Upkeep
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


@pytest.mark.timeout(120)
def test_upkeep_indexes_retrains_and_keeps_searches_exact_enough(tmp_path, vectors):
    db = ModuleDB(str(tmp_path / "db"), DIM, upkeep=Upkeep(min_rows=600, every=2, scalar=("instruction_id",)))
    done = []
    for wave in range(20):
        db.insert(_modules(vectors, wave * 100, (wave + 1) * 100))
        done.append(db.upkeep(keep_from=db.version))
    assert done[0] is None and done[1] is not None  # every 2 commits
    trained = [(wave, d["trained"]) for wave, d in enumerate(done) if d and "trained" in d]
    assert trained == [(5, 600), (11, 1200)]  # at min_rows, then each time the table doubled
    stats = db.table.index_stats(VECTOR_INDEX)
    assert stats.num_indexed_rows == 2000 and stats.num_unindexed_rows == 0 and stats.num_indices == 5  # 4 deltas
    # the nearest module of a slightly moved copy of a row is that row: as brute force finds it
    rng = np.random.default_rng(1)
    queries = vectors[:2000:10] + 0.01 * rng.standard_normal((200, DIM)).astype(np.float32)
    exact = [f"f{i}" for i in np.argmax(queries @ vectors[:2000].T, axis=1)]
    assert np.mean(np.array(_nearest_names(db, queries)) == exact) >= 0.95
    # a wave's count by instruction ids reads the B-tree index, not the column
    plan = db.table.search().where("instruction_id IN ('i5', 'i1999')").explain_plan(True)
    assert "ScalarIndexQuery" in plan and "instruction_id_idx(BTree)" in plan
    assert db.count(run="r1", stage="growth", instruction_id=["i5", "i1999", "nope"]) == 2


@pytest.mark.timeout(120)
def test_upkeep_merges_deltas(tmp_path, vectors, monkeypatch):
    monkeypatch.setattr(ann, "MAX_DELTAS", 2)
    db = ModuleDB(str(tmp_path / "db"), DIM, upkeep=Upkeep(min_rows=1000, every=1))
    db.insert(_modules(vectors, 0, 1000))
    assert db.upkeep(keep_from=db.version)["trained"] == 1000
    indices = []
    for wave in range(4):
        db.insert(_modules(vectors, 1000 + wave * 50, 1050 + wave * 50))
        db.upkeep(keep_from=db.version)
        indices.append(db.table.index_stats(VECTOR_INDEX).num_indices)
    assert indices == [2, 3, 2, 3]  # two deltas merged into one with the third's rows
    assert db.table.index_stats(VECTOR_INDEX).num_indexed_rows == 1200


@pytest.mark.timeout(120)
def test_upkeep_removes_old_versions_but_the_pinned_ones(tmp_path, vectors):
    db = ModuleDB(str(tmp_path / "db"), DIM, upkeep=Upkeep(min_rows=300, every=1))
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
    assert db.count() == 500 and db.table.index_stats(VECTOR_INDEX).num_indexed_rows == 500


@pytest.mark.timeout(120)
def test_near_duplicates_past_the_index(tmp_path, vectors):
    class Fixed:  # the texts are row numbers: their vectors are chosen
        dim = DIM

        def encode(self, texts):
            return vectors[[int(t) for t in texts]]

    seen = NearDuplicates(Fixed(), 0.999, uri=str(tmp_path / "dedup"), upkeep=Upkeep(min_rows=500, every=2))
    for first in range(0, 1000, 100):
        assert seen.keep([str(i) for i in range(first, first + 100)]) == [True] * 100
    assert seen.table.index_stats(VECTOR_INDEX).num_indexed_rows == 1000
    assert seen.keep(["5", "1500", "999"]) == [False, True, False]  # each row kept before is found again
