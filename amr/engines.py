"""The teacher: chat requests in, the same rows with responses out, through one engine for the whole job.

A request row has ``id``, ``messages`` (OpenAI chat format) and optionally ``sampling`` (overrides of the
configured sampling parameters). Answers keep the columns named in ``carry`` and add ``response``,
``num_input_tokens``, ``num_output_tokens`` and ``error`` (None on success). A row that fails is recorded
with its error; it never stops the job.

``open_teacher(config)`` gives the job's teacher for as long as the job runs:

- ``backend: vllm``: a Ray Serve LLM deployment (``amr.serving``), started once or attached to;
- ``backend: openai``: any OpenAI-compatible ``/chat/completions`` endpoint (retries, backoff, QPS).

Each has two ways in: ``generate`` for a streamed stage (a Ray Dataset in, one out: Ray Data tasks that hand
their batches to the job's client actors, which call the deployment handle; for ``openai``, ``ray.data.llm``'s
HTTP processor), and ``complete`` for a wave's rows held by the driver (sent at once through the deployment
handle or an HTTP client: no Ray Data pipeline to start per wave).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import pandas as pd
import pyarrow as pa
import ray

from amr.config import TeacherConfig
from amr.model_store import resolve
from amr.runtime import CALLER_TASK, shared_in_process
from amr.serving import (
    EngineError,
    deployment,
    engine_starts,
    max_ongoing_requests,
    replicas,
    vllm_engine_kwargs,
    vllm_env,
)

OUTPUT_COLUMNS = ("response", "num_input_tokens", "num_output_tokens", "error", "faults", "finish")
"""A teacher call's columns. ``faults``: the kind of each failed attempt, in order, joined by ", " ("HTTP 503,
HTTP 503" for a request answered at its third attempt; an error row's last kind is its error's): see
``fault_counts``. ``finish``: why the answer ended: ``stop`` (it was done), ``length`` (cut at max_tokens),
``runaway`` (it repeated itself and was stopped: ``amr.runaway``); None for an error."""
OWN_SAMPLING_KEYS = ("stop_runaway",)
"""Sampling keys of the project's own: the deployment's replicas read them, an OpenAI endpoint is not sent them."""


class Teacher(ABC):
    """A job's teacher: ``generate`` for a streamed stage, ``complete`` for rows held by the driver."""

    def __init__(self, config: TeacherConfig, model: str, batch_size: int):
        self.config = config
        self.model = model
        self.batch_size = batch_size
        """Rows of a streamed stage per call of ``generate``'s tasks."""
        self.defaults = config.sampling.model_dump(exclude_none=True)
        self.sharers = 1
        """Streamed stages asking at once (``shared``), between which ``task_args``' tasks are divided."""

    @contextmanager
    def shared(self, stages: int) -> Iterator[None]:
        """Streamed stages built meanwhile run at once (``amr.pipelines.job.Job.chain``): each takes 1/``stages`` of
        the tasks, so that together they keep one stage's requests in flight (and Ray workers), not ``stages`` times
        that."""
        before, self.sharers = self.sharers, max(1, stages)
        try:
            yield
        finally:
            self.sharers = before

    def _share(self, tasks: int) -> int:
        return max(1, -(-tasks // self.sharers))

    def batched(self, ds: ray.data.Dataset) -> ray.data.Dataset:
        """``ds`` in blocks of at most ``batch_size`` rows (streamed, not shuffled), for ``generate``: a Ray Data task
        takes a whole block and sends its batches one after another, so a stage file read back as one block would
        be one task with one batch in flight, however many tasks ``task_args`` allows."""
        return ds.repartition(target_num_rows_per_block=self.batch_size)

    @abstractmethod
    def generate(self, ds: ray.data.Dataset, carry: Sequence[str] = ("id",)) -> ray.data.Dataset:
        """Add the output columns to a dataset of requests (streamed through Ray Data), in tasks of ``task_args``."""

    @abstractmethod
    def task_args(self) -> dict[str, Any]:
        """The Ray Data task settings (CPUs, memory, task pool) of ``generate``'s calls. A stage's own steps on each row
        before and after them take the same (``amr.stages.ask``), so that Ray Data fuses the three into one task a
        batch: a stage of separate row steps started a worker process for each of up to one task a CPU."""

    def complete(self, requests: Sequence[dict[str, Any]], carry: Sequence[str] = ("id",)) -> list[dict[str, Any]]:
        """Answer requests held by the driver, all in flight together; answers in request order."""
        answers = _run_async(self._answer_all(requests)) if requests else []
        return [{**{k: r.get(k) for k in carry}, **a} for r, a in zip(requests, answers)]

    @abstractmethod
    async def _answer_all(self, requests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The output columns of each request, in order (a failed request: its error)."""

    def state(self) -> dict[str, Any]:
        """What the manifest records about the engine."""
        return {"backend": self.config.backend, "model": self.model}


def messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """A request row's chat messages, role and content only."""
    return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]


def sampling(row: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """A request row's sampling parameters: the configured ``defaults`` with the row's own ``sampling`` over them."""
    overrides = {k: v for k, v in (row.get("sampling") or {}).items() if v is not None}
    return {**defaults, **overrides}


_OPEN: dict[str, Any] = {}
"""The deployments open in this process, by ``engine_key``: nested ``open_teacher`` calls share them."""


@contextmanager
def open_teacher(
    config: TeacherConfig, model_store: str | None = None, while_starting: Callable[[], None] | None = None
) -> Iterator[Teacher]:
    """The job's teacher, for the duration of the ``with`` block (Ray must be initialised for ``vllm``).

    A ``vllm`` teacher whose engine is already open in this process (an enclosing ``open_teacher`` with the same
    model and engine settings; sampling may differ) shares that deployment instead of starting another.
    ``while_starting`` runs while its deployment's replicas start (at once where none starts)."""
    if config.backend == "openai":
        if while_starting:
            while_starting()
        yield OpenAITeacher(config)
        return

    model = config.model if config.serve.app_name else resolve(config.model, model_store)
    key = engine_key(config, model)
    if while_starting and (config.serve.app_name or key in _OPEN):
        while_starting()
    with shared_in_process(_OPEN, key, lambda: _served(config, model, while_starting)) as (served, clients):
        yield ServedTeacher(config, served, clients)


@contextmanager
def open_teachers(configs: Sequence[TeacherConfig], model_store: str | None = None) -> Iterator[list[Teacher]]:
    """Several teachers (of different engines) for the ``with`` block, their deployments started together: each
    one's replicas start while the next one's do, not one engine after the other."""
    with ExitStack() as stack:
        teachers: list[Any] = [None] * len(configs)

        def open_from(i: int) -> None:
            if i < len(configs):
                starting = open_teacher(configs[i], model_store, while_starting=lambda: open_from(i + 1))
                teachers[i] = stack.enter_context(starting)

        open_from(0)
        yield teachers


@contextmanager
def _served(
    config: TeacherConfig, model: str, while_starting: Callable[[], None] | None = None
) -> Iterator[tuple[Any, list[Any]]]:
    """The teacher's deployment and the job's client actors, for the ``with`` block."""
    # the clients start (in the background) before the deployment, whose engine takes longer; Ray Data while it does
    clients = [_Client.remote() for _ in range(config.vllm.concurrency)]

    def starting() -> None:
        if while_starting:
            while_starting()
        _warm_streaming()

    try:
        with deployment(config, model, while_starting=starting) as served:
            yield served, clients
    finally:
        for client in clients:
            ray.kill(client)


def _warm_streaming() -> None:
    """What a process's first streamed stage starts, started while the deployment's replicas start (importing vLLM
    in one process after another, they leave a core of a small machine idle): Ray Data's executor and its actors,
    and a task worker that imports this module, for a one-row dataset."""
    ray.data.from_items([{"id": ""}]).map_batches(_unchanged, batch_format="pyarrow", **CALLER_TASK).take_all()


def _unchanged(batch: pa.Table) -> pa.Table:
    return batch


def engine_key(config: TeacherConfig, model: str) -> str:
    """What makes two teacher configs the same engine: the model, its engine settings and placement (not the
    sampling, which each request carries, nor how requests are batched)."""
    if config.serve.app_name:
        return json.dumps({"attached": config.serve.app_name})
    cfg, serve = config.vllm, config.serve
    return json.dumps(
        {
            "model": model,
            "device": cfg.device,
            "accelerator": cfg.accelerator_type,
            "replicas": [cfg.concurrency, serve.min_replicas, serve.max_replicas, serve.initial_replicas],
            "engine": vllm_engine_kwargs(cfg),
            "env": vllm_env(cfg),
        },
        sort_keys=True,
        default=str,
    )


class ServedTeacher(Teacher):
    """The teacher as a Ray Serve LLM deployment (``amr.serving.Deployment``), reached through its handle: from the
    driver for a wave (``complete``), from the job's client actors for a streamed stage (``generate``)."""

    def __init__(self, config: TeacherConfig, served: Any, clients: list[Any]):
        super().__init__(config, served.model_id, config.vllm.batch_size)
        self.served = served
        self.clients = clients

    def state(self) -> dict[str, Any]:

        return {
            **super().state(),
            "app": self.served.app_name,
            "attached": not self.served.owned,
            "replicas": replicas(self.served.app_name),
            "engine_starts": engine_starts(self.served.app_name),
        }

    def generate(self, ds: ray.data.Dataset, carry: Sequence[str] = ("id",)) -> ray.data.Dataset:
        return ds.map_batches(
            _served_batch,
            batch_format="pyarrow",
            batch_size=self.batch_size,
            **self.task_args(),
            fn_kwargs={
                "clients": self.clients,
                "target": self._target(),
                "carry": tuple(carry),
                "model": self.model,
                "defaults": self.defaults,
            },
        )

    def task_args(self) -> dict[str, Any]:
        return {
            **CALLER_TASK,
            "compute": ray.data.TaskPoolStrategy(size=self._share(self.batches_in_flight())),
        }

    def batches_in_flight(self) -> int:
        """A streamed stage's batches in flight: as many requests as a wave's rows sent at once keep (``window``)."""
        return max(len(self.clients), -(-self.window() // self.batch_size))

    async def _answer_all(self, requests: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return await chat_all(*self._target(), [chat_body(r, self.model, self.defaults) for r in requests])

    def window(self) -> int:
        """Chat requests kept in flight to the deployment: what its replicas take at once (``max_ongoing_requests``:
        each engine's batch and as many waiting in its queue), at the most replicas it may have."""
        serve = self.config.serve
        calls = max_ongoing_requests(self.config) * (serve.max_replicas or self.config.vllm.concurrency)
        return calls * serve.prompts_per_call

    def _target(self) -> Target:
        serve = self.config.serve
        app, name = self.served.app_name, self.served.deployment_name
        return app, name, serve.request_timeout_s, serve.recovery_timeout_s, self.window(), serve.prompts_per_call


def chat_body(row: dict[str, Any], model: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """The deployment's chat request for a request row: its messages, the sampling defaults with its overrides,
    its own ``chat_template`` if it has one. An answer prefilled by a final assistant message is continued, as
    ray.data.llm's chat template stage does."""
    chat = messages(row)
    prefilled = bool(chat) and chat[-1]["role"] == "assistant"
    return {
        "model": model,
        "messages": chat,
        "stream": False,
        "add_generation_prompt": not prefilled,
        "continue_final_message": prefilled,
        **({"chat_template": row["chat_template"]} if row.get("chat_template") else {}),
        **sampling(row, defaults),
    }


Target = tuple[str, str, float | None, float, int, int]
"""Where and how a job's chat requests go: the deployment's application and name, ``request_timeout_s``,
``recovery_timeout_s``, the chat requests in flight at most, and how many one Serve request carries."""


async def chat_all(
    app: str,
    deployment_name: str,
    timeout_s: float | None,
    recovery_s: float,
    window: int,
    per_call: int,
    bodies: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Send chat requests to a deployment through its handle, ``per_call`` in each Serve request
    (``TeacherServer.chat_bodies``), all at once (at most ``window`` chat requests in flight); the output columns of
    each, in order (a failed request: its error). A Serve request whose replica or engine died (the call failed, or one
    of its requests did, with ``REPLICA_LOST``) is sent again while the deployment restarts it, for up to
    ``recovery_s``; any other failure is the error of the requests it hit, at once."""
    from ray import serve

    handle = serve.get_deployment_handle(deployment_name, app)
    slots = asyncio.Semaphore(max(1, window // per_call))

    async def call(group: list[dict[str, Any]]) -> list[dict[str, Any]]:
        lost_since, faults = None, []
        for attempt in itertools.count():
            async with slots:
                try:
                    answers = await asyncio.wait_for(handle.chat_bodies.remote(group), timeout_s)
                except Exception as exc:  # the rows keep the error; the job goes on
                    failure = f"{type(exc).__name__}: {str(exc)[:2000]}"
                    if not _replica_lost(exc):
                        return [_error(failure, [*faults, type(exc).__name__])] * len(group)
                else:  # a request's engine died under it: the whole call goes again
                    dead = [a["exception"] for a in answers if _kind(a) in REPLICA_LOST]
                    if not dead:
                        break
                    failure = dead[0]
                faults.append("replica lost")
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > recovery_s:
                message = f"the teacher's replica did not recover in {recovery_s:.0f} s: {failure}"
                return [_error(message, faults)] * len(group)
            await asyncio.sleep(min(2**attempt, 15))
        return [_answer(answer, faults) for answer in answers]

    groups = [bodies[i : i + per_call] for i in range(0, len(bodies), per_call)]
    return [answer for answers in await asyncio.gather(*(call(g) for g in groups)) for answer in answers]


def _kind(answer: dict[str, Any]) -> str | None:
    """The exception's class name of an answer that is one (``TeacherServer.chat_bodies``), else None."""
    return answer["exception"].split(":", 1)[0] if "exception" in answer else None


def _answer(answer: dict[str, Any], faults: Sequence[str]) -> dict[str, Any]:
    """One chat request's output columns from its answer in a Serve request's (``TeacherServer.chat_bodies``): a
    response body, an error body, or the exception it raised."""
    if kind := _kind(answer):
        return _error(answer["exception"], [*faults, kind])
    return parse_chat_completion(answer, faults)


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)  # a lost node's client restarts elsewhere
class _Client:
    """Sends a streamed stage's requests to the deployment. Job-long: a Ray Data stage of its own (ray.data.llm's
    ServeDeploymentProcessorConfig) starts new actors for every stage, ~10 s each on 2 cores. It sends and receives
    plain dicts (``amr.teacher_server.TeacherServer.chat_bodies``), so it does not import vLLM."""

    async def chat(self, target: Target, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return await chat_all(*target, bodies)


OUTPUT_TYPES = {
    "response": pa.string(),
    "num_input_tokens": pa.int64(),
    "num_output_tokens": pa.int64(),
    "error": pa.string(),
    "faults": pa.string(),
    "finish": pa.string(),
}


def _served_batch(
    batch: pa.Table,
    clients: list[Any],
    target: Target,
    carry: tuple[str, ...],
    model: str,
    defaults: dict[str, Any],
) -> pa.Table:
    bodies = [chat_body(row, model, defaults) for row in batch.to_pylist()]
    answers = ray.get(random.choice(clients).chat.remote(target, bodies))
    out = batch.select(list(carry))
    for column, kind in OUTPUT_TYPES.items():
        out = out.append_column(column, pa.array([a[column] for a in answers], kind))
    return out


REPLICA_LOST = ("EngineDeadError", "DeploymentUnavailableError", "BackPressureError")
"""Failures of a request that a deployment recovers from by itself (a dead engine's replica fails its health
check and is restarted): by class name, so that the driver needs no vLLM."""


def _replica_lost(exc: BaseException) -> bool:
    """Whether a request failed because its replica or engine is gone (not because of the request)."""
    if isinstance(exc, ray.exceptions.RayActorError):  # the replica's actor died (ActorDiedError, unavailable)
        return True
    cause = getattr(exc, "cause", None)  # a RayTaskError carries the replica's own exception
    return any(type(e).__name__ in REPLICA_LOST for e in (exc, cause) if e is not None)


def _run_async(work: Any) -> Any:
    """Run a coroutine to its end on an event loop of its own, whatever loop the caller runs in."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


class OpenAITeacher(Teacher):
    """Any OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(self, config: TeacherConfig):
        super().__init__(config, config.model, config.openai.batch_size)
        cfg = config.openai
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.headers: dict[str, str] = {}
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise EngineError(f"teacher.openai.api_key_env: environment variable {cfg.api_key_env} is not set")
            self.headers["Authorization"] = f"Bearer {key}"

    def _payload(self, row: dict[str, Any]) -> dict[str, Any]:
        chosen = {k: v for k, v in sampling(row, self.defaults).items() if k not in OWN_SAMPLING_KEYS}
        return {"model": self.model, "messages": messages(row), **chosen}

    def generate(self, ds: ray.data.Dataset, carry: Sequence[str] = ("id",)) -> ray.data.Dataset:
        """``concurrency`` Ray Data tasks, each with one request in flight, through the same client (and the same
        retries) as ``complete``."""
        carry = tuple(carry)

        def answer(batch: list[dict[str, Any]] | Any) -> list[dict[str, Any]]:
            rows = batch.to_dict("records")
            answers = asyncio.run(self._answer_all(rows, in_flight=1))
            return pd.DataFrame([{**{k: row[k] for k in carry}, **out} for row, out in zip(rows, answers)])

        return ds.map_batches(answer, batch_size=self.batch_size, batch_format="pandas", **self.task_args())

    def task_args(self) -> dict[str, Any]:
        cfg = self.config.openai
        return {"num_cpus": cfg.worker_cpus, "compute": ray.data.TaskPoolStrategy(size=self._share(cfg.concurrency))}

    async def _answer_all(
        self, requests: Sequence[dict[str, Any]], in_flight: int | None = None
    ) -> list[dict[str, Any]]:
        """Every request answered, ``in_flight`` at a time (default: ``concurrency``). A 429, a 5xx, a body that is
        not a chat completion (an HTML error page, JSON without ``choices``), a dropped connection or a request
        past ``request_timeout_s`` is asked again, up to ``max_retries`` times with exponential backoff; other
        answers (a 4xx: the request itself is wrong) are the row's error. An endpoint that still cannot be
        reached, or still does not answer in time, after the retries stops the job (EngineError)."""
        import aiohttp

        cfg = self.config.openai
        slots = asyncio.Semaphore(in_flight or cfg.concurrency)
        spacing = 1 / (cfg.qps * cfg.concurrency) if cfg.qps else 0.0
        next_start = [time.monotonic()]

        async def paced() -> None:
            """Request starts at most qps x concurrency per second, as many HTTP workers would send them."""
            now = time.monotonic()
            start = next_start[0] = max(now, next_start[0])
            next_start[0] += spacing
            await asyncio.sleep(start - now)

        async def post(session: aiohttp.ClientSession, payload: dict[str, Any]) -> dict[str, Any]:
            faults: list[str] = []
            async with slots:
                for attempt in range(cfg.max_retries + 1):
                    await paced()
                    try:
                        async with session.post(self.url, json=payload, headers=self.headers) as response:
                            text = await response.text()
                            status = f"HTTP {response.status}"
                            if response.status == 429 or response.status >= 500:
                                raise _Retry(status, f"{status}: {text[:500]}", response.headers)
                            body = _json_or_none(text)
                            if response.status == 200 and not (isinstance(body, dict) and body.get("choices")):
                                raise _Retry(
                                    "not a chat completion", f"HTTP 200 without a chat completion: {text[:500]}"
                                )
                            failed = [*faults, status] if response.status != 200 else faults
                            return parse_chat_completion(body if body is not None else text, failed)
                    except (_Retry, aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
                        failure: Exception = exc
                        wait = exc.wait_s if isinstance(exc, _Retry) else None
                        faults.append(exc.kind if isinstance(exc, _Retry) else "connection dropped")
                    except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                        failure, wait = exc, None
                        faults.append("timeout" if isinstance(exc, TimeoutError) else "unreachable")
                        if attempt == cfg.max_retries:
                            raise EngineError(
                                f"teacher.openai.base_url: {self.url} unreachable or not answering in "
                                f"{cfg.request_timeout_s} s after {attempt + 1} attempts: "
                                f"{type(exc).__name__}: {exc}"
                            ) from None
                    if attempt == cfg.max_retries:
                        return _error(f"endpoint error after {attempt + 1} attempts: {failure}", faults)
                    await asyncio.sleep(wait if wait is not None else cfg.base_retry_wait_s * 2**attempt)
            raise AssertionError("unreachable")

        timeout = aiohttp.ClientTimeout(total=cfg.request_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            return list(await asyncio.gather(*(post(session, self._payload(r)) for r in requests)))


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


class _Retry(Exception):
    """A response worth asking again for (429, 5xx, not a chat completion), of a ``kind``; ``wait_s``: what its
    ``Retry-After`` header asks for (seconds, at most ``MAX_RETRY_AFTER_S``), None without one."""

    def __init__(self, kind: str, message: str, headers: Any = None):
        super().__init__(message)
        self.kind = kind
        after = (headers or {}).get("Retry-After", "")
        self.wait_s = min(float(after), MAX_RETRY_AFTER_S) if after.replace(".", "", 1).isdigit() else None


MAX_RETRY_AFTER_S = 120.0


def parse_chat_completion(body: Any, faults: Sequence[str] = ()) -> dict[str, Any]:
    """Map an OpenAI ``/chat/completions`` response body (or error body) to the output columns; ``faults``: the
    kinds of the request's failed attempts (an error body's own kind last)."""
    try:
        usage = body.get("usage") or {}
        choice = body["choices"][0]
        return {
            "response": choice["message"]["content"] or "",
            "num_input_tokens": int(usage.get("prompt_tokens", 0)),
            "num_output_tokens": int(usage.get("completion_tokens", 0)),
            "error": None,
            "faults": _joined(faults),
            "finish": choice.get("finish_reason"),
        }
    except (KeyError, IndexError, TypeError, AttributeError):
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            error = error.get("message", error)
        message = error or (body.get("message") if isinstance(body, dict) else None) or body
        return _error(f"endpoint error: {str(message)[:2000]}", faults or ["not a chat completion"])


def _error(message: str, faults: Sequence[str]) -> dict[str, Any]:
    return {
        "response": "",
        "num_input_tokens": 0,
        "num_output_tokens": 0,
        "error": message,
        "faults": _joined(faults),
        "finish": None,
    }


def _joined(faults: Sequence[str]) -> str:
    return ", ".join(faults)


def fault_counts(faults: Iterable[str | None], errors: Iterable[str | None]) -> dict[str, dict[str, int]]:
    """Retried attempts and error rows by kind, from the ``faults`` and ``error`` columns of teacher calls."""
    retried: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for fault, error in zip(faults, errors):
        kinds = fault.split(", ") if fault else []
        if error:
            failed[kinds.pop() if kinds else "error"] += 1
        retried.update(kinds)
    return {"retries": dict(sorted(retried.items())), "errors_by_kind": dict(sorted(failed.items()))}


def usage(table: Any) -> dict[str, int]:
    """Rows, failed rows and token totals of a teacher output table (pyarrow)."""
    errors = table.column("error").to_pylist()
    return {
        "rows": table.num_rows,
        "errors": sum(e is not None for e in errors),
        "input_tokens": int(sum(table.column("num_input_tokens").to_pylist())),
        "output_tokens": int(sum(table.column("num_output_tokens").to_pylist())),
    }
