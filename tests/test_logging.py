"""Log lines: a job's terminal shows its own lines and other programs' warnings; Ray's, Ray Data's and the Ray
workers' INFO lines go to <run_dir>/logs/ (job.log, ray/<session>), and -v brings them back to the terminal."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import yaml
from typer.testing import CliRunner

from amr import logs
from amr.config import DistillConfig, RayConfig
from amr.runtime import init_ray
from jobs.cli import app
from jobs.common import setup_logging
from tests.support.scripted_teacher import ScriptedTeacher

pytestmark = pytest.mark.timeout(300)

DATASET_INFO = "Starting execution of Dataset"  # Ray Data's INFO line (driver side) for each dataset it runs
RAY_INFO = "Started a local Ray instance"  # Ray's
INSTRUCTIONS = [
    {"id": f"t/{n}", "instruction": f"Write f{n}() returning {n}.", "tests": [f"assert f{n}() == {n}"]}
    for n in range(2)
]


def answer(messages: list[dict[str, str]]) -> str:
    n = messages[-1]["content"].split("Write f")[1].split("(")[0]
    return f"```python\ndef f{n}():\n    return {n}\n```"


@pytest.fixture(scope="module")
def scripted():
    with ScriptedTeacher(answer) as server:
        yield server


@pytest.fixture
def terminal(monkeypatch):
    """The command line's logging set-up, undone afterwards: ``terminal(verbose)``."""
    monkeypatch.delenv(logs.ENV, raising=False)
    monkeypatch.setattr(logs, "_configured", None)
    monkeypatch.setattr(logs, "_terminal", None)
    project = logging.getLogger("amr")
    monkeypatch.setattr(project, "handlers", list(project.handlers))
    monkeypatch.setattr(project, "propagate", project.propagate)
    monkeypatch.setattr(project, "level", project.level)
    return lambda verbose: setup_logging(verbose=verbose, log_level=None)


def _amr(args: list[str], tmp_path: Path, scripted: ScriptedTeacher) -> tuple[subprocess.Popen, Path]:
    """``amr ARGS distill`` (a direct distillation of two instructions, its own local Ray) started in a subprocess:
    the process (stdout and stderr in one pipe, the terminal's text) and the run directory."""
    source = tmp_path / "instructions.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in INSTRUCTIONS))
    config = DistillConfig(run_dir=str(tmp_path / "run"), method="direct", teacher=scripted.config())
    config.input.source = str(source)
    config.sandbox.require, config.sandbox.workers = "bwrap", 1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if k not in (logs.ENV, "RAY_ADDRESS")}
    command = [str(Path(sys.executable).parent / "amr"), *args, "distill", "--config", str(tmp_path / "config.yaml")]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return process, Path(config.run_dir)


@pytest.fixture(scope="module")
def shown(scripted, tmp_path_factory) -> dict[bool, tuple[str, Path]]:
    """``amr distill`` and ``amr -v distill``, run at once (each mostly waits for its own Ray to start): by verbose,
    the terminal's text and the run directory."""
    started = {
        verbose: _amr(["-v"] if verbose else [], tmp_path_factory.mktemp("amr"), scripted) for verbose in (False, True)
    }
    out = {}
    try:
        for verbose, (process, run) in started.items():
            text = process.communicate(timeout=240)[0]
            assert process.returncode == 0, text
            out[verbose] = text, run
    finally:
        for process, _ in started.values():
            process.kill()
    return out


def test_other_programs_info_lines_go_to_the_run_logs_not_the_terminal(shown):
    text, run = shown[False]
    job_log = (run / "logs" / "job.log").read_text()
    for line in (DATASET_INFO, RAY_INFO):
        assert line in job_log and line not in text
    assert "logs:" in text and "dataset: 2 rows" in text  # the job's own lines
    sessions = list((run / "logs" / "ray").iterdir())
    assert len(sessions) == 1 and (sessions[0] / "raylet.out").exists()  # Ray's own log files, linked


def test_verbose_brings_them_back_to_the_terminal(shown):
    text, run = shown[True]
    assert DATASET_INFO in text and RAY_INFO in text
    assert DATASET_INFO in (run / "logs" / "job.log").read_text()


@ray.remote(num_cpus=0)
def _say(tag: str) -> None:
    print(f"INFO {tag}: a worker's info line", flush=True)
    print(f"WARNING {tag}: a worker's warning", flush=True)


