"""`amr submit` and `amr jobs stop|list`: what reaches Ray's Job Submission SDK from the command line (`--pip`,
`--env`, `-- ARGS`, `--set`, `--submission-id`, `--working-dir`). The SDK's client is replaced by a recorder: no
cluster is needed to check the arguments (tests/test_cluster.py submits to a real multi-node cluster)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from amr.preflight import ClusterView, Node
from jobs import submit
from jobs.cli import app

pytestmark = pytest.mark.timeout(120)
runner = CliRunner()
EXCLUDES = [".venv/", ".git/", "runs/", "results/", "__pycache__/", ".pytest_cache/"]


class Recorder:
    """Stands in for ray.job_submission.JobSubmissionClient: records every call, answers as a cluster would."""

    made: list[str | None] = []
    calls: list[tuple[str, tuple, dict]] = []
    jobs: list[SimpleNamespace] = []
    running: set[str] = set()

    def __init__(self, address: str | None = None):
        Recorder.made.append(address)

    def submit_job(self, **kwargs) -> str:
        Recorder.calls.append(("submit_job", (), kwargs))
        return kwargs["submission_id"] or "raysubmit_1"

    def stop_job(self, job_id: str) -> bool:
        Recorder.calls.append(("stop_job", (job_id,), {}))
        return job_id in Recorder.running

    def list_jobs(self) -> list[SimpleNamespace]:
        Recorder.calls.append(("list_jobs", (), {}))
        return Recorder.jobs


@pytest.fixture
def recorder(monkeypatch):
    monkeypatch.setattr(submit, "JobSubmissionClient", Recorder)
    # the preflight's view of the cluster's nodes, as its dashboard would answer
    cpus = ClusterView((Node("node", {"CPU": 16}),))
    monkeypatch.setattr(ClusterView, "from_dashboard", classmethod(lambda cls, address: cpus))
    Recorder.made, Recorder.calls, Recorder.jobs, Recorder.running = [], [], [], set()
    return Recorder


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A working directory with an instructions config in it."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "instr.yaml").write_text("self_instruct:\n  count: 5\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_submit_passes_pip_env_args_and_overrides(recorder, project):
    result = runner.invoke(
        app,
        [
            "submit",
            "instructions",
            "--address",
            "http://head:8265",
            "--config",
            "configs/instr.yaml",
            "--set",
            "self_instruct.count=2",
            "--pip",
            "rich==13.9.4",
            "--pip",
            "./wheels/extra-0.1-py3-none-any.whl",
            "--env",
            "AWS_REGION=eu-west-1",
            "--env",
            "QUERY=a=b",  # the first = splits
            "--env",
            "EMPTY=",
            "--submission-id",
            "seeds-1",
            "--no-follow",
            "--",
            "seed",
            "--output",
            "/mnt/shared/my seeds.jsonl",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "submitted instructions: seeds-1" in result.output
    assert recorder.made == ["http://head:8265"]
    [(name, _, kwargs)] = recorder.calls
    assert name == "submit_job"
    assert kwargs == {
        "entrypoint": "python -m jobs.instructions seed --output '/mnt/shared/my seeds.jsonl' "
        "--config configs/instr.yaml --set self_instruct.count=2",
        "runtime_env": {
            "working_dir": str(project),
            "excludes": EXCLUDES,
            "env_vars": {"AWS_REGION": "eu-west-1", "QUERY": "a=b", "EMPTY": ""},
            "pip": ["rich==13.9.4", "./wheels/extra-0.1-py3-none-any.whl"],
        },
        "submission_id": "seeds-1",
        "metadata": {"amr_job": "instructions", "config": "configs/instr.yaml"},
    }


def test_submit_without_options_sends_no_pip_and_no_args(recorder, project, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://from-env:8265")
    result = runner.invoke(
        app, ["submit", "instructions", "--config", str(project / "configs" / "instr.yaml"), "--no-follow"]
    )
    assert result.exit_code == 0, result.output
    assert "submitted instructions: raysubmit_1" in result.output
    assert recorder.made == [None]  # the SDK reads RAY_ADDRESS itself
    [(_, _, kwargs)] = recorder.calls
    assert kwargs["entrypoint"] == "python -m jobs.instructions --config configs/instr.yaml"
    assert kwargs["runtime_env"] == {"working_dir": str(project), "excludes": EXCLUDES, "env_vars": {}}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--env", "NOVALUE"], "--env 'NOVALUE': expected KEY=VALUE"),
        (["--env", "=value"], "--env '=value': expected KEY=VALUE"),
        (["--set", "self_instruct.nope=1"], "self_instruct.nope"),
    ],
)
def test_bad_options_are_refused_before_anything_is_submitted(recorder, project, extra, message):
    result = runner.invoke(app, ["submit", "instructions", "--config", "configs/instr.yaml", "--no-follow", *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert [c for c in recorder.calls if c[0] == "submit_job"] == []


def test_a_config_outside_the_working_directory_is_refused(recorder, project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "instr.yaml"
    elsewhere.write_text("{}\n")
    result = runner.invoke(app, ["submit", "instructions", "--config", str(elsewhere), "--no-follow"])
    assert result.exit_code == 2 and "not uploaded with the working directory" in result.output
    assert recorder.calls == []


def test_jobs_stop_and_list(recorder):
    recorder.running = {"raysubmit_2"}
    stopped = runner.invoke(app, ["jobs", "stop", "raysubmit_2", "--address", "http://head:8265"])
    assert stopped.exit_code == 0 and stopped.output == "raysubmit_2: stopping\n"
    done = runner.invoke(app, ["jobs", "stop", "raysubmit_1", "--address", "http://head:8265"])
    assert done.exit_code == 0 and done.output == "raysubmit_1: not running\n"
    assert [c[1] for c in recorder.calls] == [("raysubmit_2",), ("raysubmit_1",)]

    def job(submission_id, job_id, status, entrypoint, start_time):
        return SimpleNamespace(
            submission_id=submission_id,
            job_id=job_id,
            status=SimpleNamespace(value=status),
            entrypoint=entrypoint,
            start_time=start_time,
        )

    recorder.jobs = [
        job("later", "02000000", "RUNNING", "python -m jobs.run --config run.yaml", 2000),
        job(None, "01000000", "SUCCEEDED", "python -m jobs.distill --config d.yaml", 1000),
        job("pending", None, "PENDING", "python -m jobs.eval --config e.yaml", None),
    ]
    listed = runner.invoke(app, ["jobs", "list", "--address", "http://head:8265"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines() == [  # newest last; a job not started yet first
        "pending  PENDING    python -m jobs.eval --config e.yaml",
        "01000000  SUCCEEDED  python -m jobs.distill --config d.yaml",
        "later  RUNNING    python -m jobs.run --config run.yaml",
    ]
    assert recorder.made == ["http://head:8265"] * 3
