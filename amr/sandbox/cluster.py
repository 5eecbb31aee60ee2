"""Untrusted code on a Ray cluster: the isolation a job requires there, and the nodes its checks run on.

On a cluster (an address joined, or more than one node) checks must run under bwrap: ``require: process``
stops the job unless ``unsafe_process_isolation_on_cluster`` says the user gives that up. Checks run on the
nodes that offer the custom resource ``resource`` (the sandbox group of cluster/: no shared volume, no
service-account token, a default-deny network policy), never on the GPU nodes; a multi-node cluster without
such a node is refused unless ``resource: null``. A single local node runs them on its CPUs, as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from amr.config import ConfigError, IsolationConfig, SandboxConfig
from amr.runtime import alive_nodes


@dataclass(frozen=True)
class Placement:
    """Where a job's check servers go: Ray options for one pool of ``workers`` servers, and the nodes that
    take such pools (their ids)."""

    options: dict[str, Any]
    workers: int
    nodes: list[str]


def required_level(config: IsolationConfig, cluster: bool, key: str = "sandbox") -> str:
    """The weakest isolation level checks may run at; a ConfigError, naming the keys (under ``key``), for a weaker
    one on a cluster."""
    if not cluster:
        return config.require or "process"
    if config.require == "process" and not config.unsafe_process_isolation_on_cluster:
        raise ConfigError(
            f"{key}.require: process on a Ray cluster: untrusted code would reach the nodes' network (the Ray "
            f"dashboard and Job API, the GCS, the cloud metadata service) and files. Use {key}.require: bwrap "
            f"(bubblewrap on the nodes that run checks: cluster/README.md), or set "
            f"{key}.unsafe_process_isolation_on_cluster: true to give that isolation up"
        )
    return config.require or "bwrap"


def placement(
    config: IsolationConfig, workers: int | None, nodes: list[dict[str, Any]] | None = None, key: str = "sandbox"
) -> Placement:
    """Where pools of ``workers`` check servers (None: as many as a sandbox node offers, else this machine's
    CPUs) run among ``nodes`` (``ray.nodes()``'s entries; default: this Ray's live nodes): on the nodes that offer
    ``config.resource``, asking that many units of it, else on CPUs. A ConfigError names the keys under ``key``."""
    nodes = alive_nodes() if nodes is None else nodes
    hosts = [n for n in nodes if config.resource and n["Resources"].get(config.resource, 0) > 0]
    if hosts:
        units = int(min(n["Resources"][config.resource] for n in hosts))
        workers = workers or units
        if workers > units:
            raise ConfigError(
                f"{key}.resource: {workers} checks at once (sandbox.workers; for evalplus, scoring.parallel), but "
                f"the nodes that offer {config.resource!r} have {units} units of it"
            )
        options = {"num_cpus": 0, "resources": {config.resource: workers}}
        return Placement(options, workers, [n["NodeID"] for n in hosts])
    if config.resource and len(nodes) > 1:
        raise ConfigError(
            f"{key}.resource: no node of this {len(nodes)}-node Ray cluster offers the custom resource "
            f"{config.resource!r}, which marks the nodes that run untrusted code (the sandbox group of cluster/). "
            f"Add such nodes, or set {key}.resource: null to run checks on any node's CPUs, the GPU nodes' included"
        )
    workers = workers or os.cpu_count() or 1
    return Placement({"num_cpus": workers}, workers, [n["NodeID"] for n in nodes])


@dataclass(frozen=True)
class NodeIsolation:
    """The isolation a node that runs checks offers: its level (None: none works) and why not bwrap."""

    node: str
    address: str
    level: str | None
    detail: str


def isolation_on_nodes(config: IsolationConfig) -> list[NodeIsolation]:
    """Start a sandbox on every node that will run checks (one server each) and report the level it reached
    and, below bwrap, why. Ray must be running."""
    where = placement(config, 1)
    nodes = {n["NodeID"]: n["NodeManagerAddress"] for n in alive_nodes()}
    reports = ray.get(
        [
            _probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
                config.model_dump()
            )
            for node in where.nodes
        ]
    )
    return [NodeIsolation(node, nodes[node], level, detail) for node, (level, detail) in zip(where.nodes, reports)]


@ray.remote(num_cpus=0, max_retries=0)  # beside a job's pools: it needs no CPU of its own
def _probe(settings: dict[str, Any]) -> tuple[str | None, str]:
    import warnings

    from amr.sandbox.isolation import SandboxError
    from amr.sandbox.pool import Sandbox

    config = SandboxConfig(**{**settings, "require": "process", "workers": 1})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with Sandbox(config) as sandbox:
                [record] = sandbox.run([{"code": "x = 1", "test": "assert x == 1"}])
        except SandboxError as exc:
            return None, str(exc)
    if record["status"] != "passed":
        return None, f"a trivial check {record['status']}: {record['reason']}"
    return record["isolation"], "; ".join(str(w.message) for w in caught)