@pytest.mark.parametrize("verbose", [False, True])
def test_workers_info_lines_go_to_job_log_and_their_warnings_to_the_terminal(
    ray_local, terminal, tmp_path, capfd, verbose
):
    """On the session's Ray, started before the job: Ray forwards the workers' lines to the driver."""
    terminal(verbose)
    init_ray(RayConfig())  # joins the running Ray, as a job does
    tag = f"verbose={verbose}"
    with logs.job_logs(tmp_path):
        ray.get(_say.remote(tag))
        job_log = tmp_path / "logs" / "job.log"
        deadline = time.monotonic() + 30
        while f"{tag}: a worker's warning" not in job_log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    shown = "".join(capfd.readouterr())
    assert f"{tag}: a worker's info line" in job_log.read_text() and f"{tag}: a worker's warning" in shown
    assert (f"{tag}: a worker's info line" in shown) == verbose


def test_raylets_warnings_sent_as_cluster_errors_follow_the_same_rules(ray_local, terminal, tmp_path, capfd):
    """Ray prints what the cluster reports to the driver (raylet's warnings and errors) with ``print_to_stdstream``
    from its error listener, not through the workers' printer."""
    from ray._private import worker

    terminal(False)
    init_ray(RayConfig())
    expected = "WARNING: 8 PYTHON worker processes have been started on node: 9c, which is 4x the maximum"
    died = "A worker died or was killed while executing a task by an unexpected system error."
    with logs.job_logs(tmp_path):
        for line in (expected, died):
            worker.print_to_stdstream({"lines": [line], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    shown = "".join(capfd.readouterr())
    assert expected not in shown and died in shown
    job_log = (tmp_path / "logs" / "job.log").read_text()
    assert expected in job_log and died in job_log


def test_a_failing_job_keeps_its_traceback_in_job_log(tmp_path):
    with pytest.raises(ZeroDivisionError), logs.job_logs(tmp_path):
        raise ZeroDivisionError("division by zero")
    assert "ZeroDivisionError" in (tmp_path / "logs" / "job.log").read_text()


def test_log_level_options(terminal, monkeypatch):
    runner = CliRunner()
    assert runner.invoke(app, ["models", "list"]).exit_code == 0 and logs._configured == logging.WARNING
    assert runner.invoke(app, ["-v", "models", "list"]).exit_code == 0 and logs._configured == logging.INFO
    assert runner.invoke(app, ["--log-level", "error", "models", "list"]).exit_code == 0
    assert logs._configured == logging.ERROR
    monkeypatch.setenv(logs.ENV, "DEBUG")
    assert runner.invoke(app, ["models", "list"]).exit_code == 0 and logs._configured == logging.DEBUG
    result = runner.invoke(app, ["--log-level", "loud", "models", "list"])
    assert result.exit_code == 2 and "--log-level" in result.output


@pytest.mark.parametrize(
    ("line", "level"),
    [
        ("INFO 2026-12-04 03:25:35,196 amr-teacher_teacher h76nqo4h -- CALL chat OK", logging.INFO),
        ("(EngineCore pid=25230) INFO 12-04 03:25:55 [core.py:133] Initializing a V1 LLM engine", logging.INFO),
        ("(Worker pid=25271) WARNING 12-04 03:26:14 [cpu_worker.py:114] libtcmalloc is not found", logging.WARNING),
        (
            '{"asctime": "2026-12-04 03:25:30,353", "levelname": "INFO", "message": "Triton not installed"}',
            logging.INFO,
        ),
        ("2026-12-04 03:25:02,021\tWARNING authentication_token_setup.py:85 -- Token", logging.WARNING),
        ("W1204 03:26:12.027000 25271 torch/_library/triton.py:53] Triton not available", logging.WARNING),
        ("[W1204 03:26:14.900648262 utils.cpp:68] Warning: NUMA binding", logging.WARNING),
        ("/venv/vllm/triton_utils/dispatcher.py:138: FutureWarning: `reduce_op` is deprecated", logging.WARNING),
        ("Loading safetensors checkpoint shards: 100% Completed | 1/1 [00:00<00:00,  1.77it/s]", logging.INFO),
        ("Traceback (most recent call last):", logging.ERROR),
        ("ray.exceptions.RayTaskError: boom", logging.ERROR),
        ('  File "x.py", line 1, in f', None),
    ],
)
def test_a_worker_line_states_its_level(line, level):
    assert logs.line_level(line) == level


def test_worker_lines_without_a_level_follow_their_process():
    shown = []
    printer = logs._Printer(shown.append)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logs, "_terminal", logging.WARNING)
        printer({"pid": 1, "lines": ["INFO starting", "  more of it"]})
        printer({"pid": 2, "lines": ["a print", "Traceback (most recent call last):", '  File "x.py"', "KeyError: 1"]})
        printer({"pid": "raylet", "lines": ["A worker died or was killed while executing a task"]})
    assert [line for data in shown for line in data["lines"]] == [
        "a print",
        "Traceback (most recent call last):",
        '  File "x.py"',
        "KeyError: 1",
        "A worker died or was killed while executing a task",
    ]


@pytest.mark.timeout(30)
def test_ray_trains_prints_and_the_warnings_every_cpu_job_meets_stay_in_the_log_file():
    shown = []
    printer = logs._Printer(shown.append)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logs, "_terminal", logging.WARNING)
        printer({"pid": 3, "actor_name": "RayTrainWorker", "lines": ["{'loss': '0.2731', 'epoch': '1'}"]})
        split = ["Starting execution of Dataset train_0. Full logs are in /tmp/ray/logs", "✔️  Dataset train_0 done"]
        printer({"pid": 8, "actor_name": "SplitCoordinator", "lines": split})
        deprecated = ["options.py:436: RayDeprecationWarning: `ExecutionOptions.exclude_resources` is deprecated"]
        printer({"pid": 9, "actor_name": "DatasetManager", "lines": [*deprecated, "  self.exclude_resources = x"]})
        printer(
            {
                "pid": 4,
                "actor_name": "PlacementGroupCleaner",
                "lines": ["Failed to query Ray Train Controller actor state."],
            }
        )
        cleaner_stops = ["Exception in thread PlacementGroupCleanerMonitor:", "Traceback (most recent call last):"]
        cleaner_stops.append("ConnectionError: Found multiple active Ray instances: {'192.0.2.2:1', '192.0.2.2:2'}.")
        printer({"pid": 7, "actor_name": "PlacementGroupCleaner", "lines": cleaner_stops})
        printer(
            {"pid": 5, "lines": ["(EngineCore pid=9) WARNING 12-04 13:43:12 [cpu.py:224] Triton is not installed."]}
        )
        printer({"pid": 5, "lines": ["(EngineCore pid=9) WARNING 12-04 13:43:12 [x.py:1] KV cache too small"]})
        queue = (
            "WARNING 2026-12-04 15:21:22,211 serve 6 -- Failed to get queue length from Replica(id='p') within 0.1s."
        )
        printer({"pid": 6, "actor_name": "_Client", "lines": [queue]})
        workers = (
            "WARNING: 8 PYTHON worker processes have been started on node: 9c with address: 192.0.2.2, which is 4x"
        )
        printer({"pid": "raylet", "lines": [workers]})
        printer(
            {"pid": 3, "actor_name": "RayTrainWorker", "lines": ["Traceback (most recent call last):", "OSError: disk"]}
        )
    assert [line for data in shown for line in data["lines"]] == [
        "(EngineCore pid=9) WARNING 12-04 13:43:12 [x.py:1] KV cache too small",  # other warnings still shown
        "Traceback (most recent call last):",  # and a Ray Train worker's errors
        "OSError: disk",
    ]


def test_a_library_that_sets_up_its_logging_later_is_filtered_too(terminal, tmp_path):
    """vLLM and Ray Serve add their handlers when they are imported, after the command line's set-up: their INFO
    lines stay off the terminal (here, a logger that prints to a stream of its own) and reach job.log."""
    import io

    terminal(False)
    late, out = logging.getLogger("late_library"), io.StringIO()
    late.propagate, late.level = False, logging.INFO
    try:
        with logs.job_logs(tmp_path):
            late.addHandler(logging.StreamHandler(out))  # set up inside the job, as an import would
            late.info("an INFO line of another program")
            late.warning("a warning of another program")
            late.warning("Failed to route request after 50 attempts over 22.98s. Retrying.")  # Serve's back-pressure
            late.warning("Warning: The Ray cluster currently does not have any available CPUs. The Dataset job will")
    finally:
        late.handlers.clear()
    assert out.getvalue() == "a warning of another program\n"
    kept = (tmp_path / "logs" / "job.log").read_text()
    assert "an INFO line of another program" in kept and "Failed to route request after 50 attempts" in kept
    assert "does not have any available CPUs" in kept
