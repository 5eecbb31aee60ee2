"""A simulated GPU cluster: the shipped cluster config's distill job on a local multi-node Ray cluster of fake GPUs,
its teacher's engines replaced by a model of vLLM on those GPUs, and how busy it keeps them.

    python bench/sim_cluster.py --config jobs/configs/run_gpu_cluster.yaml --nodes 4 --gpus-per-node 8 \\
        --accelerator H100 --instructions 20000 --json bench/results/sim_cluster.json [--time-scale 1]

The cluster: a head node without CPUs for tasks (as ``cluster/ray-cluster.yaml``'s) and ``--nodes`` raylets on this
machine, each advertising ``--gpus-per-node`` GPUs, ``accelerator_type:<accelerator>`` and ``--cpus-per-node`` CPUs
(Ray schedules by these numbers only). The job: ``amr.pipelines.distill.run`` with the config's distill section
(a run config's ``distill``), method ``--method`` (the paper's ``amr``), on ``--instructions`` synthesized MBPP-like
instructions (``bench.scripted.instructions``: an MBPP train problem under ``Task i.``, with a test), in a run
directory under ``--work-dir``. Its teacher deployment is the one ``amr.serving`` builds from the config (replicas,
tensor-parallel placement groups on the accelerator type, routing, request path), with the engine of each replica
``bench.simcluster.engine.ModelledEngine`` (Ray Serve LLM's engine-class setting): continuous batching over
``max_num_seqs`` at rates derived from published vLLM figures (``bench.simcluster.rates``), answer lengths recorded
from the local teacher (``bench.simcluster.lengths``), answers from ``bench.scripted``.

What is modelled, and how (also in the JSON's ``modelled``):

- the engines: continuous batching over ``max_num_seqs`` at rates from published vLLM figures
  (``bench.simcluster.rates``), each engine ``--engine-start-s`` to start (its GPUs held, nothing served); the model's
  config.json alone in a Hugging Face cache (``HF_HOME``) where the cluster's shared cache would hold the model.
- time: the engines run ``--time-scale`` (k) times faster than the wall clock; everything else runs at its real
  speed on this machine's 2 cores. A second of CPU-side work (the driver, Ray Data, Serve's routing and autoscaling
  loop, LanceDB) is k seconds of the engines' time: it appears k times slower than it is here, and here is 2 cores for
  what the cluster spreads over its nodes' CPUs. Where the job waits on its CPU side, the GPU figures are therefore
  lower than on a cluster; ``machine_cpu_busy`` near 1 says the CPU side was a limit. Simulated seconds are k x wall.
  The default, k = 1, is where these 2 cores keep pace with the 4 starting replicas (docs/benchmarks.md): a request's
  path (replica, client actor, Ray Data task, router) costs ~10 ms of CPU here, and 512 slots take ~85 requests a
  simulated second in the direct stage: 0.85 of a core at k = 1, 3.4 cores at k = 4 (where the CPUs were busy 0.89 of
  the job, and the occupancy measured this machine).
- embeddings: the job's own embedding actors (``embedding.actors``, placed as configured) with a model whose vectors
  are hashes of the texts and whose cost is the configured model's: its published GPU rate for actors on GPUs, else
  measured here on one CPU thread once the preflight passed (``bench.simcluster.embedding``).
- the sandbox: the job's own sandbox actors (one per sandbox node, ``sandbox.workers`` checks at once) run each check
  in their process for its verdict (the code is the scripted answers') and hold a worker for what a check costs the real
  bwrap sandbox, measured here at start (``bench.simcluster.sandbox``): on 2 cores the real one would take ~5
  minutes of CPU for the 60,000 checks of 20,000 instructions, which the cluster spreads over its sandbox nodes
  (``--sandbox-nodes`` of ``--sandbox-units`` each: the shipped KubeRay group keeps one of 16 up).
- the cluster: all its nodes are there from the start (no node autoscaling, no provisioning time), without Ray's
  observability (``HEAD_OPTIONS``: dashboard, log monitor, metrics, task events), with ``IDLE_WORKERS_PER_NODE`` idle
  workers kept a node (every node's workers share this machine's memory), and the replicas' health checks
  are given ``HEALTH_CHECK_TIMEOUT_S`` (replicas that start starve the running ones of these 2 cores).
- everything else is the real job: the preflight, Ray Data stages, the driver's waves, LanceDB, Parquet, the Serve
  deployment (replicas, placement groups, autoscaling, routing, the replicas' own request handling).

It writes ``slot_occupancy`` (the engines' slots busy over the distill, 0-1), ``gpu_idle_fraction`` (the share of
the engines' time with nothing to do), ``seconds_per_instruction`` (simulated), ``preflight`` ("ok" or the error),
the same per step of the job (``stages``), what was modelled, and where this machine's CPU time went during the job
(``cpu_seconds_by_part``: the driver, each Ray actor class and task, the raylets). It exits non-zero, printing the error, when the
preflight fails, and when the job did not do its work (no module inserted, no answer evolved, a wrong dataset).
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the repo root: bench.* (also for the cluster's workers, through PYTHONPATH)
# The simulated cluster runs without token authentication (all its processes are this machine's). Ray reads the mode
# once, when it is imported: set later, a RAY_AUTH_MODE=token inherited from the parent (a test process that started a
# local Ray) left this driver requiring a token that its cluster's raylets never send, and the first task that
# fetched an argument from the driver failed with an OwnerDiedError.
os.environ["RAY_AUTH_MODE"] = "disabled"
# Serve's router in this driver (the job's handle) pushes its metrics every few seconds, also after ray.shutdown(): its
# Ray call would connect this process to the cluster again (Ray's auto-init, read at import too), and the cluster then
# refuses to remove its head node ("Removing a node that is connected to this Ray client is not allowed").
os.environ["RAY_ENABLE_AUTO_CONNECT"] = "0"
HEALTH_CHECK_TIMEOUT_S = 60
"""Seconds a replica has to answer Serve's health check (Ray Serve LLM's default: 10). Replicas that start load this
machine's 2 cores (~10 s of CPU each, importing vLLM): with the 10 s default, the running replicas missed three checks
in a row while the deployment scaled up, and Serve replaced 3 of the 4 that served (b4aa55f, 5,000 instructions: one
replica served most of the decompose stage). On a cluster a replica starts on its own node's CPUs."""
# read when Ray Serve LLM is imported (by this driver, which builds the deployment)
os.environ["RAY_SERVE_LLM_DEFAULT_HEALTH_CHECK_TIMEOUT_S"] = str(HEALTH_CHECK_TIMEOUT_S)

