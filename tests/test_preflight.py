"""Preflight (amr.preflight): a job's needs against a cluster's nodes. The checks on described clusters (no Ray), then
on a loopback multi-node Ray cluster whose nodes advertise 8 fake GPUs and an accelerator type each (Ray schedules by
those numbers only): the shipped GPU config passes, a wrong accelerator type or too few GPUs per node fails in
seconds naming the config key, from the job (`amr distill`), a dry run (`amr run --dry-run --address`) and
`amr submit`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from amr import model_store
from amr.config import DistillConfig, RunConfig, TeacherConfig, VLLMConfig, load_config
from amr.preflight import ClusterView, Context, Node, PreflightError, evaluate, needs, run
from tests.test_cluster import ENV, Cluster

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "jobs" / "configs"
RUN_GPU = CONFIGS / "run_gpu_cluster.yaml"
AMR = str(Path(sys.executable).parent / "amr")


SANDBOX = Node("sandbox", {"CPU": 0, "sandbox": 16})
"""The shipped clusters' sandbox node: untrusted code runs there only."""


def h100(count: int = 4, gpus: int = 8) -> Node:
    return Node("gpu", {"CPU": 192, "GPU": gpus, "accelerator_type:H100": 1}, count)


def failures(config, cluster: ClusterView) -> list[str]:
    results = evaluate(needs(config), Context(cluster, attached=False, pull=False))
    return [r.message for r in results if r.status == "fail"]


def run_config(*overrides: str) -> RunConfig:
    return load_config(RunConfig, RUN_GPU, list(overrides))


@pytest.mark.timeout(60)
def test_the_gpu_configs_fit_the_shipped_4x8_h100_cluster():
    cluster = ClusterView((Node("head", {"CPU": 8}), h100(), SANDBOX))
    for name in ("run_gpu_cluster.yaml", "paper_table1.yaml", "paper_table3.yaml"):
        assert failures(load_config(RunConfig, CONFIGS / name), cluster) == [], name


@pytest.mark.timeout(60)
def test_an_a100_cluster_fails_naming_the_accelerator_key():
    cluster = ClusterView((Node("gpu", {"CPU": 96, "GPU": 8, "accelerator_type:A100": 1}, 4), SANDBOX))
    [message] = failures(run_config(), cluster)
    assert message.startswith("distill.teacher.vllm.accelerator_type: H100, but no node advertises")
    assert "4 x (8 A100, 96 CPUs)" in message
    with pytest.raises(PreflightError, match="distill.teacher.vllm.accelerator_type: H100"):
        run(run_config(), cluster)


@pytest.mark.timeout(60)
def test_too_few_gpus_per_node_fail_naming_the_tp_and_replica_keys():
    small = ClusterView((h100(count=4, gpus=1),))  # 4 GPUs, but one per node: no TP 2 group fits
    assert failures(run_config(), small)[0].startswith(
        "distill.teacher.vllm.tensor_parallel_size: teacher replicas need 2 GPUs each on one H100 node, and no node"
    )
    one = ClusterView((h100(count=1),))  # 8 GPUs on one node: 4 x TP 2 fit, 5 do not (the embedding on CPUs)
    cpu = "distill.embedding.num_gpus=0"
    assert failures(run_config(cpu), one) == []
    fixed = ["distill.teacher.serve.min_replicas=null", "distill.teacher.serve.max_replicas=null"]
    [message] = failures(run_config(cpu, *fixed, "distill.teacher.vllm.concurrency=5"), one)
    assert message.startswith("distill.teacher.vllm.concurrency: 5 teacher replicas of 2 GPUs each on one H100 node")
    [message] = failures(run_config(cpu, "distill.teacher.serve.min_replicas=5"), one)
    assert message.startswith("distill.teacher.serve.min_replicas: 5 teacher replicas of 2 GPUs each on one H100 node")
    assert "(sized by distill.teacher.vllm.tensor_parallel_size), but the cluster holds 4" in message
    [message] = failures(run_config(cpu, "train.scaling.workers=16", "train.global_batch_size=128"), one)
    assert message.startswith("train.scaling.workers: 16 training workers of 1 GPU and 4 CPUs each")


