"""Student training on a real multi-node Ray cluster on 127.0.0.1 (tests/test_cluster.py's: a head without CPUs,
worker nodes in process groups of their own), with a 48M-parameter student:

- `amr submit train` shards it with FSDP2 over 2 workers on 2 nodes (gloo): rank 0 alone reads the weights, each
  worker streams its own half of the rows from Ray Data;
- a node is killed mid-run and another joins: the run resumes from its last checkpoint;
- each sharded worker's peak memory stays below 70% of a replicated worker's, measured in the same training replicated
  on both nodes (hybrid: sharded within a node of one worker), which saves the same student, bit for bit; `amr eval`
  loads the sharded run's and scores it.

The precision is bf16-pure (weights, gradients and AdamW state in bfloat16) where the CPU computes in bfloat16
natively, fp32 elsewhere: without AVX512-BF16 or AMX, torch's bfloat16 backward pass runs ~40 times slower than
float32's (a 105M Llama's step: 38 s against 0.7 s on an AVX2 EPYC), and this test took 11.6 of the suite's 46
minutes there.

The student is small (a step ~4 s on 2 AVX2 cores, ~8 s at 105M) with wide layers (hidden 512: its parameters,
gradients and AdamW state, not the activations of 2 rows of ~55 tokens, are a step's memory), and each run trains 3
steps with a checkpoint after each: on 2 cores the test's time is its Ray jobs' CPU work (process starts, steps,
checkpoints), the cores busy 0.85-0.93 of it.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from amr.hardware import cpu_bf16
from jobs.cli import app
from tests.conftest import random_llama
from tests.test_cluster import ROOT, Cluster, cluster  # noqa: F401 (the cluster fixture)
from tests.test_train import rows

runner = CliRunner()
LIMIT = 0.7
"""Of a replicated worker's peak above its memory before the model: a sharded worker's (half the weights, gradients and
AdamW state; every worker's activations and buffers the same)."""
PRECISION = "bf16-pure" if cpu_bf16() else "fp32"
WEIGHT_BYTES = 2 if PRECISION == "bf16-pure" else 4


@pytest.fixture(scope="module")
def student(tiny_model, tmp_path_factory) -> tuple[str, int]:
    """A random 12-layer Llama of 48M parameters (head_dim 64, as vLLM's CPU attention needs) with the tiny model's
    tokenizer, saved in bfloat16 (as hub models are)."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("llama-48m")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    parameters = random_llama(
        out, tokenizer, hidden=512, intermediate=2048, layers=12, heads=8, kv_heads=4, dtype="bfloat16"
    )
    return str(out), parameters


def _submit(nodes: Cluster, name: str) -> str:
    result = runner.invoke(
        app, ["submit", "train", "--address", nodes.address, "--config", f"{name}.yaml", "--no-follow"]
    )
    assert result.exit_code == 0, result.output
    return re.search(r"submitted train: (\S+)", result.output).group(1)


def _finished(nodes: Cluster, job_id: str) -> str:
    followed = runner.invoke(app, ["jobs", "logs", job_id, "--follow", "--address", nodes.address])
    assert followed.exit_code == 0 and f"{job_id}: SUCCEEDED" in followed.output, followed.output
    return followed.output


def _registered_step(storage: Path) -> int:
    """The step of the last checkpoint Ray Train has registered in ``storage`` (its checkpoint manager's snapshot); 0
    before any. A checkpoint's files are there first: its workers upload them, then report, and the controller, which
    polls them (every 0.5 s in the tests: conftest.py), registers it. A node killed in between restarts the run from
    the one before."""
    try:
        latest = json.loads((storage / "checkpoint_manager_snapshot.json").read_text())["latest_checkpoint_result"]
    except (FileNotFoundError, json.JSONDecodeError):  # none yet, or being written
        return 0
    return latest["metrics"]["step"] if latest else 0


def _answers(model: str, out: Path, cache: Path) -> list[str]:
    """`amr eval` of ``model`` on 3 HumanEval tasks, 24 tokens each: its raw answers."""
    sets = {
        "cache_dir": cache,
        "sampling.max_tokens": 24,
        "vllm.max_model_len": 1024,
        "vllm.batch_size": 4,
        "vllm.cpu_reserved_cores": 0,
        "scoring.min_time_limit": 10,
    }
    args = ["eval", "--model", model, "--dataset", "humaneval", "--limit", "3", "--output", str(out)]
    result = runner.invoke(app, [*args, *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))])
    assert result.exit_code == 0, result.output
    scores = json.loads((out / "scores.json").read_text())
    assert (scores["n_tasks"], scores["generation_errors"]) == (3, 0)
    return [json.loads(line)["raw"] for line in (out / "samples.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fsdp_training_across_nodes_resumes_and_saves_the_unsharded_model(
    cluster,  # noqa: F811
    ray_local,
    student,
    tmp_path,
    monkeypatch,
):
    model, parameters = student
    project = tmp_path / "project"  # the jobs' working_dir: this checkout's code and their configs
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "__pycache__", "results"))
    monkeypatch.chdir(project)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(rows(6)), tmp_path / "data" / "dataset.parquet")  # 3 a worker, 2 a step
    cluster.add_worker(cpus=1)  # a CPU a node: Ray Train's PACK placement cannot put both workers on one
    second = cluster.add_worker(cpus=1)
    config = {
        "model": model,
        "dataset": str(tmp_path / "data"),
        "seq_len": 128,
        "epochs": 2,  # 3 steps: the run resumes from step 1's checkpoint in the first pass and streams on
        "global_batch_size": 4,
        "micro_batch_size": 2,
        "learning_rate": 1.0e-3,
        "warmup_ratio": 0,  # every step moves the weights: the resumed run starts from changed ones
        "precision": PRECISION,
        "max_grad_norm": 1.0e9,  # no clipping: sharded and replicated runs sum the norm's parts in another order
        "gradient_checkpointing": False,
        "save_steps": 1,
        "max_failures": 2,
        "scaling": {"workers": 2, "cpus_per_worker": 1, "sharding": "full"},
    }
    sharded, replicated = tmp_path / "sharded", tmp_path / "replicated"  # replicated: every worker a whole replica
    hybrid = {**config["scaling"], "sharding": "hybrid"}  # on 2 nodes of one worker
    for name, output, scaling in (("sharded", sharded, config["scaling"]), ("replicated", replicated, hybrid)):
        # both configs written first: the two jobs' working_dir is the same package, uploaded and unpacked once
        Path(f"{name}.yaml").write_text(yaml.safe_dump({**config, "output": str(output), "scaling": scaling}))
    job = _submit(cluster, "sharded")
    deadline = time.monotonic() + 300
    while not _registered_step(sharded / "checkpoints" / "train"):  # step 1's: the kill comes a step before step 2's
        assert time.monotonic() < deadline, runner.invoke(
            app, ["jobs", "logs", job, "--address", cluster.address]
        ).output
        time.sleep(0.2)
    cluster.kill(second)
    cluster.add_worker(cpus=1)
    _finished(cluster, job)
    summary = json.loads((sharded / "train.json").read_text())
    assert (summary["steps"], summary["resumed_from_step"], summary["sharding"], summary["mesh"]) == (3, 1, "full", [2])
    assert len({w["node"] for w in summary["workers"]}) == 2  # a worker on each node
    shards = json.loads((sharded / "shards.json").read_text())  # each worker streamed its own half of the rows
    assert sorted(shards[0] + shards[1]) == sorted(r["id"] for r in rows(6)) and not set(shards[0]) & set(shards[1])

    for worker in summary["workers"]:
        if worker["rank"]:  # rank 0 alone reads the weights: the others hold their shard, not a copy
            assert worker["load_peak"] - worker["rss_base"] < 0.75 * WEIGHT_BYTES * parameters, worker

    job = _submit(cluster, "replicated")
    # amr eval loads the sharded run's student and scores it (on the test's own Ray) while the replicated run trains
    answers = _answers(summary["model_dir"], tmp_path / "eval-sharded", tmp_path / "evalplus")
    assert len(answers) == 3
    _finished(cluster, job)
    unsharded = json.loads((replicated / "train.json").read_text())
    assert (unsharded["sharding"], unsharded["mesh"], unsharded["resumed_from_step"]) == ("hybrid", [2, 1], 0)
    assert summary["final_loss"] == pytest.approx(unsharded["final_loss"], rel=1e-3)
    replica = min(max(w["load_peak"], w["train_peak"]) - w["rss_base"] for w in unsharded["workers"])
    for worker in summary["workers"]:
        peak = max(worker["load_peak"], worker["train_peak"]) - worker["rss_base"]
        assert peak < LIMIT * replica, (worker, replica)

    saved = json.loads((sharded / "model" / "config.json").read_text())
    assert saved["dtype"] == ("bfloat16" if PRECISION == "bf16-pure" else "float32")
    # the same weights, bit for bit, as the replicated run's (2 workers' gradients sum alike in any order): the same
    # greedy answers wherever the two are loaded alike
    students = [load_file(Path(s["model_dir"]) / "model.safetensors") for s in (summary, unsharded)]
    assert students[0].keys() == students[1].keys()
    assert all(torch.equal(students[0][k], students[1][k]) for k in students[0])
