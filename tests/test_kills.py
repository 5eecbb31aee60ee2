"""A distill job killed (SIGKILL of the job and the Ray it started) while a stage is in flight resumes to the
uninterrupted run's result: during modular decomposition on a local disk, and during the second wave's growth
tests on an S3 run directory (tests/test_distill.py kills one between waves). The scripted teacher holds the
stage's first request until the job is dead, so the kill lands inside that stage every time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from amr.pipelines import distill
from amr.prompts import decompose, testgen
from amr.storage import RunDir
from tests.support.scripted_teacher import ScriptedTeacher
from tests.test_distill import config, script, scripted, uninterrupted  # noqa: F401  (fixtures)

HOLD = {  # stage: (what the held request is, what must be done and not done when the job is killed)
    "decompose": (
        lambda m: m[0]["content"] == decompose.SYSTEM,
        ["direct.parquet/_SUCCESS"],
        ["decompose.parquet/_SUCCESS", "embed.parquet/_SUCCESS", "waves/00000.json"],
    ),
    "grow": (  # the growth tests of the second wave: add_three and count_evens are its new functions
        lambda m: m[0]["content"] == testgen.SYSTEM and "add_three" in m[1]["content"],
        ["embed.parquet/_SUCCESS", "waves/00000.json"],
        ["waves/00001.parquet", "manifest.json"],  # waves/00001.json is written when the wave pins its version
    ),
}


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(("stage", "storage"), [("decompose", "disk"), ("grow", "s3")])
def test_a_job_killed_inside_a_stage_resumes_to_the_uninterrupted_result(
    ray_local,
    s3_server,
    uninterrupted,  # noqa: F811
    tmp_path,
    stage,
    storage,
):
    matches, done, not_done = HOLD[stage]
    held, release = threading.Event(), threading.Event()

    def holding(messages):
        if matches(messages) and not release.is_set():
            held.set()
            release.wait(300)  # the job is killed meanwhile
        return script(messages)

    with ScriptedTeacher(holding) as teacher:
        killed = config(tmp_path / "killed", teacher)
        if storage == "s3":
            killed.run_dir = f"s3://{s3_server['bucket']}/killed/{tmp_path.name}"
        path = tmp_path / "killed.yaml"
        path.write_text(yaml.safe_dump(killed.model_dump(mode="json")))
        job = subprocess.Popen(
            [sys.executable, "-m", "jobs.distill", "--config", str(path)],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "RAY_ADDRESS": ""},
        )
        try:
            assert held.wait(300), f"the job never reached {stage}"
            assert job.poll() is None
        finally:
            os.killpg(job.pid, signal.SIGKILL)  # the job and the Ray it started, mid-stage
            job.wait()
            release.set()
        run = RunDir(killed.run_dir)
        assert [run.exists(name) for name in done] == [True] * len(done)
        assert [run.exists(name) for name in not_done] == [False] * len(not_done)
        resumed = distill.run(killed)

    whole = uninterrupted[1]
    expected = pq.read_table(Path(whole["config"]["run_dir"]) / "dataset.parquet").to_pylist()
    assert run.read_table("dataset.parquet").to_pylist() == expected
    assert [r["id"] for r in expected] == ["t/add", "t/is_even", "t/add_three", "t/count_evens"]
    assert resumed["modules"]["rows"] == whole["modules"]["rows"] == 4
    assert [w["inserted"] for w in resumed["modules"]["waves"]] == [2, 2]
    assert resumed["dataset"]["response_accuracy"] == 0.75