@pytest.mark.timeout(60)
def test_node_groups_count_at_their_largest_and_a_larger_maximum_warns():
    cluster = ClusterView((h100(count=1),), groups=(h100(count=4),))
    scaling = ["distill.teacher.serve.min_replicas=8", "distill.teacher.serve.max_replicas=15"]
    results = evaluate(needs(run_config(*scaling)), Context(cluster, attached=False, pull=False))
    placed = [r for r in results if r.check == "placement" and r.message.startswith("distill.teacher")]
    assert [r.status for r in placed] == ["ok"]
    assert "fit once its node groups scale up (now 3)" in placed[0].message  # 8 GPUs, one the embedding actors'
    results = evaluate(
        needs(run_config("distill.teacher.serve.min_replicas=4", "distill.teacher.serve.max_replicas=20")),
        Context(cluster, attached=False, pull=False),
    )
    [warned] = [r.message for r in results if r.status == "warn"]
    assert warned.startswith("distill.teacher.serve.max_replicas: 20 teacher replicas, but at most 15 fit, beside")
    failed, starved = failures(
        run_config("distill.teacher.serve.min_replicas=17", "distill.teacher.serve.max_replicas=20"), cluster
    )
    assert failed.startswith("distill.teacher.serve.min_replicas: 17 teacher replicas")
    assert starved.startswith("distill.embedding.actors: 4 embedding actors")


@pytest.mark.timeout(60)
def test_embedding_actors_on_gpus_take_their_share_beside_the_teacher():
    """run_gpu_cluster.yaml's 4 embedding actors on a quarter of a GPU each take one GPU beside the teacher: on one
    8-GPU node 3 replicas of TP 2 fit with them, not 4; on CPUs they take none."""
    one = ClusterView((h100(count=1),))
    [message, starved] = failures(run_config(), one)  # and the actors find no GPU beside 4 replicas
    assert starved.startswith("distill.embedding.actors: 4 embedding actors")
    assert message.startswith(
        "distill.teacher.serve.min_replicas: 4 teacher replicas of 2 GPUs each on one H100 node (sized by "
        "distill.teacher.vllm.tensor_parallel_size), beside the embedding actors (distill.embedding.actors 4 x "
        "distill.embedding.num_gpus 0.25: 1 GPU), but the cluster holds 3"
    )
    assert failures(run_config("distill.teacher.serve.min_replicas=3"), one) == []
    assert failures(run_config("distill.embedding.num_gpus=0"), one) == []
    # nine actors of a quarter of a GPU take 3 GPUs; ten of 0.3 take 4 (three to a GPU)
    crowded = failures(run_config("distill.embedding.actors=9", "distill.teacher.serve.min_replicas=3"), one)
    assert "distill.embedding.num_gpus 0.25: 3 GPUs), but the cluster holds 2" in crowded[0]
    thirds = ["distill.embedding.actors=10", "distill.embedding.num_gpus=0.3"]
    assert failures(run_config(*thirds, "distill.teacher.serve.min_replicas=2"), one) == []
    assert (
        "distill.embedding.num_gpus 0.3: 4 GPUs), but the cluster holds 2"
        in failures(run_config(*thirds, "distill.teacher.serve.min_replicas=3"), one)[0]
    )
    # the actors that do not fit beside the teacher's starting replicas: named by their own key too
    assert crowded[1:] == [
        "distill.embedding.actors: 9 embedding actors of 0.25 GPU and 1 CPUs each on one node (sized by "
        "distill.embedding.num_gpus), beside the teacher replicas (distill.teacher.serve.min_replicas 3 x "
        "distill.teacher.vllm.tensor_parallel_size 2: 6 GPUs), but the cluster holds 8: the Ray cluster has 1 node: 1 x (8 H100, 192 CPUs)"
    ]
    # the shipped 4 x 8 cluster: 15 replicas of TP 2 fit beside the actors' GPU (the shipped config), 16 do not
    cluster = ClusterView((Node("head", {"CPU": 8}), h100(), SANDBOX))
    results = evaluate(needs(run_config()), Context(cluster, attached=False, pull=False))
    assert [r.message for r in results if r.status != "ok"] == []
    results = evaluate(
        needs(run_config("distill.teacher.serve.max_replicas=16")), Context(cluster, attached=False, pull=False)
    )
    assert [r.message for r in results if r.status == "warn"][0].startswith(
        "distill.teacher.serve.max_replicas: 16 teacher replicas, but at most 15 fit, beside the embedding actors"
    )


@pytest.mark.timeout(60)
def test_untrusted_code_needs_bwrap_and_the_sandbox_nodes_on_a_cluster():
    without = ClusterView((Node("head", {"CPU": 8}), h100()))
    assert [m.split(":")[0] for m in failures(run_config(), without)] == [
        "distill.sandbox.resource",
        "eval.sandbox.resource",
    ]
    assert (
        "no node of this 5-node Ray cluster offers the custom resource 'sandbox'" in failures(run_config(), without)[0]
    )
    cluster = ClusterView((Node("head", {"CPU": 8}), h100(), SANDBOX))
    [message] = failures(run_config("distill.sandbox.require=process"), cluster)
    assert message.startswith("distill.sandbox.require: process on a Ray cluster")
    assert "distill.sandbox.unsafe_process_isolation_on_cluster: true" in message
    given_up = run_config("eval.sandbox.require=process", "eval.sandbox.unsafe_process_isolation_on_cluster=true")
    assert failures(given_up, cluster) == []
    [message] = failures(run_config("eval.scoring.parallel=4", "eval.sandbox.resource=gpu-free"), cluster)
    assert message.startswith("eval.sandbox.resource: no node of this 6-node Ray cluster offers")


