"""Embedding actors' placement: on CPU by default, on fractions of GPUs where ``embedding.num_gpus`` asks, scheduled
by a real Ray whose node advertises fake GPUs (Ray places by numbers only; the model runs on CPU: no CUDA here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from amr.config import EmbeddingConfig

PLACEMENT = """
import json, sys
import numpy as np, ray
from ray.cluster_utils import Cluster
from ray.util.placement_group import placement_group, remove_placement_group
from amr.config import EmbeddingConfig
from amr.embeddings import EmbedderActors

# a head without CPUs and nodes of 4 CPUs and 2 fake GPUs each, added as a run asks for more
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
ray.init(address=cluster.address)
where = lambda self: (ray.get_runtime_context().get_node_id(), ray.get_runtime_context().get_accelerator_ids()["GPU"])
for run in json.loads(sys.argv[1]):
    while len(cluster.list_all_nodes()) - 1 < run["nodes"]:
        cluster.add_node(num_cpus=4, num_gpus=2)
    cluster.wait_for_nodes()
    with EmbedderActors(EmbeddingConfig(**run["config"])) as embedders:
        vectors = embedders.encode(["reverse a string", "sum of a list", "is n prime"])
        placed = ray.get([a.__ray_call__.remote(where) for a in embedders.actors])
        out = {"gpus_free": ray.available_resources().get("GPU", 0.0), "gpu_ids": [p[1] for p in placed],
               "nodes": len({p[0] for p in placed}), "shape": list(vectors.shape),
               "norms": np.linalg.norm(vectors, axis=1).round(4).tolist()}
        if run["whole"]:  # every GPU but one is still whole
            whole = placement_group([{"GPU": 1}] * int(ray.cluster_resources().get("GPU", 0) - 1))
            out["whole_gpus_but_one"] = whole.wait(10)
            remove_placement_group(whole)
        print(json.dumps(out))
ray.shutdown()
cluster.shutdown()
"""


def _placed(*runs: tuple[dict, int, bool]) -> list[dict]:
    """Each run's actors (its config, on a Ray cluster of that many nodes of 2 fake GPUs each, which only grows), one
    run after another in one Ray: what they hold, and what they embed (``whole``: and whether every GPU but one is
    still whole)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "disabled"}
    runs_json = json.dumps([{"config": config, "nodes": nodes, "whole": whole} for config, nodes, whole in runs])
    done = subprocess.run(
        [sys.executable, "-c", PLACEMENT, runs_json], capture_output=True, text=True, env=env, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.strip().splitlines()[-len(runs) :]]


def test_auto_dtype_is_bf16_on_cpus_that_compute_in_it(monkeypatch):
    import amr.config

    monkeypatch.setattr(amr.config, "cpu_dtype", lambda: "bfloat16")
    assert EmbeddingConfig().actor_dtype == "bfloat16" and EmbeddingConfig(num_gpus=0.25).actor_dtype == "float32"
    assert EmbeddingConfig(dtype="float32").actor_dtype == "float32"
    monkeypatch.setattr(amr.config, "cpu_dtype", lambda: "float32")
    assert EmbeddingConfig().actor_dtype == "float32"


@pytest.mark.timeout(120)
def test_bf16_vectors_are_unit_length_and_close_to_float32():
    from amr.embeddings import Embedder

    texts = ["def is_prime(n): Whether n is a prime.", "def reverse(s): The string s reversed.", "sum a list"]
    full, half = (Embedder("all-minilm-l6-v2", dtype=d).encode(texts) for d in ("float32", "bfloat16"))
    assert half.dtype == np.float32 and np.allclose(np.linalg.norm(half, axis=1), 1.0, atol=1e-6)
    assert (full * half).sum(axis=1).min() > 0.99 and not np.array_equal(full, half)


def test_actor_device_follows_the_gpu_share():
    assert EmbeddingConfig().actor_device == "cpu"
    assert EmbeddingConfig(num_gpus=0.25).actor_device == "cuda"
    assert EmbeddingConfig(num_gpus=0.25, device="cpu").actor_device == "cpu"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_embedding_actors_take_fractions_of_fake_gpus_and_as_few_gpus_as_they_fit():
    """Both checks in one Ray, first of one node, then of two (each was a test of its own, starting its own Ray).
    test_embedding_actors_take_fractions_of_fake_gpus: two actors of 0.75 GPU cannot share one GPU: each holds three
    quarters of its own; by default, CPU actors.
    test_embedding_actors_on_shares_of_gpus_take_as_few_gpus_as_they_fit: four quarters of a GPU on a cluster of 2
    nodes take one GPU of one node, so that 3 GPUs stay whole for the teacher's replicas, as the preflight counts
    them (spread over the nodes, they took a GPU of each)."""
    gpu, cpu, packed = _placed(
        ({"actors": 2, "num_gpus": 0.75, "device": "cpu"}, 1, False),
        ({"actors": 2}, 1, False),
        ({"actors": 4, "num_gpus": 0.25, "device": "cpu"}, 2, True),
    )
    assert gpu["gpus_free"] == pytest.approx(0.5)
    assert sorted(len(ids) for ids in gpu["gpu_ids"]) == [1, 1] and len({i[0] for i in gpu["gpu_ids"]}) == 2
    assert gpu["shape"] == [3, 384] and gpu["norms"] == [1.0, 1.0, 1.0]
    assert cpu["gpus_free"] == 2 and cpu["gpu_ids"] == [[], []] and cpu["shape"] == [3, 384]

    assert packed["nodes"] == 1 and len({tuple(ids) for ids in packed["gpu_ids"]}) == 1
    assert packed["whole_gpus_but_one"] and packed["gpus_free"] == pytest.approx(3.0)
    assert packed["shape"] == [3, 384]


def test_a_job_shares_the_embedders_of_an_enclosing_block_of_its_settings(monkeypatch):
    """``open_embedders`` inside another of the same settings (the job's, ``waves.embedders``) starts no actors and
    stops none; one of other settings starts and stops its own."""
    from amr import embeddings
    from amr.config import DistillConfig
    from amr.pipelines import waves

    events = []

    class Started:  # EmbedderActors without Ray: what is started and stopped
        def __init__(self, config: EmbeddingConfig, model_store: str | None):
            events.append(("start", config.batch_size))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            events.append(("stop", id(self)))

    monkeypatch.setattr(embeddings, "EmbedderActors", Started)
    job = DistillConfig(run_dir="unused")
    with embeddings.open_embedders(EmbeddingConfig()) as shared:
        with waves.embedders(job) as inner:
            assert inner is shared
        with waves.embedders(job.model_copy(update={"embedding": EmbeddingConfig(batch_size=8)})) as other:
            assert other is not shared
        assert events == [("start", 64), ("start", 8), ("stop", id(other))]
    assert events[-1] == ("stop", id(shared))
    with waves.embedders(job) as alone:  # no enclosing block: the job's own
        assert alone is not shared
    assert events[-2:] == [("start", 64), ("stop", id(alone))]
