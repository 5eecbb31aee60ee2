"""A real multi-node Ray cluster on 127.0.0.1 (`ray start --head` with no CPUs, so the work runs on the
worker nodes): `amr submit distill` runs the job there, a worker node is killed mid-job and another joins,
and the job completes with nothing lost and nothing duplicated; a run directory one node cannot see is
refused with a clear error."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from amr.modules import ModuleDB
from jobs.cli import app
from tests.support.scripted_teacher import ScriptedTeacher
from tests.test_distill import INSTRUCTIONS, script
from tests.test_distill import config as distill_config

runner = CliRunner()
ROOT = Path(__file__).parent.parent
RAY = str(Path(sys.executable).parent / "ray")
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
ENV.pop("RAY_ADDRESS", None)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agent_ports() -> list[str]:
    """Free ports for a node's agents: the defaults are fixed, and the test session's own Ray holds them."""
    return [
        f"--{name}-port={_port()}"
        for name in ("dashboard-agent-listen", "dashboard-agent-grpc", "metrics-export", "runtime-env-agent")
    ]


class Cluster:
    """A head node without CPUs and worker nodes, each started with `ray start --block` in a process group of its own."""

    def __init__(self, root: Path, env: dict[str, str] = ENV):
        self.root, self.env, self.gcs, self.dashboard = root, env, _port(), _port()
        self.address = f"http://127.0.0.1:{self.dashboard}"
        self.workers: list[subprocess.Popen] = []
        self.head = subprocess.Popen(
            [
                RAY,
                "start",
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={self.gcs}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard}",
                "--num-cpus=0",
                f"--temp-dir={root / 'ray'}",
                "--block",
                "--disable-usage-stats",
                *_agent_ports(),
            ],
            # a killed node is marked dead after 5 missed health checks: every 0.5 s here, not Ray's 3 s
            env={**self.env, "RAY_health_check_period_ms": "500"},
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait(lambda: self.alive() == 1, "the head node", timeout=120)
        self.runtime_resources = (root / "ray" / "session_latest").resolve() / "runtime_resources"
        self.runtime_resources.mkdir(exist_ok=True)

    def add_worker(self, cpus: int = 6, hide: Path | None = None, options: Sequence[str] = ()) -> subprocess.Popen:
        """A worker node. As on separate machines, each node unpacks job packages on its own disk (one
        folder shared by nodes is emptied under a running job when another node dies); ``hide``: a
        directory this node alone sees as empty (its own disk, not shared); ``options``: more of `ray start`'s
        (``--num-gpus=8``: GPUs that Ray counts, on a machine without them)."""
        return self.add_workers({"cpus": cpus, "hide": hide, "options": options})[0]

    def add_workers(self, *nodes: dict) -> list[subprocess.Popen]:
        """Worker nodes, each of ``add_worker``'s arguments, started one after another without waiting for each to
        join: one wait sees them all join."""
        before = self.alive()
        started = [self._start(**node) for node in nodes]
        self._wait(lambda: self.alive() == before + len(nodes), f"{len(nodes)} worker node(s) to join")
        return started

    def _start(self, cpus: int = 6, hide: Path | None = None, options: Sequence[str] = ()) -> subprocess.Popen:
        """A worker node, returned once its raylet has made its sockets in the session's folder: a node names its
        sockets there by the first name not taken, so a node started before that took the same names."""
        own = [self.runtime_resources, *([hide] if hide else [])]
        command = [
            "bwrap",
            "--dev-bind",
            "/",
            "/",
            *[a for d in own for a in ("--tmpfs", str(d))],
            "--",
            RAY,
            "start",
            f"--address=127.0.0.1:{self.gcs}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={cpus}",
            "--block",
            "--disable-usage-stats",
            *_agent_ports(),
            *options,
        ]
        sockets = self.runtime_resources.parent / "sockets"

        def made() -> list[int]:
            return [len(list(sockets.glob(f"{name}*"))) for name in ("raylet", "plasma_store")]

        before = made()
        worker = subprocess.Popen(
            command, env=self.env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.workers.append(worker)
        self._wait(lambda: all(now > then for now, then in zip(made(), before)), "the worker node's sockets")
        return worker

    def kill(self, worker: subprocess.Popen) -> None:
        before = self.alive()
        os.killpg(worker.pid, signal.SIGKILL)  # the raylet and every worker process of the node
        worker.wait(30)
        self._wait(lambda: self.alive() == before - 1, "the killed node to be marked dead")

    def alive(self) -> int:
        """The nodes alive, from the head's state API over HTTP (in this process: `ray list nodes` is a Python start
        of ~1.6 s on 2 busy cores, each poll of it taking the CPU the starting nodes need); -1 until it answers."""
        from ray.util.state import list_nodes
        from ray.util.state.exception import RayStateApiException

        try:
            return sum(node.state == "ALIVE" for node in list_nodes(address=self.address, timeout=10))
        except RayStateApiException:  # the head's dashboard is not up yet
            return -1

    @staticmethod
    def _wait(done, what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Each node's process group: never `ray stop`, which would also stop every other Ray on this
        machine (the test session's own, and with it the pytest process, its driver)."""
        for node in [*self.workers, self.head]:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait(30)