@pytest.mark.timeout(60)
def test_a_module_table_where_no_lease_can_be_kept_fails_naming_the_key(tmp_path):
    config = DistillConfig(run_dir=str(tmp_path), modules={"uri": "hdfs://namenode/tables"})
    [message] = failures(config, ClusterView((Node("cpu", {"CPU": 8}),)))
    assert message.startswith("modules.uri: hdfs://namenode/tables: a module table's lease needs conditional writes")
    assert "s3://" in message and "gs://" in message
    assert (
        failures(DistillConfig(run_dir=str(tmp_path), method="direct", modules={"uri": "hdfs://x/t"}), ClusterView(()))
        == []
    )


def cached(hub: Path, repo_id: str, files: Path | None = None) -> Path:
    """``repo_id`` in the Hugging Face cache ``hub`` as `hf download` leaves it: ``files``' copy as its snapshot."""
    snapshot = hub / f"models--{repo_id.replace('/', '--')}" / "snapshots" / "0123abcd"
    if files:
        shutil.copytree(files, snapshot)
    else:
        snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, tiny_model):
    """A Hugging Face cache holding ``org/tiny`` (the tiny model's files); offline."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return cached(tmp_path / "hub", "org/tiny", Path(tiny_model))


@pytest.mark.timeout(60)
def test_a_hub_id_resolves_to_its_cached_snapshot_and_is_never_downloaded_at_run_time(hub_cache):
    from amr.config import EvalConfig
    from eval.generate import student

    assert model_store.resolve("org/tiny") == str(hub_cache)
    assert model_store.pull_hub("org/tiny") == hub_cache  # there already: nothing to download
    evaluated = EvalConfig(model="org/tiny", dataset="humaneval", output="out")
    assert student(evaluated).model == "org/tiny"  # the base model of train_gpu.yaml is a hub id
    with pytest.raises(model_store.ModelError, match=r"not in the Hugging Face cache .*amr models pull org/absent"):
        student(evaluated.model_copy(update={"model": "org/absent"}))
    began = time.monotonic()
    with pytest.raises(model_store.ModelError, match="pulling org/absent from the Hugging Face Hub failed"):
        model_store.pull_hub("org/absent")  # HF_HUB_OFFLINE (conftest): the download process fails, named
    assert time.monotonic() - began < 30
    # a model whose code is in another repository (gte-large-en-v1.5's auto_map): pulled with it, for
    # trust_remote_code to load offline
    config = json.loads((hub_cache / "config.json").read_text())
    (hub_cache / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "org/code--modeling.Tiny"}}))
    with pytest.raises(model_store.ModelError, match="pulling org/code from the Hugging Face Hub failed"):
        model_store.pull_hub("org/tiny")
    cached(hub_cache.parents[2], "org/code")
    assert model_store.pull_hub("org/tiny") == hub_cache


@pytest.mark.timeout(120)
def test_attached_to_a_ray_without_gpus_a_gpu_teacher_stops_and_a_cpu_one_passes(ray_local, hub_cache, tmp_path):
    gpu = TeacherConfig(model="org/tiny", vllm=VLLMConfig(device="gpu"))
    config = DistillConfig(run_dir=str(tmp_path / "run"), teacher=gpu)
    began = time.monotonic()
    with pytest.raises(PreflightError) as refused:
        run(config)
    assert time.monotonic() - began < 10
    assert (
        str(refused.value)
        .splitlines()[1]
        .strip()
        .startswith(
            "teacher.vllm.tensor_parallel_size: teacher replicas need 1 GPU each on one node, and no node holds that: "
            "this Ray cluster has 1 node: 1 x (no GPUs, 8 CPUs)"
        )
    )
    found = run(config.model_copy(update={"teacher": TeacherConfig(model="org/tiny")}))
    checked = {("storage", "ok"), ("models", "ok"), ("leases", "ok"), ("isolation", "ok")}
    assert {(r.check, r.status) for r in found} == checked
    assert f"teacher.model: org/tiny at {hub_cache}" in [r.message for r in found]
    unwritable = config.model_copy(update={"teacher": TeacherConfig(model="org/tiny"), "run_dir": "/proc/amr-run"})
    with pytest.raises(PreflightError, match="run_dir: /proc/amr-run cannot be written"):
        run(unwritable)


# A loopback cluster: a head without CPUs, two nodes of 8 fake H100s each and a sandbox node


NO_PRESTART = {**ENV, "RAY_enable_worker_prestart": "0", "RAY_prestart_worker_first_driver": "0"}
"""32 logical CPUs per node on a 2-core machine: no idle workers started for them."""


@pytest.fixture(scope="module")
def h100_cluster():
    root = Path(tempfile.mkdtemp(prefix="amr-pf-", dir="/tmp"))
    cluster = Cluster(root, env=NO_PRESTART)
    try:
        h100 = {"cpus": 32, "options": ["--num-gpus=8", '--resources={"accelerator_type:H100": 1}']}
        cluster.add_workers(h100, h100, {"cpus": 0, "options": ['--resources={"sandbox": 16}']})
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def amr(*args: str, cwd: Path = ROOT) -> tuple[subprocess.CompletedProcess, float]:
    began = time.monotonic()
    done = subprocess.run([AMR, *args], cwd=cwd, env=NO_PRESTART, capture_output=True, text=True, timeout=240)
    return done, time.monotonic() - began


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_job_on_an_h100_cluster_pinned_to_a100_stops_in_seconds_naming_the_key(h100_cluster, tmp_path):
    address = f"--set=ray.address=127.0.0.1:{h100_cluster.gcs}"
    config = ["--config", str(CONFIGS / "gpu_cluster.yaml"), address, f"--run-dir={tmp_path / 'run'}"]
    done, took = amr("distill", *config, "--set=teacher.vllm.accelerator_type=A100", "--set=input.limit=2")
    assert done.returncode == 2, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    assert "teacher.vllm.accelerator_type: A100, but no node advertises accelerator_type:A100" in out
    assert "2 x (8 H100, 32 CPUs)" in out
    assert took < 60
    assert not (tmp_path / "run" / "direct.parquet").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_dry_run_checks_the_run_against_the_cluster(h100_cluster, tmp_path):
    run_args = ["run", "--dry-run", "--config", str(RUN_GPU), f"--set=output={tmp_path / 'out'}"]
    done, _ = amr(*run_args, f"--address=127.0.0.1:{h100_cluster.gcs}")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [" ".join(line.split()) for line in done.stdout.splitlines()]
    assert any(
        line.startswith("ok placement: distill.teacher.serve.min_replicas: 4 teacher replicas of 2 GPUs fit")
        for line in lines
    )
    assert "warn placement: distill.teacher.serve.max_replicas: 15 teacher replicas, but at most 7 fit" in " ".join(
        lines
    )
    assert "ok storage: output: " + str(tmp_path / "out") + " is writable" in lines
    assert any(line.startswith("ok models: distill.embedding.model: all-minilm-l6-v2 at") for line in lines)
    assert any("Qwen/Qwen2.5-Coder-32B-Instruct is not in the Hugging Face cache yet" in line for line in lines)
    for key in ("distill.sandbox", "eval.sandbox"):  # the isolation the one node that runs untrusted code reaches
        pattern = rf"ok isolation on the nodes: {key}: node \S+ runs untrusted code under bwrap"
        assert len([line for line in lines if re.fullmatch(pattern, line)]) == 1, lines
    done, took = amr(
        *run_args, "--set=distill.teacher.vllm.tensor_parallel_size=16", f"--address={h100_cluster.address}"
    )
    assert done.returncode == 2
    out = " ".join(done.stdout.split())
    assert "distill.teacher.vllm.tensor_parallel_size: teacher replicas need 16 GPUs each on one H100 node" in out
    assert f"the Ray cluster at {h100_cluster.address} has 4 nodes" in out and took < 60


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_submit_refuses_a_job_that_cannot_fit_before_uploading(h100_cluster, tmp_path):
    done, took = amr(
        "submit", "run", "--address", h100_cluster.address, "--config", str(RUN_GPU.relative_to(ROOT)),
        "--set=distill.teacher.serve.min_replicas=9", "--no-follow",
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    assert "distill.teacher.serve.min_replicas: 9 teacher replicas of 2 GPUs each on one H100 node" in out
    assert "but the cluster holds 7" in out and "submitted" not in out and took < 60  # a GPU the embedding actors'
    from ray.util.state import list_jobs

    jobs = list_jobs(address=h100_cluster.address, timeout=60)  # what `ray list jobs` lists, in this process
    assert [j for j in jobs if j.type == "SUBMISSION"] == []  # nothing was submitted