from amr.config import ConfigError, DistillConfig, RunConfig, load_config  # noqa: E402
from bench.scripted import write_instructions  # noqa: E402
from bench.simcluster import ENGINE_START_S, SANDBOX_CHECK_S, STATS_DIR, TIME_SCALE, sandbox  # noqa: E402
from bench.simcluster.rates import CONFIGS, Rates  # noqa: E402

RAY_VERSION = "2.60.0"
"""The Ray whose LLMServer and engine protocol the modelled engine was written against."""
ENGINE_CLASS = "bench.simcluster.engine.ModelledEngine"
OBJECT_STORE_BYTES = 1 << 30
"""Each node's object store (Ray's default, 30% of the memory, would be the machine's memory once per node)."""
IDLE_WORKERS_PER_NODE = 4
"""Idle Ray workers each node keeps for its next tasks (Ray's default: one a CPU). Every simulated node's workers live
in this one machine's 24 GiB: the 20,000-instruction runs kept 69 idle workers of ~206 MB each (14.2 GB) beside the
chain's 60 teacher-call tasks, and Ray's memory monitor killed the job (docs/benchmarks.md). A cluster's node keeps its
own idle workers in its own memory."""
HEAD_OPTIONS = {
    "include_dashboard": False,
    "include_log_monitor": False,
    "_system_config": {
        "enable_metrics_collection": False,
        "task_events_report_interval_ms": 0,
        "num_workers_soft_limit": IDLE_WORKERS_PER_NODE,
    },
}
"""Ray's observability left out of the simulated cluster: the dashboard, the log monitor (it tails every worker's log
for the driver's terminal), the workers' metrics and task events (which each node's dashboard agent and the GCS take
in). The job reads none of them; a cluster runs them on its nodes' own CPUs, the simulated one on this machine's 2
cores (~110 s of CPU in a 5,000-instruction run: dashboard agents 39, log monitor 32, the dashboard 15, their share of
the raylets' and GCS's)."""


