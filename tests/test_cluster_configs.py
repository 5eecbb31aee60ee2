"""cluster/: the launcher, the KubeRay manifests and the Dockerfile parse, agree with the project (Ray pin,
entry points, configs, shared storage) and hold the GPUs and CPUs run_gpu_cluster.yaml asks for.
No Ray, no network."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from amr.config import DistillConfig, RunConfig, TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
CONFIGS = ROOT / "jobs" / "configs"
RUN_CONFIG = CONFIGS / "run_gpu_cluster.yaml"
SHARED = "/mnt/shared"
GPU = "nvidia.com/gpu"


def ray_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [m.group(1) for d in deps if (m := re.fullmatch(r"ray\[[\w,]+\]==([\d.]+)", d))]
    return pin


def documents(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def manifest(kind: str) -> dict:
    found = [d for f in sorted((CLUSTER / "kuberay").glob("*.yaml")) for d in documents(f) if d.get("kind") == kind]
    assert len(found) == 1, f"one {kind} expected under cluster/kuberay, found {len(found)}"
    return found[0]


def launcher() -> dict:
    return yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())


def pods(spec: dict) -> list[tuple[str, dict]]:
    """(group name, pod spec) of a RayCluster spec: the head, then every worker group."""
    return [
        ("head", spec["headGroupSpec"]["template"]["spec"]),
        *((g["groupName"], g["template"]["spec"]) for g in spec["workerGroupSpecs"]),
    ]


def gpus(pod: dict) -> int:
    return sum(int(c["resources"].get("limits", {}).get(GPU, 0)) for c in pod["containers"])


def dockerfile() -> list[str]:
    return [line for line in (CLUSTER / "Dockerfile").read_text().splitlines() if line and not line.startswith("#")]


@pytest.mark.timeout(60)
def test_every_yaml_parses():
    files = sorted(CLUSTER.rglob("*.yaml")) + sorted(CLUSTER.rglob("*.yml"))
    assert {f.relative_to(CLUSTER).as_posix() for f in files} >= {
        "ray-cluster.yaml",
        "kuberay/raycluster.yaml",
        "kuberay/rayjob.yaml",
        "kuberay/storage.yaml",
    }
    for f in files:
        docs = documents(f)
        assert docs and all(isinstance(d, dict) for d in docs), f"{f}: expected mappings"
        if f.parent.name == "kuberay":
            assert all({"apiVersion", "kind", "metadata", "spec"} <= d.keys() for d in docs), f


@pytest.mark.timeout(60)
def test_launcher_fits_rays_schema():
    ray_dir = Path(importlib.util.find_spec("ray").submodule_search_locations[0])
    schema = json.loads((ray_dir / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(launcher(), schema)


@pytest.mark.timeout(60)
def test_launcher_head_gpu_and_cpu_groups():
    cfg = launcher()
    types = cfg["available_node_types"]
    head = cfg["head_node_type"]
    assert types[head]["resources"].get("CPU") == 0 and not types[head]["resources"].get("GPU")
    workers = {name: t for name, t in types.items() if name != head}
    gpu = [t for t in workers.values() if t["resources"].get("GPU", 0) > 0]
    assert gpu, "no GPU worker group"
    assert all(t["min_workers"] >= 1 for t in gpu), "the teacher checks for GPUs at start: keep a GPU node up"
    assert any(not t["resources"].get("GPU") and t["resources"].get("CPU", 0) > 0 for t in workers.values())
    assert cfg["max_workers"] >= sum(t["max_workers"] for t in workers.values())
    assert cfg["docker"]["image"].startswith(f"rayproject/ray:{ray_pin()}-") and "gpu" in cfg["docker"]["image"]
    assert f"-v {SHARED}:{SHARED}" in cfg["docker"]["run_options"]
    assert any(f" {SHARED}" in c and "mount" in c for c in cfg["initialization_commands"])


@pytest.mark.timeout(60)
def test_launcher_installs_the_mounted_checkout():
    cfg = launcher()
    (remote,) = [r for r, local in cfg["file_mounts"].items() if local == "."]
    setup = cfg["setup_commands"]
    assert any(f"pip install -q -e '{remote}[gpu,eval]'" in c for c in setup)
    assert any("--no-deps evalplus==" in c for c in setup)


@pytest.mark.timeout(60)
def test_raycluster_groups_and_shared_volume():
    spec = manifest("RayCluster")["spec"]
    assert spec["rayVersion"] == ray_pin()
    assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0"
    assert gpus(spec["headGroupSpec"]["template"]["spec"]) == 0
    groups = spec["workerGroupSpecs"]
    gpu_groups = [g for g in groups if gpus(g["template"]["spec"]) > 0]
    assert gpu_groups, "no GPU worker group"
    for g in gpu_groups:
        assert g["minReplicas"] >= 1, "the teacher checks for GPUs at start: keep a GPU pod up"
        for c in g["template"]["spec"]["containers"]:
            assert c["resources"]["requests"][GPU] == c["resources"]["limits"][GPU]
    assert any(gpus(g["template"]["spec"]) == 0 for g in groups), "no CPU worker group"
    claim = manifest("PersistentVolumeClaim")
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    images = set()
    for name, pod in pods(spec):
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
        }
        for c in pod["containers"]:
            images.add(c["image"])
            mounted = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert claims.get(mounted.get(SHARED)) == claim["metadata"]["name"], f"{name}: {SHARED} not the shared PVC"
    assert len(images) == 1, f"one image for every group: {images}"


@pytest.mark.timeout(60)
def test_rayjob_runs_a_project_job_on_the_same_cluster():
    job = manifest("RayJob")["spec"]
    assert job["shutdownAfterJobFinishes"] is True
    assert job["rayClusterSpec"] == manifest("RayCluster")["spec"]
    argv = shlex.split(job["entrypoint"])
    assert argv[:2] == ["python", "-m"] and argv[2].startswith("jobs.")
    assert (ROOT / (argv[2].replace(".", "/") + ".py")).is_file(), f"no module {argv[2]}"
    assert argv[2] == "jobs.run", "the config below is checked as a RunConfig"
    config = argv[argv.index("--config") + 1]
    assert load_config(RunConfig, ROOT / config).output.startswith(f"{SHARED}/")
    working_dir = yaml.safe_load(job["runtimeEnvYAML"])["working_dir"]
    assert f"WORKDIR {working_dir}" in dockerfile(), "working_dir: the image's checkout"


@pytest.mark.timeout(60)
def test_dockerfile_installs_the_project_on_the_pinned_ray():
    lines = dockerfile()
    assert lines[0] == f"FROM rayproject/ray:{ray_pin()}-py311-gpu"
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {line.split()[-2] for line in lines if line.startswith("COPY")}
    assert {p.rstrip("*") for p in packages} <= copied
    assert any("pip install --no-cache-dir -e '.[gpu,eval]'" in line for line in lines)
    assert any("--no-deps evalplus==" in line for line in lines)
    image = next(c["image"] for _, pod in pods(manifest("RayCluster")["spec"]) for c in pod["containers"])
    assert image.split("/")[-1].startswith("amr-evol:")


@pytest.mark.timeout(60)
def test_run_gpu_cluster_config_and_its_sections_load():
    cfg = load_config(RunConfig, RUN_CONFIG)
    assert cfg.output.startswith(f"{SHARED}/") and cfg.methods == ["direct", "amr"]
    cluster = load_config(DistillConfig, CONFIGS / "gpu_cluster.yaml")
    for section in ("teacher", "input", "ray"):
        assert getattr(cfg.distill, section) == getattr(cluster, section), f"distill.{section}: not gpu_cluster.yaml's"
    assert cfg.distill.teacher.vllm.device == "gpu" and cfg.distill.ray.address == "auto"
    train = load_config(TrainConfig, CONFIGS / "train_gpu.yaml")
    assert cfg.train == train
    assert cfg.eval.datasets == ["humaneval", "mbpp"] and cfg.eval.limit is None and cfg.eval.base
    assert cfg.eval.vllm.device == "gpu"


@pytest.mark.timeout(60)
def test_gpu_groups_hold_what_the_config_asks_for():
    cfg = load_config(RunConfig, RUN_CONFIG)
    spec = manifest("RayCluster")["spec"]
    types = launcher()["available_node_types"]
    node_gpus = {
        "launcher": sum(t["resources"].get("GPU", 0) * t.get("min_workers", 0) for t in types.values()),
        "raycluster": sum(gpus(g["template"]["spec"]) * g["minReplicas"] for g in spec["workerGroupSpecs"]),
    }
    teacher, train, evaluate = cfg.distill.teacher.vllm, cfg.train, cfg.eval.vllm
    for where, have in node_gpus.items():
        assert teacher.concurrency * teacher.tensor_parallel_size <= have, where
        assert train.scaling.workers <= have and train.scaling.use_gpu, where
        assert evaluate.concurrency * evaluate.tensor_parallel_size <= have, where
    assert train.global_batch_size % (train.micro_batch_size * train.scaling.workers) == 0
    worker_cpus = [
        int(c["resources"]["limits"]["cpu"]) for name, pod in pods(spec) if name != "head" for c in pod["containers"]
    ]
    gpu_node_cpus = min(t["resources"]["CPU"] for t in types.values() if t["resources"].get("GPU"))
    assert cfg.distill.sandbox.workers <= max(worker_cpus) and cfg.distill.sandbox.workers <= gpu_node_cpus
    assert train.scaling.cpus_per_worker * train.scaling.workers <= gpu_node_cpus
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]
    assert cfg.eval.scoring.parallel == int(head), "evalplus scoring runs on the head: its CPUs"
