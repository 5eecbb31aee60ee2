"""`amr doctor`: a machine without bwrap and with an empty model store is told so, and what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amr import doctor, model_store

AMR = Path(sys.executable).parent / "amr"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_missing_bwrap_and_models_are_reported_with_their_fix(tmp_path):
    env = {
        **os.environ,
        "PATH": str(AMR.parent),  # the venv's programs only: no bwrap
        "AMR_MODEL_STORE": str(tmp_path / "empty-store"),
        "COLUMNS": "250",  # one table row per line
    }
    done = subprocess.run([str(AMR), "doctor"], env=env, capture_output=True, text=True, timeout=580)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = {line.split("│")[1].strip(): line for line in done.stdout.splitlines() if line.count("│") == 5}
    assert "warning" in lines["bwrap sandbox"] and "'bwrap' not found on PATH" in lines["bwrap sandbox"]
    assert "apt-get install bubblewrap" in lines["bwrap sandbox"]
    for name in model_store.REGISTRY:
        row = lines[f"model {name}"]
        assert "problem" in row and f"not in the model store {tmp_path / 'empty-store'}" in row, row
        assert f"amr models pull {name}" in row
    assert "OK" in lines["vllm"] and "OK" in lines["ray"]
    assert f"missing: {', '.join(f'model {n}' for n in model_store.REGISTRY)}" in done.stdout


@pytest.mark.timeout(120)
def test_a_working_bwrap_and_a_pulled_model_are_ok(tmp_path):
    check = doctor.sandbox()
    assert check.ok and check.found.endswith("a check passed in a sandbox"), check
    name = "all-minilm-l6-v2"  # a model in the store as `amr models pull` leaves it: its marker, current format
    (tmp_path / name).mkdir()
    (tmp_path / name / model_store.MARKER).write_text(json.dumps({"format": model_store.STORE_FORMAT}))
    found = {c.name: c for c in doctor.models(tmp_path)}
    assert found[f"model {name}"].ok and found[f"model {name}"].found == f"in {tmp_path}"
    assert not found["model smollm2-135m-instruct"].ok
    assert not doctor.sandbox("no-such-bwrap").ok and not doctor.sandbox("no-such-bwrap").required