def distill_config(path: str, overrides: list[str]) -> DistillConfig:
    """The distill job of a config file: a run config's ``distill`` section, or a distill config."""
    try:
        return load_config(RunConfig, path, [f"distill.{o}" for o in overrides]).distill
    except ConfigError:
        return load_config(DistillConfig, path, overrides)


@contextmanager
def cluster(
    nodes: int, gpus: int, cpus: int, accelerator: str, head_cpus: int, sandbox_nodes: int, sandbox_units: int
) -> Iterator[Any]:
    """A local Ray cluster of a head, ``nodes`` GPU nodes and ``sandbox_nodes`` nodes that offer only the
    ``sandbox`` resource, as cluster/'s sandbox group (raylets on this machine)."""
    from ray.cluster_utils import Cluster

    from amr.config import SandboxConfig

    store = {"object_store_memory": OBJECT_STORE_BYTES}
    head = {"num_cpus": head_cpus, "num_gpus": 0, **store, **HEAD_OPTIONS}
    sim = Cluster(initialize_head=True, head_node_args=head)
    try:
        for _ in range(nodes):
            sim.add_node(num_cpus=cpus, num_gpus=gpus, resources={f"accelerator_type:{accelerator}": 1}, **store)
        for _ in range(sandbox_nodes):
            sim.add_node(num_cpus=0, num_gpus=0, resources={SandboxConfig().resource: sandbox_units}, **store)
        sim.wait_for_nodes()
        yield sim
    finally:
        import ray

        ray.shutdown()
        sim.shutdown()


def preflight(config: DistillConfig) -> str:
    """The job's preflight (``amr.preflight``, which ``distill.run`` also runs first) against the simulated cluster:
    "ok", or the error that stops the job."""
    from amr import preflight as checks

    try:
        checks.run(config)
    except checks.PreflightError as exc:
        return str(exc)
    return "ok"


def hub_cache(folder: Path, model: str) -> Path:
    """A Hugging Face cache that holds ``model``'s config.json alone, as the cluster's shared cache would hold the model
    (``HF_HOME``): the preflight finds it pulled, and the modelled engine needs no weights."""
    repo = folder / "hub" / f"models--{model.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "config.json").write_text(json.dumps(CONFIGS[model], indent=1))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text("0" * 40)
    return folder


