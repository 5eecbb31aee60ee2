"""A distill job killed (SIGKILL of the job and the Ray it started) while a stage is in flight resumes to the
uninterrupted run's result: during modular decomposition on a local disk, and during the second wave's growth
tests on an S3 run directory (tests/test_distill.py kills one between waves). The scripted teacher holds the
stage's first request until the job is dead, so the kill lands inside that stage every time. The two jobs run at
once."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from amr.config import DistillConfig
from amr.pipelines import distill
from amr.prompts import decompose, testgen
from amr.storage import RunDir
from tests.support.scripted_teacher import ScriptedTeacher
from tests.test_distill import config, script, scripted, start_job, uninterrupted  # noqa: F401  (fixtures)

# the in-process runs' (the killed jobs start their own)
pytestmark = pytest.mark.usefixtures("shared_embedders", "shared_sandbox")

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


CASES = {"decompose": "disk", "grow": "s3"}  # stage: where the run directory is
Job = tuple[DistillConfig, subprocess.Popen, threading.Event]


@pytest.fixture(scope="module")
def started(ray_local, s3_server, tmp_path_factory) -> Iterator[tuple[dict[str, Job], Callable[[], None]]]:
    """A job per stage of ``CASES``, both started at once (each mostly waits for its own Ray to start), each with a
    scripted teacher that holds the stage's first request until the job is dead: by stage, the job's config, process
    and the event its request is held on; and what kills both jobs (then lets the held requests go). The teachers stay
    open for the module: the tests resume the jobs with them."""
    with ExitStack() as teachers, ExitStack() as stack:
        jobs = {}
        for stage, where in CASES.items():
            matches, release, held = HOLD[stage][0], threading.Event(), threading.Event()
            stack.callback(release.set)  # after the kill: the jobs are killed first (callbacks run last in, first out)

            def holding(messages, matches=matches, held=held, release=release):
                if matches(messages) and not release.is_set():
                    held.set()
                    release.wait(300)  # the job is killed meanwhile
                return script(messages)

            teacher = teachers.enter_context(ScriptedTeacher(holding))
            tmp_path = tmp_path_factory.mktemp(stage)
            cfg = config(tmp_path / "killed", teacher)
            if where == "s3":
                cfg.run_dir = f"s3://{s3_server['bucket']}/killed/{tmp_path.name}"
            job = start_job(cfg, tmp_path / "killed.yaml")
            stack.callback(job.wait)
            stack.callback(os.killpg, job.pid, signal.SIGKILL)  # the job and the Ray it started, mid-stage
            jobs[stage] = cfg, job, held
        yield jobs, stack.close


@pytest.fixture(scope="module")
def killed(started, uninterrupted) -> dict[str, DistillConfig]:  # noqa: F811
    """``started``'s jobs killed once both teachers hold their stage's request (the uninterrupted run goes first,
    while the jobs start): by stage, the killed job's config."""
    jobs, kill = started
    for stage, (_, job, held) in jobs.items():
        assert held.wait(300), f"the job never reached {stage}"
        assert job.poll() is None
    kill()
    return {stage: cfg for stage, (cfg, _, _) in jobs.items()}


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("stage", list(CASES))
def test_a_job_killed_inside_a_stage_resumes_to_the_uninterrupted_result(
    killed,
    uninterrupted,  # noqa: F811
    stage,
):
    _, done, not_done = HOLD[stage]
    cfg = killed[stage]
    run = RunDir(cfg.run_dir)
    assert [run.exists(name) for name in done] == [True] * len(done)
    assert [run.exists(name) for name in not_done] == [False] * len(not_done)
    resumed = distill.run(cfg)

    whole = uninterrupted[1]
    expected = pq.read_table(Path(whole["config"]["run_dir"]) / "dataset.parquet").to_pylist()
    assert run.read_table("dataset.parquet").to_pylist() == expected
    assert [r["id"] for r in expected] == ["t/add", "t/is_even", "t/add_three", "t/count_evens"]
    assert resumed["modules"]["rows"] == whole["modules"]["rows"] == 4
    assert [w["inserted"] for w in resumed["modules"]["waves"]] == [2, 2]
    assert resumed["dataset"]["response_accuracy"] == 0.75
