"""Starting Ray: a local runtime sized for the LLM stages, or a connection to a cluster; and the check that
a multi-node job's storage is storage every node sees."""

from __future__ import annotations

import importlib
import os
import threading
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

import ray
from ray.util.debug import log_once
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from amr import logs
from amr.config import ConfigError, RayConfig

LOCAL_MIN_CPUS = 8
"""ray.data.llm runs chat-template, tokenize, engine and detokenize actors that each ask for a CPU;
a local Ray gets at least this many logical CPUs so that they all start on a 2-core machine."""


CALLER_CPUS = 0.01
"""CPUs of a Ray Data task that hands its batch to a job-long actor and waits for the answer (the teacher's client,
the embedding and sandbox actors): next to nothing, but not 0, so that Ray places it on a node that offers CPUs. A
node keeps as many idle workers as it has CPUs: a zero-CPU task that lands on the head (which offers none, as
cluster/ configures it) or a sandbox node starts a worker of its own, which exits a second after its task
(bench/sim_cluster.py: 20 of the 60 teacher tasks of a stage, ~1.5 s of CPU each)."""
CALLER_MEMORY = 256 * 1024**2
"""Memory such a task declares: about twice its worker process's own (114-127 MiB USS in `make run`, 2026-12-08), so
that Ray counts the workers a node can hold (a stage's pool of tasks is a worker process each) and Ray Data's memory
check, which warns of tasks that use more than they ask, has nothing to say."""
CALLER_TASK = {"num_cpus": CALLER_CPUS, "memory": CALLER_MEMORY}
"""The Ray remote arguments of a task that calls a job-long actor: ``CALLER_CPUS`` and ``CALLER_MEMORY``."""


_joined: str | None = None
"""The address of the cluster ``init_ray`` joined; None when it started a local Ray (or has not run)."""


def cluster_address(config: RayConfig) -> str | None:
    """The cluster to join: the config's, or the one a job runs in (``ray job submit`` sets RAY_ADDRESS)."""
    return config.address or os.environ.get("RAY_ADDRESS") or None


def on_cluster() -> bool:
    """Whether this process's Ray is a cluster: one joined by address, or one of more than one node."""
    return _joined is not None or len(alive_nodes()) > 1


def init_ray(config: RayConfig, preload: Sequence[str] = ()) -> None:
    """Start or join Ray (once a process), with the workers' output printed through ``amr.logs``. ``preload``: modules
    the job imports next (Ray Serve LLM and vLLM under it, for a teacher deployment: seconds of a small machine's
    start), imported in a thread while Ray starts; an import of them that comes first waits for it to finish."""
    for module in preload:
        threading.Thread(target=importlib.import_module, args=(module,), daemon=True, name=f"import {module}").start()
    global _joined
    if not ray.is_initialized():
        if address := cluster_address(config):
            ray.init(address=address, log_to_driver=True)
            _joined = address
        else:
            _token_auth()
            num_cpus = config.num_cpus or max(LOCAL_MIN_CPUS, os.cpu_count() or 1)
            # "local": a Ray of its own, even where `ray start` left a cluster on this machine (ray.init would join it);
            # its workers (the teacher's engine processes among them) at the driver's priority, not Ray's niceness 15,
            # under which the driver's and any other process's work takes the cores from the engine first
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _system_config={"worker_niceness": 0})
    logs.follow_ray()
    ctx = ray.data.DataContext.get_current()
    # the stages' filters are Python predicates over several columns (a failed call, a parse), on purpose
    warnings.filterwarnings("ignore", message="Use 'expr' instead of 'fn' when possible", category=UserWarning)
    # a stage over fewer rows than its concurrency (a resampling round of the rows still unsolved) runs them all
    warnings.filterwarnings("ignore", message="The maximum number of concurrent tasks for", category=UserWarning)
    ctx.enable_progress_bars = False  # the job's own display (amr.progress) shows its stages
    log_once("ray_data_progress_manager_disabled")  # off on purpose: not worth Ray Data's one-time warning
    # every stage reads the one before it, and Ray 2.60's DataSourceV2 Parquet reader has seconds of fixed
    # cost per read (docs/benchmarks.md, "Reading a stage")
    ctx.use_datasource_v2 = False