@pytest.fixture
def cluster():
    root = Path(tempfile.mkdtemp(prefix="amr-rc-", dir="/tmp"))  # short: Ray's socket paths live under it
    cluster = Cluster(root)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_submitted_distill_survives_a_killed_worker_node(cluster, tmp_path, monkeypatch):
    project = tmp_path / "project"  # the job's working_dir: this checkout's code and a config
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "__pycache__", "results"))
    monkeypatch.chdir(project)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the job client, as the cluster
    address = ["--address", cluster.address]
    first = cluster.add_worker()
    with ScriptedTeacher(script, latency_s=0.3) as scripted:
        cfg = distill_config(tmp_path / "job", scripted)
        cfg.sandbox.resource = None  # no sandbox node here: checks on the workers' CPUs, restarted with them
        Path("job.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        result = runner.invoke(app, ["submit", "distill", *address, "--config", "job.yaml", "--no-follow"])
        assert result.exit_code == 0, result.output
        job_id = re.search(r"submitted distill: (\S+)", result.output).group(1)
        deadline = time.monotonic() + 240
        while len(scripted.requests) < 6:  # R_d done, decomposition under way
            status = runner.invoke(app, ["jobs", "status", job_id, *address]).output
            assert "RUNNING" in status or "PENDING" in status, runner.invoke(
                app, ["jobs", "logs", job_id, *address]
            ).output
            assert time.monotonic() < deadline
            time.sleep(0.2)
        cluster.kill(first)
        cluster.add_worker()
        followed = runner.invoke(app, ["jobs", "logs", job_id, "--follow", *address])
        assert followed.exit_code == 0 and f"{job_id}: SUCCEEDED" in followed.output, followed.output
        status = runner.invoke(app, ["jobs", "status", job_id, *address]).output
        assert "SUCCEEDED" in status and "entrypoint: python -m jobs.distill --config job.yaml" in status

    run = Path(cfg.run_dir)
    dataset = pq.read_table(run / "dataset.parquet").to_pylist()
    assert sorted(r["id"] for r in dataset) == sorted(i["id"] for i in INSTRUCTIONS)  # none lost, none twice
    names = ModuleDB.open(str(run / "modules")).at().to_arrow().column("name").to_pylist()
    assert len(names) == len(set(names)) == 4
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["dataset"]["response_accuracy"] == 0.75  # as in a local run (test_distill)

    # a third node whose view of the run directory is its own empty disk: the job refuses it
    hidden = tmp_path / "private"
    hidden.mkdir()
    cluster.add_worker(cpus=1, hide=hidden)
    # the same job.yaml, its run_dir set: the same working_dir, whose package the cluster holds (not uploaded again)
    hidden_run = ["--config", "job.yaml", "--set", f"run_dir={hidden / 'run'}"]
    refused = runner.invoke(app, ["submit", "distill", *address, *hidden_run])
    assert refused.exit_code == 1 and "FAILED" in refused.output
    assert f"run_dir: {hidden / 'run'} is on this node's disk only" in refused.output
