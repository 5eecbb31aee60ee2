"""Sandbox verdicts, HumanEval+ ground truth, the process-level fallback, the CLI and the Ray stage."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

import pytest

from amr.config import SandboxConfig
from amr.data import HUMANEVAL_PLUS
from amr.sandbox import RECORD_FIELDS, Sandbox, SandboxError, SandboxWarning
from amr.sandbox.worker import descendants

NO_BWRAP = SandboxConfig(bwrap="/nonexistent/bwrap", workers=2, timeout_s=3, memory_mb=256, max_processes=16)


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(require="bwrap", workers=2)) as sandbox:
        yield sandbox


def humaneval_plus() -> list[dict]:
    with gzip.open(HUMANEVAL_PLUS, "rt") as f:
        return [json.loads(line) for line in f]


def test_verdicts(sandbox):
    code = "def add(a, b):\n    print('adding', a, b)\n    return a + b\n"
    records = sandbox.run(
        [
            {"code": code, "test": "assert add(1, 2) == 3"},
            {"code": code, "test": "assert add(1, 2) == 3\nassert add(2, 2) == 5"},
            {
                "code": code,
                "test": "def test_small():\n    assert add(0, 0) == 0\ndef test_big():\n    assert add(1, 1) == 3",
            },
            {"code": code, "test": "def check(candidate):\n    assert candidate(2, 3) == 5", "entry_point": "add"},
            {"code": code, "test": "def check(candidate):\n    assert candidate(2, 3) == 5", "entry_point": "mul"},
            {"code": "def add(a, b) return a + b", "test": "assert add(1, 2) == 3"},
            {"code": code, "test": "assert add(1, 2) ==="},
            {"code": code, "test": "assert add(1, '2') == 3"},
            {"code": code},
        ]
    )
    assert all(set(r) == set(RECORD_FIELDS) for r in records)
    assert [r["status"] for r in records] == [
        "passed",
        "failed",
        "failed",
        "passed",
        "error",
        "error",
        "error",
        "failed",
        "passed",
    ]
    assert records[0]["stdout"] == "adding 1 2\n" and records[0]["isolation"] == "bwrap"
    assert records[1]["reason"] == "AssertionError at test.py:2: assert add(2, 2) == 5"
    assert records[2]["reason"] == "AssertionError at test.py:4: assert add(1, 1) == 3"
    assert "entry point 'mul'" in records[4]["reason"]
    assert records[5]["reason"].startswith("SyntaxError") and "while running the code" in records[5]["reason"]
    assert records[6]["reason"].startswith("SyntaxError in test.py:1")
    assert records[7]["reason"].startswith("TypeError: unsupported operand")


def test_humaneval_plus_canonical_solutions_pass(sandbox):
    problems = humaneval_plus()
    records = sandbox.run(
        {"code": p["prompt"] + p["canonical_solution"], "test": p["test"], "entry_point": p["entry_point"]}
        for p in problems
    )
    failures = {p["task_id"]: r for p, r in zip(problems, records) if r["status"] != "passed"}
    assert len(problems) == 164 and failures == {}


def test_humaneval_plus_broken_solutions_fail(sandbox):
    problems = humaneval_plus()
    broken = "\n\ndef {0}(*args, **kwargs):\n    return object()\n"  # runs, returns nothing comparable
    records = sandbox.run(
        {
            "code": p["prompt"] + p["canonical_solution"] + broken.format(p["entry_point"]),
            "test": p["test"],
            "entry_point": p["entry_point"],
        }
        for p in problems
    )
    passing = [p["task_id"] for p, r in zip(problems, records) if r["status"] != "failed"]
    assert passing == []


def test_read_only_binds_under_tmp_are_readable_and_kept_by_the_wipe_between_checks():
    """A venv or checkout under /tmp (a clone there): bound over the sandbox's own /tmp, readable by the code, and
    kept, with the directories above it, by the wipe after each check, which removes what the code wrote there."""
    with tempfile.TemporaryDirectory(dir="/tmp") as top:  # tmp_path's parents are private to root, not to nobody
        lib = Path(top, "checkout", "lib")
        lib.mkdir(parents=True)
        (lib / "bound_module.py").write_text("ANSWER = 42\n")
        for path in (top, lib.parent, lib):
            os.chmod(path, 0o755)
        (lib / "bound_module.py").chmod(0o644)
        code = f"import os, sys\nsys.path.insert(0, {str(lib)!r})\nimport bound_module\n"
        planted = [f"{top}/planted", f"{lib.parent}/planted", "/tmp/planted"]
        plant = f"for path in {planted!r}:\n    open(path, 'w').close()\n"
        test = f"assert bound_module.ANSWER == 42\nassert not any(os.path.exists(p) for p in {planted!r})"
        config = SandboxConfig(require="bwrap", workers=1, ro_binds=[str(lib)])
        with Sandbox(config) as sandbox:
            records = sandbox.run([{"code": code + plant}, {"code": code, "test": test}, {"code": code, "test": test}])
        assert [(r["status"], r["reason"]) for r in records] == [("passed", "")] * 3


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox changes its credentials only when the job runs as root")
def test_code_of_a_root_job_runs_as_nobody_without_groups_at_each_level(sandbox):
    """Run as root, the check server drops to nobody (uid and gid 65534) with no supplementary group, in bwrap and
    at the process level: the kernel would exempt root from RLIMIT_NPROC."""
    check = {"code": "import os\nprint(os.getresuid(), os.getresgid(), os.getgroups())"}
    with pytest.warns(SandboxWarning, match="not found"), Sandbox(NO_BWRAP) as weaker:
        records = [*sandbox.run([check]), *weaker.run([check])]
    nobody = "(65534, 65534, 65534) (65534, 65534, 65534) []\n"
    assert [(r["isolation"], r["status"], r["stdout"]) for r in records] == [
        ("bwrap", "passed", nobody),
        ("process", "passed", nobody),
    ]


def test_fallback_to_process_level_warns_and_still_contains():
    with pytest.warns(SandboxWarning, match="not found"), Sandbox(NO_BWRAP) as sandbox:
        records = sandbox.run(
            [
                {"code": "def f():\n    return 1", "test": "assert f() == 1"},
                {"code": "while True:\n    pass"},
                {"code": "x = bytearray(8 * 1024**3)"},
                {"code": "import os, time\nfor _ in range(10_000):\n    if os.fork() == 0:\n        time.sleep(1000)"},
                {"code": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(1000)\n"},
                {"code": "import os, signal, time\nos.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(5)"},
                {"code": "import os\nos._exit(0)"},
            ]
        )
        assert [r["status"] for r in records] == ["passed", "timeout", "memory", "error", "passed", "killed", "error"]
        assert {r["isolation"] for r in records} == {"process"}
        assert [descendants(pid) for pid in sandbox.server_pids()] == [set()] * NO_BWRAP.workers, (
            "a check left a process behind"
        )
        assert sandbox.run([{"code": "x = 1", "test": "assert x == 1"}])[0]["status"] == "passed"


def test_require_refuses_weaker_isolation():
    with pytest.raises(SandboxError, match="no isolation level at least 'bwrap'.*not found"):
        Sandbox(NO_BWRAP.model_copy(update={"require": "bwrap"}))


def test_missing_interpreter_is_a_clear_error():
    with pytest.raises(SandboxError, match="sandbox.python: /nonexistent/python"):
        Sandbox(SandboxConfig(python="/nonexistent/python"))


def test_cli_prints_the_record_and_exits_0_whatever_the_verdict(write):
    from typer.testing import CliRunner

    from jobs.cli import app

    code = write("code.py", "def f(x):\n    return x + 1\n")
    runner = CliRunner()
    for test, status in (("assert f(1) == 2", "passed"), ("assert f(1) == 3", "failed")):
        result = runner.invoke(
            app, ["sandbox", "run", str(code), "--test", str(write("t.py", test)), "--require", "bwrap", "--json"]
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["status"] == status
    slow = write("slow.py", "import time\ntime.sleep(10)")
    result = runner.invoke(app, ["sandbox", "run", str(slow), "--timeout", "0.5", "--json"])
    assert json.loads(result.stdout)["status"] == "timeout"
    result = runner.invoke(
        app, ["sandbox", "run", str(code), "--require", "bwrap", "--set", "bwrap=/nonexistent/bwrap"]
    )
    assert result.exit_code == 2 and "not found" in result.output


def test_job_sandbox_actors_check_held_rows_and_a_streamed_stage(ray_local):
    """... and a job inside an enclosing ``open_sandbox`` of the same settings (``amr run``'s methods, a test
    module's jobs) shares its actors; other settings get their own, and the outermost block closes them."""
    from amr.sandbox.stage import open_sandbox

    rows = [{"id": i, "code": f"def f():\n    return {i}", "test": f"assert f() == {i % 2}"} for i in range(6)]
    expected = [(i, "passed" if i < 2 else "failed", "bwrap") for i in range(6)]
    config = SandboxConfig(require="bwrap", workers=1, actors=2)
    with open_sandbox(config) as sandbox, open_sandbox(config.model_copy()) as job:
        assert job is sandbox and len(sandbox.actors) == 2
        with open_sandbox(config.model_copy(update={"actors": 1})) as other:
            assert other is not sandbox and len(other.actors) == 1
        assert not other.actors
        out = sandbox.check_dataset(ray_local.data.from_items(rows)).take_all()
        assert sorted((r["id"], r["status"], r["isolation"]) for r in out) == expected
        held = sandbox.run(rows)  # split over both actors, answered in order
        assert [(r["id"], h["status"], h["isolation"]) for r, h in zip(rows, held)] == expected
        pids = set(
            ray_local.get([a.__ray_call__.remote(lambda actor: __import__("os").getpid()) for a in sandbox.actors])
        )
        assert len(pids) == 2
    assert not sandbox.actors


def test_a_cluster_requires_bwrap_unless_a_key_gives_it_up():
    from amr.config import ConfigError
    from amr.sandbox.cluster import required_level

    assert required_level(SandboxConfig(), cluster=False) == "process"  # the strongest that works, process allowed
    assert required_level(SandboxConfig(require="bwrap"), cluster=False) == "bwrap"
    assert required_level(SandboxConfig(), cluster=True) == "bwrap"
    with pytest.raises(ConfigError, match=r"sandbox.require: process on a Ray cluster.*unsafe_process_isolation_on"):
        required_level(SandboxConfig(require="process"), cluster=True)
    given_up = SandboxConfig(require="process", unsafe_process_isolation_on_cluster=True)
    assert required_level(given_up, cluster=True) == "process"


def test_checks_go_where_the_sandbox_resource_is(monkeypatch):
    from amr.config import ConfigError
    from amr.sandbox import cluster

    def node(name: str, **resources: float) -> dict:
        return {"NodeID": name, "Alive": True, "Resources": resources}

    nodes = [node("head", CPU=0), node("gpu", CPU=96, GPU=8), node("box", sandbox=16), node("box2", sandbox=8)]
    monkeypatch.setattr(cluster, "alive_nodes", lambda: nodes)
    where = cluster.placement(SandboxConfig(), None)
    assert (where.options, where.workers, where.nodes) == (
        {"num_cpus": 0, "resources": {"sandbox": 8}},
        8,
        ["box", "box2"],
    )
    assert cluster.placement(SandboxConfig(), 2).options["resources"] == {"sandbox": 2}
    with pytest.raises(ConfigError, match=r"12 checks at once .* have 8 units"):
        cluster.placement(SandboxConfig(), 12)
    with pytest.raises(ConfigError, match=r"sandbox.resource: no node of this 4-node Ray cluster offers .*'gpu-free'"):
        cluster.placement(SandboxConfig(resource="gpu-free"), None)
    anywhere = cluster.placement(SandboxConfig(resource=None), 4)
    assert (anywhere.options, anywhere.nodes) == ({"num_cpus": 4}, ["head", "gpu", "box", "box2"])
    nodes[:] = [node("laptop", CPU=8)]  # one node, no sandbox resource: its CPUs, as before
    assert cluster.placement(SandboxConfig(), 3).options == {"num_cpus": 3}
