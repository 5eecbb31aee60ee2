"""Preflight: what a job needs, checked against the Ray cluster it runs on before any work starts.

``needs(config)`` reads a job's config (run, distill, train, eval, instructions, teacher) into what it will ask of
the cluster, each need with the config key that asks for it: placements (a teacher's replicas of
``tensor_parallel_size`` GPUs on one ``accelerator_type`` node each, training workers, evaluation engines), storage it
writes, module tables it leases and models it loads. ``ClusterView`` is what the cluster has: its live nodes'
resources (``ray.nodes()``, or the dashboard's state API from outside the cluster) and, where an autoscaler reported
them, the node groups it may scale to. ``run`` runs every check of ``CHECKS`` and raises ``PreflightError`` naming each
failing key and what the cluster has; warnings are logged.

A check is a function ``(needs, context) -> Iterable[Result]`` registered with ``@check(name, attached=...)``.
``attached`` checks run only inside the job's Ray (they start tasks on nodes, write probes or pull models), after the
others passed; the others also run from outside the cluster (``amr submit``, ``amr run --dry-run --address``).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

from amr import lease, model_store, storage
from amr.config import (
    ConfigError,
    DistillConfig,
    EvalConfig,
    InstructionsConfig,
    IsolationConfig,
    RunConfig,
    ServeConfig,
    TeacherConfig,
    TeacherJobConfig,
    TrainConfig,
    VLLMConfig,
)
from amr.methods import method

log = logging.getLogger(__name__)
ACCELERATOR = "accelerator_type:"
"""The prefix of the resource a Ray node advertises its GPU type with (``accelerator_type:H100``)."""


class PreflightError(ConfigError):
    """The job does not fit the cluster it is attached to: each failing config key, and what the cluster has."""


# What a job needs


@dataclass(frozen=True)
class Placement:
    """``count`` bundles of ``gpus`` GPUs and ``cpus`` CPUs, each on one node (of ``accelerator``, when set): a
    tensor-parallel engine replica, a training worker, an embedding actor (a share of a GPU)."""

    what: str
    count: int
    count_key: str
    gpus: float
    size_key: str
    """The key that sizes one bundle (tensor parallelism, a training worker's CPUs)."""
    accelerator: str | None = None
    accelerator_key: str | None = None
    cpus: float = 0
    most: int | None = None
    """Autoscaling: the most bundles it may grow to (``count`` is what it needs to start)."""
    most_key: str | None = None
    group: str | None = None
    """Placements of one group run at once and share the cluster's GPUs (a distillation's teacher replicas and
    embedding actors)."""

    def whole_gpus(self, count: int) -> int:
        """The GPUs ``count`` bundles take: shares of a GPU packed onto as few GPUs as they fit."""
        return math.ceil(count / _per_gpu(self.gpus)) if self.gpus < 1 else math.ceil(count * self.gpus)

    def bundle(self) -> str:
        return f"{self.gpus:g} GPU{'s' if self.gpus > 1 else ''}" + (f" and {self.cpus:g} CPUs" if self.cpus else "")


def _per_gpu(share: float) -> int:
    """Bundles of a ``share`` (below 1) of a GPU that one GPU holds."""
    return math.floor(1 / share + 1e-9)


def _bundles(gpus: float, share: float) -> int:
    """Bundles of ``share`` GPUs each that ``gpus`` free GPUs hold."""
    return math.floor(gpus) * _per_gpu(share) if share < 1 else math.floor(gpus / share)


@dataclass(frozen=True)
class Model:
    ref: str
    store: str | None


@dataclass(frozen=True)
class Needs:
    """What a job asks of the cluster, by config key (the dotted key path of the job's config)."""

    config: BaseModel
    placements: list[Placement] = field(default_factory=list)
    storage: dict[str, str] = field(default_factory=dict)
    """Paths or URIs the job writes."""
    leases: dict[str, str] = field(default_factory=dict)
    """Module tables the job writes under a lease (``amr.lease``)."""
    models: dict[str, Model] = field(default_factory=dict)
    isolation: dict[str, IsolationConfig] = field(default_factory=dict)
    """Where the job runs untrusted code (the teacher's in checks, the student's in scoring): the sandbox settings
    by key."""


def needs(config: BaseModel) -> Needs:
    """What the job of ``config`` needs (a run, distill, train, eval, instructions or teacher job config)."""
    found = Needs(config)
    if isinstance(config, RunConfig):
        out = storage.normalize(config.output)
        found.storage["output"] = out
        if config.students:
            found.storage["students"] = storage.normalize(config.students)
        uses_modules = any(method(m).uses_modules for m in config.methods)
        _distill(found, config.distill, "distill.", uses_modules, modules_default=("output", out))
        if config.instructions is not None:  # with the distill job's teacher and embedding unless set there
            given = config.instructions.model_fields_set
            if "teacher" in given:
                teacher, store = config.instructions.teacher, config.instructions.model_store
                _teacher(found, teacher, store, "instructions.teacher", "instructions.")
            own = "embedding" in given
            _embedding(found, config.instructions if own else config.distill, "instructions." if own else "distill.")
        _train(found, config.train, "train.")
        _engine(found, config.eval.vllm, None, "eval", "evaluation engines")
        found.isolation.update({"distill.sandbox": config.distill.sandbox, "eval.sandbox": config.eval.sandbox})
    elif isinstance(config, DistillConfig):
        uses_modules = method(config.method).uses_modules
        found.storage["run_dir"] = config.run_dir
        found.isolation["sandbox"] = config.sandbox
        _distill(found, config, "", uses_modules, modules_default=("run_dir", storage.join(config.run_dir, "modules")))
    elif isinstance(config, TrainConfig):
        _train(found, config, "")
        found.storage.update({k: getattr(config, k) for k in ("output", "storage_path") if getattr(config, k)})
    elif isinstance(config, EvalConfig):
        found.models["model"] = Model(config.model, config.model_store)
        found.storage["output"] = config.output
        found.isolation["sandbox"] = config.sandbox
        _engine(found, config.vllm, None, "", "evaluation engines")
    elif isinstance(config, InstructionsConfig | TeacherJobConfig):
        _teacher(found, config.teacher, config.model_store, "teacher", "")
        if isinstance(config, InstructionsConfig):
            _embedding(found, config, "")
    else:
        raise TypeError(f"no preflight for {type(config).__name__}")
    return found


def _distill(found: Needs, config: DistillConfig, prefix: str, uses_modules: bool, modules_default: tuple) -> None:
    _teacher(found, config.teacher, config.model_store, f"{prefix}teacher", prefix)
    if config.modules.uri:
        found.storage[f"{prefix}modules.uri"] = config.modules.uri
    if uses_modules:
        _embedding(found, config, prefix)
        key, uri = (f"{prefix}modules.uri", config.modules.uri) if config.modules.uri else modules_default
        found.leases[key] = uri


def _teacher(found: Needs, teacher: TeacherConfig, store: str | None, key: str, job: str) -> None:
    """``job``: the prefix of the job the teacher serves (its group of placements)."""
    if teacher.backend != "vllm" or teacher.serve.app_name:  # a service, or a deployment that is up already
        return
    found.models[f"{key}.model"] = Model(teacher.model, store)
    _engine(found, teacher.vllm, teacher.serve, key, "teacher replicas", job)


def _embedding(found: Needs, config: DistillConfig | InstructionsConfig, prefix: str) -> None:
    """The embedding model, and the embedding actors where they take shares of GPUs (beside the job's teacher)."""
    found.models[f"{prefix}embedding.model"] = Model(config.embedding.model, config.model_store)
    key = f"{prefix}embedding.actors"
    if config.embedding.num_gpus and all(p.count_key != key for p in found.placements):
        found.placements.append(
            Placement(
                what="embedding actors",
                count=config.embedding.actors,
                count_key=key,
                gpus=config.embedding.num_gpus,
                size_key=f"{prefix}embedding.num_gpus",
                cpus=1,
                group=prefix,
            )
        )


def _engine(
    found: Needs, vllm: VLLMConfig, serve: ServeConfig | None, key: str, what: str, group: str | None = None
) -> None:
    """A vLLM deployment on GPUs: replicas of ``tensor_parallel_size`` GPUs on one node each."""
    if vllm.device != "gpu":
        return
    at = f"{key}." if key else ""
    scales = serve is not None and serve.min_replicas is not None
    found.placements.append(
        Placement(
            what=what,
            count=serve.starting_replicas if scales else vllm.concurrency,
            count_key=f"{at}serve.{'initial' if serve.initial_replicas else 'min'}_replicas"
            if scales
            else f"{at}vllm.concurrency",
            gpus=vllm.tensor_parallel_size,
            size_key=f"{at}vllm.tensor_parallel_size",
            accelerator=vllm.accelerator_type,
            accelerator_key=f"{at}vllm.accelerator_type",
            most=serve.max_replicas if scales else None,
            most_key=f"{at}serve.max_replicas" if scales else None,
            group=group,
        )
    )


def _train(found: Needs, config: TrainConfig, prefix: str) -> None:
    found.models[f"{prefix}model"] = Model(config.model, config.model_store)
    scaling = config.scaling
    if scaling.use_gpu:
        found.placements.append(
            Placement(
                what="training workers",
                count=scaling.workers,
                count_key=f"{prefix}scaling.workers",
                gpus=1,
                size_key=f"{prefix}scaling.cpus_per_worker",
                cpus=scaling.cpus_per_worker,
            )
        )


# What the cluster has


@dataclass(frozen=True)
class Node:
    """A node (``count`` 1), or a node group of ``count`` such nodes at its largest, by its total resources."""

    name: str
    resources: Mapping[str, float]
    count: int = 1

    @property
    def gpus(self) -> int:
        return int(self.resources.get("GPU", 0))

    @property
    def accelerators(self) -> set[str]:
        return {k.removeprefix(ACCELERATOR) for k in self.resources if k.startswith(ACCELERATOR)}

    def holds(self, need: Placement) -> int:
        """How many of ``need``'s bundles one such node holds."""
        if need.accelerator and need.accelerator not in self.accelerators:
            return 0
        room = [_bundles(self.resources.get("GPU", 0), need.gpus)] if need.gpus else []
        room += [self.resources.get("CPU", 0) // need.cpus] if need.cpus else []
        return int(min(room)) if room else 0

    def describe(self) -> str:
        kind = "/".join(sorted(self.accelerators)) or ("GPUs of no advertised type" if self.gpus else "")
        gpus = f"{self.gpus} {kind}" if self.gpus else "no GPUs"
        return f"{self.count} x ({gpus}, {self.resources.get('CPU', 0):g} CPUs)"


@dataclass(frozen=True)
class ClusterView:
    """A cluster's live nodes and, when its autoscaler reported them, its node groups at their largest."""

    nodes: tuple[Node, ...]
    groups: tuple[Node, ...] = ()
    source: str = "the Ray cluster"

    @classmethod
    def attached(cls) -> ClusterView:
        """The cluster this process's Ray is attached to (``ray.nodes()``, the autoscaler's config in the GCS)."""
        from amr.runtime import alive_nodes

        nodes = tuple(Node(n["NodeManagerAddress"], n["Resources"]) for n in alive_nodes())
        return cls(_merged(nodes), _node_groups(), "this Ray cluster")

    @classmethod
    def from_dashboard(cls, address: str) -> ClusterView:
        """A cluster seen through its dashboard (``http://HEAD:8265``): its live nodes; node groups that the
        autoscaler may add are not visible from there."""
        from ray.util.state import list_nodes
        from ray.util.state.exception import RayStateApiException

        try:
            found = list_nodes(
                address=address, filters=[("state", "=", "ALIVE")], detail=True, raise_on_missing_output=False
            )
        except RayStateApiException as exc:
            raise ConnectionError(
                f"{address or 'RAY_ADDRESS'}: the cluster's dashboard does not answer ({exc})"
            ) from None
        nodes = tuple(Node(n.node_ip, n.resources_total) for n in found)
        return cls(_merged(nodes), (), f"the Ray cluster at {address}")

    def holds(self, need: Placement, beside: int = 0) -> tuple[int, int]:
        """Bundles of ``need`` the cluster holds now, and at its largest (its node groups, when known), with
        ``beside`` of its GPUs taken by the placements that run at the same time."""
        now = sum(n.holds(need) * n.count for n in self.nodes)
        largest = max(now, sum(g.holds(need) * g.count for g in self.groups))
        if not beside:
            return now, largest
        gpus = sum(n.gpus * n.count for n in self.nodes)
        most_gpus = max(gpus, sum(g.gpus * g.count for g in self.groups))
        return min(now, _bundles(max(0, gpus - beside), need.gpus)), min(
            largest, _bundles(max(0, most_gpus - beside), need.gpus)
        )

    def describe(self) -> str:
        count = sum(n.count for n in self.nodes)
        text = f"{self.source} has {count} node{'s' if count != 1 else ''}: " + ", ".join(
            n.describe() for n in self.nodes
        )
        if self.groups:
            text += "; its node groups at their largest: " + ", ".join(f"{g.name} {g.describe()}" for g in self.groups)
        return text


def _merged(nodes: Iterable[Node]) -> tuple[Node, ...]:
    """Nodes with the same resources as one entry with their count (a short description of a large cluster)."""
    counted = Counter(tuple(sorted((k, v) for k, v in n.resources.items() if _kept(k))) for n in nodes)
    return tuple(Node("nodes", dict(resources), count) for resources, count in counted.items())


def _kept(resource: str) -> bool:
    """Resources that say what a node is (not Ray's per-node ones: ``node:IP``, memory, object store)."""
    return not resource.startswith("node:") and resource not in ("memory", "object_store_memory")


def _node_groups() -> tuple[Node, ...]:
    """The node groups the autoscaler reported to the GCS (their resources, the most nodes of each); none without
    an autoscaler. Ray 2.60's own reader of it (``ray._private.state``), as Ray Data's autoscaler uses it."""
    from ray._private.state import state

    config = state.get_cluster_config()
    if config is None:
        return ()
    return tuple(
        Node(g.name, dict(g.resources), g.max_count if g.max_count >= 0 else 10**6)
        for g in config.node_group_configs
        if g.max_count
    )


# The checks


Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Result:
    """One finding of a check: ``fail`` stops the job, ``warn`` is logged, ``ok`` says what was found."""

    check: str
    status: Status
    message: str
    """Starts with the config key it is about, and says what the cluster has."""


@dataclass(frozen=True)
class Context:
    cluster: ClusterView
    attached: bool
    """This process is attached to the job's Ray: checks may start tasks on its nodes."""
    pull: bool
    """Models named by hub id may be downloaded now (not in a dry run)."""


CheckFn = Callable[[Needs, Context], Iterable[tuple[Status, str]]]


@dataclass(frozen=True)
class Check:
    name: str
    fn: CheckFn
    attached: bool


CHECKS: list[Check] = []
"""Every check, in the order they run."""


def check(name: str, attached: bool = False) -> Callable[[CheckFn], CheckFn]:
    """Register a check: ``fn(needs, context)`` yields ``(status, message)`` pairs (``"fail"``, ``"warn"`` or
    ``"ok"``; the message starts with the config key). ``attached``: it needs the job's Ray (tasks on nodes, writes,
    downloads) and runs after the others passed, never from outside the cluster."""

    def register(fn: CheckFn) -> CheckFn:
        CHECKS.append(Check(name, fn, attached))
        return fn

    return register


@check("accelerators")
def accelerators(needs: Needs, ctx: Context) -> Iterator[tuple[Status, str]]:
    """Every accelerator type a placement pins is advertised by a node or a node group."""
    have = set().union(*(n.accelerators for n in (*ctx.cluster.nodes, *ctx.cluster.groups)))
    for need in needs.placements:
        if not need.accelerator:
            continue
        if need.accelerator in have:
            yield "ok", f"{need.accelerator_key}: {need.accelerator} nodes found"
        else:
            yield (
                "fail",
                f"{need.accelerator_key}: {need.accelerator}, but no node advertises {ACCELERATOR}{need.accelerator}: "
                f"{ctx.cluster.describe()}",
            )


@check("placement")
def placement(needs: Needs, ctx: Context) -> Iterator[tuple[Status, str]]:
    """Each placement's bundles fit: one bundle on one node, as many as it needs to start, now or once the node
    groups have scaled up, beside the GPUs the placements of its group take at the same time (those at their start);
    more than its autoscaling maximum fits is a warning."""
    have = ctx.cluster
    for need in needs.placements:
        if need.accelerator and not any(need.accelerator in n.accelerators for n in (*have.nodes, *have.groups)):
            continue  # named by the accelerator check
        others = [p for p in needs.placements if p.group is not None and p.group == need.group and p is not need]
        taken = sum(p.whole_gpus(p.count) for p in others)
        beside = "".join(
            f", beside the {p.what} ({p.count_key} {p.count} x {p.size_key} {p.gpus:g}: "
            f"{p.whole_gpus(p.count)} GPU{'s' if p.whole_gpus(p.count) > 1 else ''})"
            for p in others
        )
        bundle, on = need.bundle(), f" on one {need.accelerator} node" if need.accelerator else " on one node"
        now, largest = have.holds(need, taken if need.gpus else 0)
        if have.holds(need)[1] == 0:
            yield (
                "fail",
                f"{need.size_key}: {need.what} need {bundle} each{on}, and no node holds that: {have.describe()}",
            )
        elif largest < need.count:
            yield (
                "fail",
                f"{need.count_key}: {need.count} {need.what} of {bundle} each{on} (sized by {need.size_key}){beside}, "
                f"but the cluster holds {largest}: {have.describe()}",
            )
        else:
            scaled = "" if now >= need.count else f" once its node groups scale up (now {now})"
            yield "ok", f"{need.count_key}: {need.count} {need.what} of {bundle} fit{scaled}{beside}"
            if need.most and largest < need.most:
                yield (
                    "warn",
                    f"{need.most_key}: {need.most} {need.what}, but at most {largest} fit{beside}: {have.describe()}",
                )


@check("leases")
def leases(needs: Needs, ctx: Context) -> Iterator[tuple[Status, str]]:
    """Every module table is where the lease can take conditional writes."""
    for key, uri in needs.leases.items():
        try:
            lease.supported(uri)
        except lease.LeaseError as exc:
            yield "fail", f"{key}: {exc}"
        else:
            yield "ok", f"{key}: {uri}: the module table's lease works there"


@check("isolation")
def isolation(needs: Needs, ctx: Context) -> Iterator[tuple[Status, str]]:
    """On a cluster, untrusted code runs under bwrap (unless a key gives that up) and on the nodes that offer the
    sandbox resource (``amr.sandbox.cluster``); from outside the cluster, the nodes up now."""
    from amr.runtime import on_cluster
    from amr.sandbox.cluster import placement, required_level

    cluster = not ctx.attached or on_cluster()
    nodes = [{"NodeID": n.name, "Resources": n.resources} for n in ctx.cluster.nodes for _ in range(n.count)]
    for key, config in needs.isolation.items():
        try:
            level = required_level(config, cluster, key)
            where = placement(config, None, nodes, key)
        except ConfigError as exc:
            yield "fail", str(exc)
            continue
        on = f"{len(where.nodes)} node(s) that offer {config.resource!r}" if "resources" in where.options else "CPUs"
        yield "ok", f"{key}: untrusted code runs at isolation {level} or stronger, on {on}"


@check("isolation on the nodes", attached=True)
def isolation_on_nodes(needs: Needs, ctx: Context) -> Iterator[tuple[Status, str]]:
    """On a cluster, every node that will run untrusted code makes a sandbox at the level the job requires: a
    check in a sandbox of each; what each node reaches, and why not bwrap."""
    from amr.runtime import on_cluster
    from amr.sandbox import LEVELS
    from amr.sandbox.cluster import isolation_on_nodes as probe
    from amr.sandbox.cluster import required_level

    if not on_cluster():
        return
    seen: dict[str, list] = {}
    for key, config in needs.isolation.items():
        want = required_level(config, True, key)
        where = seen.setdefault(config.model_dump_json(), probe(config))
        for node in where:
            if node.level is None or LEVELS.index(node.level) < LEVELS.index(want):
                found = f"reaches {node.level}" if node.level else "makes no sandbox"
                yield "fail", f"{key}.require: {want}, but node {node.address} {found}: {node.detail}"
            else:
                yield "ok", f"{key}: node {node.address} runs untrusted code under {node.level}"


@check("storage", attached=True)
def writable(needs: Needs, ctx: Context) -> Iterator[tuple[Status, str]]:
    """Every path the job writes takes a write (a probe file, removed), and on several nodes every node sees it."""
    from amr.runtime import require_shared_storage

    for key, path in needs.storage.items():
        probe = storage.join(path, f".amr-preflight-{uuid.uuid4().hex[:12]}")
        try:
            storage.write_bytes(probe, b"")
            storage.remove(probe)
        except OSError as exc:
            yield "fail", f"{key}: {path} cannot be written: {exc}"
            continue
        try:
            require_shared_storage({key: path})
        except ConfigError as exc:
            yield "fail", str(exc)
        else:
            yield "ok", f"{key}: {path} is writable"


@check("models", attached=True)
def models(needs: Needs, ctx: Context) -> Iterator[tuple[Status, str]]:
    """Every model reference resolves to files every node sees: registry names pulled, local directories present,
    hub ids pulled into the Hugging Face cache now (once, for every job that names them)."""
    from amr.runtime import unseen

    found: dict[str, str] = {}
    for key, model in needs.models.items():
        try:
            if model_store.is_hub_id(model.ref) and ctx.pull:
                found[key] = str(model_store.pull_hub(model.ref))
            else:
                found[key] = model_store.resolve(model.ref, model.store)
        except model_store.ModelError as exc:
            if model_store.is_hub_id(model.ref):  # a dry run: pulled when the job starts
                yield "warn", f"{key}: {model.ref} is not in the Hugging Face cache yet; the job pulls it at start"
            else:
                yield "fail", f"{key}: {exc}"
    several = sum(n.count for n in ctx.cluster.nodes) > 1
    blind = unseen(sorted(set(found.values()))) if found and several else {}
    for key, path in found.items():
        if nodes := blind.get(path):
            yield (
                "fail",
                f"{key}: {needs.models[key].ref} is at {path}, which {nodes[0]} cannot see: put the model store or "
                "HF_HOME on storage every node mounts at the same path",
            )
        else:
            yield "ok", f"{key}: {needs.models[key].ref} at {path}"


# Running them


def evaluate(needs: Needs, ctx: Context) -> list[Result]:
    """Every check that applies (attached ones only when attached, and once the others passed)."""
    results: list[Result] = []
    for attached in (False, True):
        if attached and (not ctx.attached or any(r.status == "fail" for r in results)):
            break
        for c in CHECKS:
            if c.attached == attached:
                results.extend(Result(c.name, status, message) for status, message in c.fn(needs, ctx))
    return results


def run(config: BaseModel, cluster: ClusterView | None = None, *, pull: bool = True) -> list[Result]:
    """Check the job of ``config`` against ``cluster`` (default: the Ray this process is attached to, where the
    attached checks run too); log the warnings, raise ``PreflightError`` with every failure; the results."""
    began = time.perf_counter()
    ctx = Context(cluster or ClusterView.attached(), attached=cluster is None, pull=pull)
    results = evaluate(needs(config), ctx)
    for r in results:
        if r.status == "warn":
            log.warning("preflight: %s", r.message)
    failed = [r.message for r in results if r.status == "fail"]
    if failed:
        raise PreflightError("preflight: the job does not fit the cluster:\n  " + "\n  ".join(failed))
    log.info("preflight: %d checks passed in %.1f s (%s)", len(results), time.perf_counter() - began, _counts(results))
    return results


def against(config: BaseModel, address: str) -> list[Result]:
    """``run`` without downloads for a dry run, against the cluster at ``address``: through its dashboard
    (``http://HEAD:8265``: the checks that need no attachment), or joined as a driver (a Ray address)."""
    if address.startswith(("http://", "https://")):
        return run(config, ClusterView.from_dashboard(address), pull=False)
    from amr.config import RayConfig
    from amr.runtime import init_ray

    init_ray(RayConfig(address=address))
    return run(config, pull=False)


def _counts(results: list[Result]) -> str:
    return ", ".join(f"{name} {n}" for name, n in Counter(r.check for r in results).items()) or "nothing to check"


def describe(results: list[Result]) -> list[str]:
    """One line per result, for a dry run's output."""
    return [f"{r.status:4}  {r.check}: {r.message}" for r in results]
