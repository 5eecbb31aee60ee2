"""The amr-no-md ablation retrieves with the code of R_d (no specs, no decomposition) and gets hits from the
functions the first wave verified; the instructions and the scripted teacher are tests/test_distill.py's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from amr.pipelines import distill
from tests.test_distill import config, scripted  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def embedder():
    from amr.embeddings import Embedder
    from amr.model_store import pull

    return Embedder(str(pull("all-minilm-l6-v2")))


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_amr_no_md_retrieves_with_the_code_of_r_d_and_has_hits(ray_local, scripted, embedder, tmp_path):  # noqa: F811
    cfg = config(tmp_path, scripted, method="amr-no-md")
    cfg.embedding.dtype = "float32"  # the in-process embedder's, whose vectors the queries are checked against
    manifest = distill.run(cfg)
    run = Path(manifest["config"]["run_dir"])
    assert "decompose" not in manifest["stages"] and not (run / "decompose.parquet").exists()
    embedded = {r["id"]: r for r in pq.read_table(run / "embed.parquet").to_pylist()}
    # one query per row: the code block of its R_d (the script's direct answer), written out here
    codes = {
        "t/add": 'def add(a: int, b: int) -> int:\n    """Return the sum of a and b."""\n    return a + b',
        "t/is_even": 'def is_even(n: int) -> bool:\n    """Return True when n is even."""\n    return n % 2 == 0',
        "t/add_three": 'def add_three(a: int, b: int, c: int) -> int:\n    """Return the sum of three integers."""\n'
        "    return add(add(a, b), c)",
        "t/count_evens": 'def count_evens(xs: list[int]) -> int:\n    """Count the even numbers in a list."""\n'
        "    return sum(1 for x in xs if is_even(x))",
    }
    for id, code in codes.items():
        assert np.allclose(np.asarray(embedded[id]["query_vectors"]), embedder.encode([code]), atol=1e-5), id
    # the first wave reads an empty table and grows it with add and is_even; the second retrieves them
    waves = sorted(
        [
            *pq.read_table(run / "waves" / "00000.parquet").to_pylist(),
            *pq.read_table(run / "waves" / "00001.parquet").to_pylist(),
        ],
        key=lambda r: r["index"],
    )
    hits = {r["id"]: [h["name"] for h in json.loads(r["retrieved"])] for r in waves}
    assert hits == {"t/add": [], "t/is_even": [], "t/add_three": ["add"], "t/count_evens": ["is_even"]}
    assert [w["inserted"] for w in manifest["modules"]["waves"]] == [2, 2]
    assert manifest["dataset"]["rows"] == 4 and manifest["dataset"]["response_accuracy"] == 0.75
