"""cluster/: the launcher, the KubeRay manifests and the Dockerfile parse, agree with the project (Ray pin,
entry points, configs, shared storage) and with each other (GPU type, GPUs per node, advertised resources), and hold
what the GPU configs ask for (the preflight's checks against each cluster file). No Ray, no network."""

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

from amr import config_show
from amr.config import DistillConfig, IsolationConfig, RunConfig, TrainConfig, load_config
from amr.preflight import ACCELERATOR, ClusterView, Context, Node, evaluate, needs
from amr.training import check_batch

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
CONFIGS = ROOT / "jobs" / "configs"
RUN_CONFIG = CONFIGS / "run_gpu_cluster.yaml"
SHARED = "/mnt/shared"
GPU = "nvidia.com/gpu"
RESOURCE = IsolationConfig().resource


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


def sandbox_resource(group: dict) -> float:
    """The units of the sandbox resource a KubeRay group's pods offer."""
    return advertised(group).get(RESOURCE, 0)


def sandbox_group(spec: dict) -> dict:
    (group,) = [g for g in spec["workerGroupSpecs"] if sandbox_resource(g)]
    return group


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
    assert all(t["min_workers"] >= 1 for t in gpu), "the preflight finds the GPU type on a live node: keep one up"
    assert any(not t["resources"].get("GPU") and t["resources"].get("CPU", 0) > 0 for t in workers.values())
    assert cfg["max_workers"] >= sum(t["max_workers"] for t in workers.values())
    assert cfg["docker"]["image"].startswith(f"rayproject/ray:{ray_pin()}-") and "gpu" in cfg["docker"]["image"]
    for options in ("head_run_options", "worker_run_options"):  # every node but the sandbox nodes
        assert f"-v {SHARED}:{SHARED}" in cfg["docker"][options]
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
        assert g["minReplicas"] >= 1, "the preflight finds the GPU type on a live node: keep one pod up"
        for c in g["template"]["spec"]["containers"]:
            assert c["resources"]["requests"][GPU] == c["resources"]["limits"][GPU]
    assert any(gpus(g["template"]["spec"]) == 0 for g in groups), "no CPU worker group"
    claim = manifest("PersistentVolumeClaim")
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    images = set()
    for name, pod in pods(spec):
        if name == sandbox_group(spec)["groupName"]:
            continue  # mounts nothing: test_sandbox_group_runs_only_checks_and_mounts_nothing
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


INSTANCES = {"p5.48xlarge": ("H100", 8), "p5e.48xlarge": ("H200", 8), "p4de.24xlarge": ("A100", 8)}
"""GPU instance types (AWS) by accelerator and GPUs: what the launcher and the KubeRay node selector ask for."""
GPU_CONFIGS = sorted({*CONFIGS.glob("*gpu*.yaml"), *CONFIGS.glob("paper_table*.yaml")})


def launcher_view() -> ClusterView:
    """The launcher's cluster as the preflight sees it: each node type at its fewest now, at its most scaled up."""
    types = launcher()["available_node_types"]
    head = launcher()["head_node_type"]

    def count(name: str, key: str) -> int:
        return 1 if name == head else types[name][key]

    nodes = tuple(Node(n, t["resources"], count(n, "min_workers")) for n, t in types.items() if count(n, "min_workers"))
    return ClusterView(nodes, tuple(Node(n, t["resources"], count(n, "max_workers")) for n, t in types.items()))


def advertised(group: dict) -> dict[str, float]:
    """What a KubeRay group's Ray node advertises: its rayStartParams, else what Ray detects in the pod."""
    params, (container,) = group["rayStartParams"], group["template"]["spec"]["containers"]
    limits = container["resources"]["limits"]
    found = {
        "CPU": float(params.get("num-cpus", limits["cpu"])),
        "GPU": float(params.get("num-gpus", limits.get(GPU, 0))),
    }
    if "resources" in params:  # a JSON object as a quoted string, as KubeRay passes it to `ray start --resources`
        found.update(json.loads(json.loads(params["resources"])))
    return found


def kuberay_view() -> ClusterView:
    spec = manifest("RayCluster")["spec"]
    head = Node("head", advertised(spec["headGroupSpec"]))
    groups = spec["workerGroupSpecs"]
    nodes = (head, *(Node(g["groupName"], advertised(g), g["minReplicas"]) for g in groups if g["minReplicas"]))
    return ClusterView(nodes, (head, *(Node(g["groupName"], advertised(g), g["maxReplicas"]) for g in groups)))


@pytest.mark.timeout(60)
def test_gpu_nodes_agree_across_the_cluster_files():
    (launched,) = [t for t in launcher()["available_node_types"].values() if t["resources"].get("GPU")]
    accelerator, per_node = INSTANCES[launched["node_config"]["InstanceType"]]
    assert launched["resources"]["GPU"] == per_node
    assert {k for k in launched["resources"] if k.startswith(ACCELERATOR)} == {ACCELERATOR + accelerator}
    (group,) = [g for g in manifest("RayCluster")["spec"]["workerGroupSpecs"] if gpus(g["template"]["spec"])]
    pod = group["template"]["spec"]
    assert INSTANCES[pod["nodeSelector"]["node.kubernetes.io/instance-type"]] == (accelerator, per_node)
    # stated, as the autoscaler plans a pod that does not exist yet from them, and equal to the pod's GPUs
    assert {"num-gpus", "resources"} <= group["rayStartParams"].keys()
    resources = advertised(group)
    assert resources["GPU"] == gpus(pod) == per_node and resources[ACCELERATOR + accelerator] == 1
    assert group["maxReplicas"] == launched["max_workers"] and group["minReplicas"] == launched["min_workers"] >= 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: p.name)
