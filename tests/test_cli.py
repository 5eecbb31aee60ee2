"""The `amr` command line, in process (typer's runner) on the session's local Ray."""

import ast
import json
import re
import subprocess
import sys

import lancedb
import pyarrow.parquet as pq
import pytest
import ray
from typer.testing import CliRunner

from amr.parsing import python_code
from jobs.cli import app
from tests.support.scripted_teacher import ScriptedTeacher

runner = CliRunner()


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["models"],
        ["models", "list"],
        ["models", "pull"],
        ["teacher"],
        ["teacher", "generate"],
        ["teacher", "serve"],
        ["teacher", "stop"],
        ["distill"],
        ["modules", "bootstrap"],
        ["config", "show"],
        ["export"],
        ["doctor"],
    ],
)
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_models_list_names_the_registry():
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0
    for name in ("smollm2", "qwen2.5", "all-minilm"):
        assert name in result.output


def test_bad_config_and_input_exit_2_with_the_place(write, tmp_path):
    bad = write("bad.yaml", "input:\n  limit: many\n")
    result = runner.invoke(app, ["distill", "--config", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:2: input.limit" in result.output
    ray_before = ray.is_initialized()
    result = runner.invoke(
        app, ["distill", "--set", "input.source=/nope.jsonl", "--set", f"run_dir={tmp_path / 'run'}"]
    )
    assert result.exit_code == 2 and "no such input file" in result.output
    assert ray.is_initialized() == ray_before and not (tmp_path / "run").exists()  # refused before Ray or any write
    requests = write("r.jsonl", '{"id": 1, "prompt": "hi"}\n{"id": 1, "prompt": "again"}\n')
    result = runner.invoke(app, ["teacher", "generate", "-i", str(requests), "-o", "x.parquet"])
    assert result.exit_code == 2 and "r.jsonl:2: field 'id': duplicate id" in result.output
    result = runner.invoke(app, ["models", "pull", "no-such-model"])
    assert result.exit_code == 2 and "unknown model 'no-such-model'" in result.output


def test_teacher_serve_needs_a_running_cluster(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    result = runner.invoke(app, ["teacher", "serve", "--name", "t"])
    assert (
        result.exit_code == 2
        and "ray.address: a deployment that outlives this command needs a running Ray" in result.output
    )
    result = runner.invoke(app, ["teacher", "serve", "--set", "teacher.backend=openai", "--set", "ray.address=auto"])
    assert result.exit_code == 2 and "only a vllm teacher is deployed" in result.output


TINY = ["--set", "teacher.sampling.max_tokens=8"]


@pytest.mark.slow
def test_teacher_generate_attached_to_a_running_deployment_writes_parquet(ray_local, tiny_teacher, write, tmp_path):
    requests = write(
        "r.jsonl", '{"id": "a", "prompt": "def f():"}\n{"id": "b", "messages": [{"role": "user", "content": "x"}]}\n'
    )
    out = tmp_path / "out.parquet"
    result = runner.invoke(
        app,
        [
            "teacher",
            "generate",
            "-i",
            str(requests),
            "-o",
            str(out),
            "--set",
            f"teacher.serve.app_name={tiny_teacher.served.app_name}",
            *TINY,
        ],
    )
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out).to_pylist()
    assert sorted(r["id"] for r in rows) == ["a", "b"]
    assert all(r["error"] is None and r["num_output_tokens"] == 8 for r in rows)
    assert "2 rows, 0 errors" in result.output


ANSWER = "```python\ndef solve():\n    return 0\n```"  # 6 tokens as the scripted teacher counts them


@pytest.mark.slow
def test_distill_direct_on_mbpp_writes_the_run_directory(ray_local, tmp_path):
    """The shipped config with an API teacher (scripted, over HTTP); the vLLM teacher is in the test below."""
    run_dir = tmp_path / "run"
    with ScriptedTeacher(lambda messages: ANSWER) as teacher:
        result = runner.invoke(
            app,
            [
                "distill",
                "--config",
                "jobs/configs/local_cpu.yaml",
                "--method",
                "direct",
                "--set",
                "teacher.backend=openai",
                "--set",
                "teacher.model=scripted",
                "--set",
                f"teacher.openai.base_url={teacher.base_url}",
                "--set",
                "teacher.openai.api_key_env=null",
                "--set",
                "input.limit=3",
                "--set",
                f"run_dir={run_dir}",
            ],
        )
    assert result.exit_code == 0, result.output
    table = pq.read_table(run_dir / "direct.parquet")
    assert sorted(table.column("id").to_pylist()) == ["mbpp/601", "mbpp/609", "mbpp/613"]  # mbpp-train: no MBPP+ task
    assert set(table.column_names) >= {"instruction", "tests", "direct_response", "direct_input_tokens", "direct_error"}
    lines = (run_dir / "dataset.jsonl").read_text().splitlines()
    assert (
        len(lines) == 3 and json.loads(lines[0])["tests"] and json.loads(lines[0])["messages"][1]["role"] == "assistant"
    )
    assert json.loads(lines[0])["messages"][1]["content"] == ANSWER
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stage = manifest["stages"]["direct"]
    assert (stage["rows"], stage["errors"], stage["output_tokens"]) == (3, 0, 18)
    assert manifest["versions"]["ray"] == "2.60.0" and manifest["config"]["input"]["limit"] == 3
    assert manifest["teacher_model"] == "scripted" and manifest["modules"] == {}
    assert manifest["dataset"]["response_accuracy"] == 0.0
    assert str(run_dir) in result.output and "direct" in result.output


@pytest.mark.slow
def test_distill_amr_with_smollm2_starts_one_engine_for_every_stage_and_wave(ray_local, smollm2, tmp_path):
    """The default config's method end to end with a real (small) teacher: direct, MD, bootstrapping and three waves of
    evolution and growth tests all reach one Serve deployment, started once (counted from vLLM's own start lines
    in Ray's worker logs) and deleted at the end."""
    from ray import serve

    from tests.conftest import logged_engine_starts

    run_dir = tmp_path / "run"
    engines = logged_engine_starts()
    result = runner.invoke(
        app,
        [
            "distill",
            "--config",
            "jobs/configs/local_cpu.yaml",
            "--set",
            "teacher.model=smollm2-135m-instruct",
            "--set",
            "input.limit=3",
            "--set",
            "wave_size=1",
            "--set",
            "modules.bootstrap_limit=1",
            "--set",
            "teacher.sampling.max_tokens=64",
            "--set",  # MD's specs, seeds and growth tests bounded too (local_cpu.yaml: 384, 512, 384)
            "teacher.stages.decompose.max_tokens=192",
            "--set",
            "teacher.stages.bootstrap.max_tokens=128",
            "--set",
            "teacher.stages.tests.max_tokens=128",
            "--set",
            f"run_dir={run_dir}",
        ],
    )
    assert result.exit_code == 0, result.output
    assert logged_engine_starts() - engines == 1
    manifest = json.loads((run_dir / "manifest.json").read_text())
    teacher = manifest["teacher"]
    assert (teacher["engine_starts"], teacher["replicas"], teacher["attached"]) == (1, 1, False)
    assert teacher["app"] not in serve.status().applications
    assert "1 replicas, 1 engine starts" in result.output
    stages = manifest["stages"]
    retried = ["decompose-retry", "specs"] if stages["decompose"]["retried"] else []  # MD answers without specs
    assert list(stages) == ["direct", "decompose", *retried, "embed", "bootstrap", "waves", "evolve", "grow"]
    assert all(stages[s]["rows"] == 3 and stages[s]["errors"] == 0 for s in ("direct", "decompose", "evolve"))
    assert stages["decompose"]["retried"] == stages.get("decompose-retry", {}).get("rows", 0)
    waves = manifest["modules"]["waves"]
    assert [w["rows"] for w in waves] == [1, 1, 1]
    assert waves[0]["version_read"] == 1 + (stages["bootstrap"]["inserted"] > 0)
    assert [w["version_read"] for w in waves[1:]] == [w["version_after"] for w in waves[:-1]]
    assert manifest["modules"]["rows"] == stages["bootstrap"]["inserted"] + sum(w["inserted"] for w in waves)
    assert manifest["dataset"]["rows"] + manifest["dataset"]["dropped"] == 3
    assert manifest["dataset"]["with_tests"] == manifest["dataset"]["rows"]
    assert "module table:" in result.output and str(run_dir) in result.output
    # Evidence from outside the product's counters: the teacher's answers in the run directory, LanceDB's own
    # version history, and every module and answer run again here in a plain interpreter (not the product's sandbox).
    answers = {r["id"]: r for r in pq.read_table(run_dir / "decompose.parquet").to_pylist()}
    if (run_dir / "specs.parquet").exists():  # the retried decompositions replace theirs
        answers.update({r["id"]: r for r in pq.read_table(run_dir / "specs.parquet").to_pylist()})
    specs = {rid: json.loads(r["specs"]) for rid, r in answers.items()}
    assert len(specs) == 3 and sum(map(bool, specs.values())) >= MIN_ROWS_WITH_SPECS, specs
    for rid, found in specs.items():  # each spec is a function of that row's MD answer, with a Python signature
        for spec in found:
            assert re.search(rf"def\s+{spec['name']}\s*\(", answers[rid]["md_response"]), (rid, spec)
            ast.parse(f"{spec['signature']}: ...")
    table = lancedb.connect(manifest["modules"]["uri"]).open_table(manifest["modules"]["table"])
    modules = table.to_arrow().to_pylist()
    assert len({m["key"] for m in modules}) == len(modules)
    for module in modules:  # verified means: its code passes its teacher-written test (growth's counts: test_distill)
        assert _passes(module["code"], module["test"]), module
    waves = [r for path in sorted((run_dir / "waves").glob("*.parquet")) for r in pq.read_table(path).to_pylist()]
    for pin, row in zip(manifest["modules"]["waves"], waves):  # retrieval read the version its wave pinned
        table.checkout(pin["version_read"])
        held = {m["code"] for m in table.to_arrow().to_pylist()}
        assert {h["code"] for h in json.loads(row["retrieved"])} <= held, row["id"]
    table.checkout_latest()
    dataset = pq.read_table(run_dir / "dataset.parquet").to_pylist()
    assert {r["id"] for r in dataset} <= {r["id"] for r in waves} and len(dataset) == manifest["dataset"]["rows"]
    for row in dataset:  # each example's verdict holds when its code and the instruction's tests run here
        assert row["tests_passed"] == _passes(python_code(row["response"]) or "", "\n".join(row["tests"])), row["id"]


MIN_ROWS_WITH_SPECS = 1
"""The least SmolLM2 makes of the 3 problems (greedy, 64 tokens): specs for one row. Its answers in bf16 follow the
engine's batches: runs gave specs for 1 to 3 rows and 0 to 2 verified functions, so the evidence holds for any."""


def _passes(code: str, test: str) -> bool:
    """Whether ``code`` then ``test`` run without error in a fresh interpreter, with its ``test_*``/``check``
    functions called (as the sandbox runs a check)."""
    runner = (
        "\nfor _name, _f in list(globals().items()):\n"
        "    if callable(_f) and (_name == 'check' or _name.startswith('test_')) and not _f.__code__.co_argcount:\n"
        "        _f()\n"
    )
    done = subprocess.run([sys.executable, "-I", "-c", f"{code}\n\n{test}\n{runner}"], capture_output=True, timeout=60)
    return done.returncode == 0