class Clock:
    """Simulated seconds (the engines' clock: k x the wall clock), and the windows of the job's steps."""

    def __init__(self, scale: float):
        self.scale = scale
        self.windows: list[tuple[str, float, float]] = []

    def now(self) -> float:
        return self.scale * time.time()

    def timed(self, name: str, step: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            began = self.now()
            try:
                return step(*args, **kwargs)
            finally:
                self.windows.append((name, began, self.now()))

        return run


@contextmanager
def modelled_sandbox() -> Iterator[None]:
    """The job's sandbox actors are ``bench.simcluster.sandbox.ModelledSandboxActor`` meanwhile."""
    from amr.sandbox import stage

    real, stage._SandboxActor = stage._SandboxActor, sandbox.ModelledSandboxActor
    try:
        yield
    finally:
        stage._SandboxActor = real


@contextmanager
def timed_steps(clock: Clock) -> Iterator[None]:
    """The distill job's steps (``STEPS``, and the dataset at the end) timed on ``clock``."""
    from amr.pipelines import distill

    steps, dataset = dict(distill.STEPS), distill._dataset
    distill.STEPS.update({name: clock.timed(name, step) for name, step in steps.items()})
    distill._dataset = clock.timed("dataset", dataset)
    try:
        yield
    finally:
        distill.STEPS.update(steps)
        distill._dataset = dataset


class Engines:
    """The engines' counters (``$AMR_SIM_STATS_DIR/*.jsonl``, one file an engine, from its start to its end),
    cumulative, read over any window of simulated time: an engine counts from its start (loading included) to its
    end, so replicas the deployment adds or removes count while they exist."""

    def __init__(self, folder: Path):
        series = [
            [json.loads(x) for x in p.read_text().splitlines() if x.strip()] for p in sorted(folder.glob("*.jsonl"))
        ]
        self.series = [s for s in series if s]

    @staticmethod
    def _at(lines: list[dict[str, Any]], key: str, t: float) -> float:
        """Counter ``key`` of one engine at time ``t`` (linear between two lines)."""
        times = [x["t"] for x in lines]
        i = bisect.bisect_right(times, t)
        if i == 0:
            return 0.0
        if i == len(lines):
            return lines[-1][key]
        a, b = lines[i - 1], lines[i]
        return a[key] + (b[key] - a[key]) * (t - a["t"]) / (b["t"] - a["t"])

    def window(self, began: float, ended: float) -> dict[str, float | None]:
        """Slot occupancy and idle share of the engines that existed between two simulated times, and how many."""
        alive = busy = idle = slot_s = tokens = 0.0
        for lines in self.series:
            a, b = max(began, lines[0]["t"]), min(ended, lines[-1]["t"])
            if b <= a:
                continue
            alive += b - a
            slot_s += lines[0]["slots"] * (b - a)
            busy += self._at(lines, "busy_slot_s", b) - self._at(lines, "busy_slot_s", a)
            idle += self._at(lines, "idle_s", b) - self._at(lines, "idle_s", a)
            tokens += self._at(lines, "output_tokens", b) - self._at(lines, "output_tokens", a)
        span = ended - began
        return {
            "simulated_s": round(span, 1),
            "slot_occupancy": round(busy / slot_s, 4) if slot_s else None,
            "gpu_idle_fraction": round(idle / alive, 4) if alive else None,
            "replicas_mean": round(alive / span, 2) if span > 0 else None,
            "output_tokens": round(tokens),
        }

    def first_request(self) -> float | None:
        times = [next((x["t"] for x in lines if x["requests"]), None) for lines in self.series]
        return min((t for t in times if t is not None), default=None)

    def totals(self) -> dict[str, Any]:
        last = [lines[-1] for lines in self.series]
        return {
            "replicas_started": len(last),
            "slots_each": last[0]["slots"] if last else None,
            "requests": sum(x["requests"] for x in last),
            "output_tokens": sum(x["output_tokens"] for x in last),
            "prefill_tokens": sum(x["prefill_tokens"] for x in last),
            "kv_peak_tokens": max((x["kv_peak_tokens"] for x in last), default=0),
        }


class Machine:
    """This process's (the driver's) highest RSS and this machine's CPU use, sampled every 0.5 s; and the CPU seconds
    of this process and every process under it (the cluster's raylets, Ray workers, actors), by what each process was
    (``part``) when each second-long interval ended."""

    def __init__(self) -> None:
        self.peak, self.cpu, self.done = 0, [], threading.Event()
        self.by_part: dict[str, float] = {}
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        process = psutil.Process()
        psutil.cpu_percent()
        seen: dict[int, float] = {}
        self._attribute(process, seen, count=False)  # from now on: the job's
        while not self.done.wait(0.5):
            self.peak = max(self.peak, process.memory_info().rss)
            self.cpu.append(psutil.cpu_percent() / 100)
            if len(self.cpu) % 2 == 0:
                self._attribute(process, seen)

    def _attribute(self, process: psutil.Process, seen: dict[int, float], count: bool = True) -> None:
        """Each process's CPU seconds since the last call (a process new since then: all of its), to what it is
        now."""
        for each in [process, *process.children(recursive=True)]:
            try:
                with each.oneshot():
                    times, part = each.cpu_times(), _part(each.cmdline())
            except psutil.Error:  # ended meanwhile
                continue
            used = times.user + times.system
            if count:
                self.by_part[part] = self.by_part.get(part, 0.0) + used - seen.get(each.pid, 0.0)
            seen[each.pid] = used

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds by part, the largest first."""
        return {k: round(v, 1) for k, v in sorted(self.by_part.items(), key=lambda kv: -kv[1]) if v >= 0.5}

    def cpu_busy(self) -> float:
        """The machine's CPUs' mean busy share over the job: near 1, its CPU side may be what holds the engines."""
        return round(sum(self.cpu) / len(self.cpu), 3) if self.cpu else 0.0

    def __enter__(self) -> Machine:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done.set()
        self.thread.join()


def _part(cmdline: list[str]) -> str:
    """What a process is: a Ray worker's title (``ray::ServeReplica:APP:teacher``, ``ray::MapBatches(fn)``, its
    application's hash left out), else its program (the script for Python)."""
    if not cmdline:
        return "?"
    if cmdline[0].startswith("ray::"):
        return re.sub(r"-[0-9a-f]{8,}", "", cmdline[0].split(" ")[0])
    program = Path(cmdline[0]).name
    if program.startswith("python") and len(cmdline) > 1:
        script = next((a for a in cmdline[1:] if not a.startswith("-")), "")
        return "driver" if script.endswith("sim_cluster.py") else Path(script).name or program
    return program


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "amr"], cwd=ROOT, capture_output=True, text=True)
    return head.stdout.strip() + ("+dirty amr/" if dirty.stdout.strip() else "")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    if ray.__version__ != RAY_VERSION:
        sys.exit(
            f"bench/sim_cluster.py: written against ray {RAY_VERSION} (LLMServer's engine class), not {ray.__version__}"
        )
    config = distill_config(args.config, args.set)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="amr-sim-"))
    work.mkdir(parents=True, exist_ok=True)
    stats, scale = work / "engines", args.time_scale
    # before anything imports huggingface_hub, which reads where its cache is once
    os.environ.update({"HF_HOME": str(hub_cache(work / "huggingface", config.teacher.model)), "HF_HUB_OFFLINE": "1"})
    per_check = sandbox.measure(config.sandbox)
    source = write_instructions(work / "instructions.jsonl", args.instructions)
    config = config.model_copy(
        update={
            "method": args.method,
            "run_dir": str(work / "run"),
            "input": config.input.model_copy(update={"source": str(source), "limit": None}),
        }
    )
    os.environ.update(
        {
            "RAYLLM_VLLM_ENGINE_CLS": ENGINE_CLASS,
            TIME_SCALE: str(scale),
            STATS_DIR: str(stats),
            SANDBOX_CHECK_S: str(per_check),
            ENGINE_START_S: str(args.engine_start_s),
            "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        }
    )
    rates = Rates.of(
        config.teacher.model, config.teacher.vllm.accelerator_type, config.teacher.vllm.tensor_parallel_size
    )
    report: dict[str, Any] = {
        "config": args.config,
        "method": args.method,
        "instructions": args.instructions,
        "commit": commit(),
        "work_dir": str(work),
        "cluster": {
            "nodes": args.nodes,
            "gpus_per_node": args.gpus_per_node,
            "accelerator": args.accelerator,
            "cpus_per_node": args.cpus_per_node,
        },
        "time_scale": scale,
        "modelled": {
            "engine": f"{ENGINE_CLASS}: continuous batching over max_num_seqs {config.teacher.vllm.max_num_seqs}, "
            "rates from published vLLM figures (bench/simcluster/rates.py), recorded answer lengths "
            f"(bench/simcluster/lengths.json), scripted answers (bench/scripted.py), {args.engine_start_s:g} s to "
            "start; the model's config.json alone in the Hugging Face cache",
            "rates": rates.describe(),
            "time": f"engines run {scale:g}x the wall clock; every CPU-side part (driver, Ray Data, Serve's routing "
            f"and autoscaling, LanceDB) appears {scale:g}x slower than on these 2 cores: where the job waits on them, "
            "the GPU figures are lower than on a cluster",
            "sandbox": f"the job's sandbox actors ({config.sandbox.workers} workers each), each check run in the "
            f"actor's process for its verdict and holding its worker for the real sandbox's time per check, "
            f"measured here: {1000 * per_check:.2f} ms",
            "cluster": "every node there from the start (no node autoscaling or provisioning time); Ray's "
            "observability left out (no dashboard, log monitor, metrics or task events: the job reads none of them), "
            f"at most {IDLE_WORKERS_PER_NODE} idle workers kept a node (all nodes share this machine's memory), "
            f"and the replicas' health checks given {HEALTH_CHECK_TIMEOUT_S} s (Ray Serve LLM's default 10 s is missed "
            "by running replicas while others start on these 2 cores)",
            "real": "the preflight, Ray Data stages, the driver's waves, LanceDB, Parquet, the Serve deployment "
            "(replicas, placement groups, autoscaling, routing, the replicas' request handling)",
        },
    }
    clock = Clock(scale)
    shape = (args.nodes, args.gpus_per_node, args.cpus_per_node, args.accelerator, 0)
    with cluster(*shape, args.sandbox_nodes, args.sandbox_units) as sim:
        config = config.model_copy(update={"ray": config.ray.model_copy(update={"address": sim.address})})
        ray.init(address=sim.address)
        began = time.perf_counter()
        report["preflight"] = preflight(config)
        report["preflight_s"] = round(time.perf_counter() - began, 1)
        if report["preflight"] != "ok":
            return report
        # the embedding measured once the job can run (the preflight checked the configured model): a failed
        # preflight costs no import of torch and sentence-transformers, no model load
        from amr.pipelines import distill
        from bench.simcluster import embedding

        per_text, dimension, embedding_cost = embedding.cost(config.embedding, config.model_store)
        model = embedding.build(work / "embedding", dimension, per_text, scale)
        config = config.model_copy(
            update={"embedding": config.embedding.model_copy(update={"model": str(model), "trust_remote_code": True})}
        )
        report["modelled"]["embedding"] = (
            f"the job's embedding actors, with vectors from the texts' hashes at {1000 * per_text:.3f} ms a text: "
            f"{embedding_cost}"
        )

        with Machine() as machine, timed_steps(clock), modelled_sandbox():
            began = clock.now()
            manifest = distill.run(config)
            ended = clock.now()
    engines = Engines(stats)
    first = engines.first_request() or began
    report.update(
        {
            "distill_simulated_s": round(ended - began, 1),
            "distill_wall_s": round((ended - began) / scale, 1),
            **{k: v for k, v in engines.window(first, ended).items() if k not in ("output_tokens", "simulated_s")},
            "seconds_per_instruction": round((ended - first) / args.instructions, 4),
            "engines": {**engines.totals(), "kv_capacity_tokens": rates.kv_capacity_tokens()},
            "stages": {name: engines.window(a, b) for name, a, b in clock.windows},
            "job": job_figures(manifest, scale),
            "driver_peak_rss_mib": round(machine.peak / 2**20),
            "machine_cpu_busy": machine.cpu_busy(),
            "cpu_seconds_by_part": machine.cpu_seconds(),
        }
    )
    return report


def job_figures(manifest: dict[str, Any], scale: float) -> dict[str, Any]:
    """What the job made, and its own per-stage and per-wave-step timings (simulated seconds)."""
    stages = manifest["stages"]
    waves = (manifest.get("modules") or {}).get("waves", [])
    steps: dict[str, float] = {}
    for wave in waves:
        for step, seconds in wave.get("seconds", {}).items():
            steps[step] = steps.get(step, 0.0) + seconds * scale
    evolve = stages.get("evolve", {})
    upkeeps = [w["upkeep"] for w in waves if w.get("upkeep")]
    return {
        "stage_simulated_s": {n: round(s["wall_time_s"] * scale, 1) for n, s in stages.items() if "wall_time_s" in s},
        "wave_steps_simulated_s": {k: round(v, 1) for k, v in steps.items()},
        "waves": len(waves),
        "teacher_tokens": {
            n: {"rows": s["rows"], "output_tokens": s["output_tokens"]}
            for n, s in stages.items()
            if "output_tokens" in s
        },
        "evolved": evolve.get("rows", 0) - sum(evolve.get("kept_direct", {}).values()),
        "modules": (manifest.get("modules") or {}).get("rows", 0),
        "table_version": (manifest.get("modules") or {}).get("version"),
        "table_upkeeps": {  # the waves' upkeeps of the module table (amr.ann.refresh), the job's last one not included
            "count": len(upkeeps),
            "btree_indexed_at_rows": [u["indexed"] for u in upkeeps if "indexed" in u],
            "btree_merges": sum(bool(u.get("merged")) for u in upkeeps),
            "fragments_compacted": sum(u.get("compacted", 0) for u in upkeeps),
            "versions_removed": sum(u.get("removed_versions", 0) for u in upkeeps),
            "seconds": round(sum(u["seconds"] for u in upkeeps), 1),
        },
        "dataset_rows": manifest["dataset"]["rows"],
        "response_accuracy": manifest["dataset"]["response_accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a run config (its distill section) or a distill config")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--accelerator", default="H100")
    parser.add_argument("--cpus-per-node", type=int, default=16, help="CPUs each GPU node advertises")
    parser.add_argument("--sandbox-nodes", type=int, default=1, help="nodes of the sandbox group (no CPUs, no GPUs)")
    parser.add_argument("--sandbox-units", type=int, default=16, help="units of the sandbox resource each offers")
    parser.add_argument("--instructions", type=int, default=5000)
    parser.add_argument("--method", default="amr")
    parser.add_argument("--time-scale", type=float, default=1.0, help="engine seconds per wall second (k)")
    parser.add_argument(
        "--engine-start-s", type=float, default=90.0, help="simulated seconds an engine takes to load before it serves"
    )
    parser.add_argument("--work-dir", help="run directory and engine counters (default: a new temporary directory)")
    parser.add_argument("--set", action="append", default=[], help="override a distill config key: key.path=value")
    parser.add_argument("--json", required=True, help="where the report goes")
    args = parser.parse_args()
    report = run(args)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if report["preflight"] != "ok":
        sys.exit(f"bench/sim_cluster.py: preflight failed: {report['preflight']}")
    job = report["job"]
    print(
        f"{args.instructions} instructions on {args.nodes} x {args.gpus_per_node} {args.accelerator}: slot occupancy "
        f"{report['slot_occupancy']}, GPUs idle {report['gpu_idle_fraction']}, {report['seconds_per_instruction']} "
        f"simulated s an instruction ({report['distill_wall_s']} s wall at k={args.time_scale:g}); "
        f"{job['modules']} modules, {job['evolved']} evolved, accuracy {job['response_accuracy']}"
    )
    if not (job["modules"] and job["evolved"] and job["response_accuracy"] == 1.0):
        sys.exit(f"bench/sim_cluster.py: the job did not do its work ({job}); see {report.get('work_dir')}")


if __name__ == "__main__":
    main()