def test_gpu_configs_fit_the_shipped_clusters(path):
    """Accelerator types, GPUs per node, replicas x tensor parallelism: the preflight's checks against the launcher's
    and the KubeRay cluster, at their fewest nodes for what a job needs to start, at their most for its maximum."""
    config = load_config(config_show.JOBS[config_show.guess_job(path)], path)
    for cluster in (launcher_view(), kuberay_view()):
        results = evaluate(needs(config), Context(cluster, attached=False, pull=False))
        assert [r.message for r in results if r.status != "ok"] == []
        assert all(p.count <= sum(n.holds(p) * n.count for n in cluster.nodes) for p in needs(config).placements), (
            "what a job needs to start fits the nodes that are kept up"
        )


@pytest.mark.timeout(60)
def test_the_check_fails_where_the_configs_and_the_cluster_disagree():
    config = load_config(RunConfig, RUN_CONFIG, ["distill.teacher.vllm.accelerator_type=A100"])
    [failed] = [r for r in evaluate(needs(config), Context(kuberay_view(), False, False)) if r.status == "fail"]
    assert failed.message.startswith("distill.teacher.vllm.accelerator_type: A100")


@pytest.mark.timeout(60)
def test_the_cpu_groups_hold_what_the_config_asks_for():
    cfg = load_config(RunConfig, RUN_CONFIG)
    spec = manifest("RayCluster")["spec"]
    types = launcher()["available_node_types"]
    train = cfg.train
    check_batch(train)  # the global batch divides over the workers (auto: derived so that it does)
    sandbox_units = [sandbox_resource(sandbox_group(spec)), *(t["resources"].get(RESOURCE, 0) for t in types.values())]
    assert 0 < cfg.distill.sandbox.workers <= min(u for u in sandbox_units if u)
    assert cfg.eval.scoring.parallel <= min(u for u in sandbox_units if u), "evalplus scoring runs on a sandbox node"


@pytest.mark.timeout(60)
def test_sandbox_group_runs_only_checks_and_mounts_nothing():
    """Untrusted code goes where the sandbox resource is: a group of its own that offers no CPU to other work,
    mounts no volume and no service-account token, and has a default-deny network; both images have bwrap."""
    spec = manifest("RayCluster")["spec"]
    group = sandbox_group(spec)
    assert [g for g in spec["workerGroupSpecs"] if sandbox_resource(g)] == [group], "one sandbox group only"
    assert group["rayStartParams"]["num-cpus"] == "0" and group["minReplicas"] >= 1
    pod = group["template"]["spec"]
    assert gpus(pod) == 0 and pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert "volumes" not in pod and all("volumeMounts" not in c for c in pod["containers"])
    (container,) = pod["containers"]
    assert sandbox_resource(group) == int(container["resources"]["limits"]["cpu"])
    assert container["securityContext"]["allowPrivilegeEscalation"] is False

    policies = [d for d in documents(CLUSTER / "kuberay" / "sandbox-network.yaml") if d["kind"] == "NetworkPolicy"]
    chosen = [p for p in policies if p["spec"]["podSelector"] == {"matchLabels": {"ray.io/group": group["groupName"]}}]
    assert chosen == policies and len(policies) == 2
    deny = [p["spec"] for p in policies if not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny and set(deny[0]["policyTypes"]) == {"Ingress", "Egress"}, "no default-deny policy"
    rules = [rule for p in policies for rule in p["spec"].get("egress", [])]
    assert rules and all("ipBlock" not in peer for rule in rules for peer in rule["to"]), "nothing outside the cluster"
    head = [r for r in rules if any(p["podSelector"]["matchLabels"].get("ray.io/node-type") == "head" for p in r["to"])]
    (head,) = head
    for port in (8265, 10001):  # the dashboard and Job API, Ray Client
        assert not any(r["port"] <= port <= r.get("endPort", r["port"]) for r in head["ports"]), port

    types = launcher()["available_node_types"]
    (node,) = [t for t in types.values() if t["resources"].get(RESOURCE)]
    assert node["resources"]["CPU"] == 0 and not node["resources"].get("GPU") and node["min_workers"] >= 1
    assert node["initialization_commands"] == [], "the sandbox nodes mount no shared file system"
    assert not any(SHARED in option for option in node["docker"]["worker_run_options"])
    assert node["node_config"]["MetadataOptions"] == {"HttpEndpoint": "disabled"}
    assert all(not t["resources"].get(RESOURCE) for t in types.values() if t is not node)
    assert any("apt-get install" in c and "bubblewrap" in c for c in launcher()["setup_commands"])
    assert any("apt-get install" in line and "bubblewrap" in line for line in dockerfile())