def _token_auth() -> None:
    """A new local Ray uses token authentication (Ray 2.60's default, RAY_AUTH_MODE unset); chosen here as
    Ray would, without its warning that it chose it. RAY_AUTH_MODE, when set, decides as before."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import _enable_token_auth
    except ImportError:  # another Ray: its own default, and its warning
        return
    _enable_token_auth()


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """The installed versions of those of ``packages`` that are installed (for a job's provenance)."""
    found = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def spread(actors: list[Any], method: str, items: Sequence[Any]) -> list[Any]:
    """Call ``method`` of each actor on its share of ``items`` (contiguous, even shares), all at once; the results
    of each call, in the items' order."""
    share = -(-len(items) // len(actors))
    calls = [
        getattr(actor, method).remote(list(items[i : i + share]))
        for actor, i in zip(actors, range(0, len(items), share))
    ]
    return ray.get(calls)


@contextmanager
def ordered(preserve: bool = True) -> Iterator[None]:
    """Ray Data keeps rows in input order meanwhile (``preserve``): stages write their files in that order, so the
    driver can read a stage's rows in order (a wave's slice, a sequential filter). ``ordered(False)``: rows pass on
    as they are made, for the datasets made meanwhile."""
    options = ray.data.DataContext.get_current().execution_options
    before, options.preserve_order = options.preserve_order, preserve
    try:
        yield
    finally:
        options.preserve_order = before


def require_shared_storage(paths: dict[str, str | None]) -> None:
    """On a cluster of several nodes, every local path (``field: path``) must be one that every node sees:
    a marker file is written under it here and looked for on each node. Object-store URIs pass as they are."""
    local = {field: path for field, path in paths.items() if path and "://" not in path}
    if len(alive_nodes()) < 2 or not local:
        return
    markers = {}
    for field, path in local.items():
        folder = Path(path).expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True)
        markers[field] = folder / f".amr-shared-{uuid.uuid4().hex[:12]}"
        markers[field].touch()
    try:
        blind = unseen([str(m) for m in markers.values()])
    finally:
        for marker in markers.values():
            marker.unlink(missing_ok=True)
    for (field, path), marker in zip(local.items(), markers.values()):
        if nodes := blind[str(marker)]:
            raise ConfigError(
                f"{field}: {path} is on this node's disk only ({nodes[0]} cannot see it); a job on "
                f"{len(alive_nodes())} nodes needs an object-store URI (s3://, gs://) or a shared filesystem mounted "
                "at the same path on every node"
            )


def alive_nodes() -> list[dict[str, Any]]:
    """The Ray cluster's live nodes (``ray.nodes()``)."""
    return [n for n in ray.nodes() if n["Alive"]]


def unseen(paths: list[str]) -> dict[str, list[str]]:
    """For each local path, the live nodes with CPUs or GPUs that cannot see it (``node ADDRESS, ID``): a task on
    each looks. A node with neither (the sandbox group's, which mounts no shared volume) takes only zero-CPU work:
    the sandbox's checks and the calls of streamed stages to actors, which read and write no job files or models;
    the driver's own node sees what it wrote or resolved."""
    nodes = [n for n in alive_nodes() if n["Resources"].get("CPU") or n["Resources"].get("GPU")]
    seen = ray.get(
        [
            _sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(paths)
            for n in nodes
        ]
    )
    return {
        path: [f"node {n['NodeManagerAddress']}, {n['NodeID'][:12]}" for n, found in zip(nodes, seen) if not found[i]]
        for i, path in enumerate(paths)
    }


@ray.remote(num_cpus=0, max_retries=0)
def _sees(paths: list[str]) -> list[bool]:
    return [os.path.exists(p) for p in paths]


T = TypeVar("T")


@contextmanager
def shared_in_process(open_now: dict[str, T], key: str, opened: Callable[[], AbstractContextManager[T]]) -> Iterator[T]:
    """What ``opened()`` gives, for the ``with`` block, kept in ``open_now`` under ``key`` meanwhile: inside it, a
    nested call with the same key gets the same value instead of opening another (a caller that runs several jobs in
    one process starts a job-long resource once)."""
    if key in open_now:
        yield open_now[key]
        return
    with opened() as value:
        open_now[key] = value
        try:
            yield value
        finally:
            del open_now[key]
