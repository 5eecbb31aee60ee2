"""The teacher deployment's replica class: Ray Serve LLM's ``LLMServer``, reached with plain request and response
bodies. A module of its own: it imports vLLM, which only the replicas and the process that deploys them need; the
job's client actors send dicts and get dicts back without importing it (seconds of CPU each)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import Field
from ray.llm._internal.serve.core.server.llm_server import LLMServer
from ray.llm._internal.serve.engines.vllm.vllm_engine import VLLMEngine
from ray.serve.llm.openai_api_models import ChatCompletionRequest

from amr.runaway import Watch

STREAMED = {"stream": True, "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
"""How a watched request is run: streamed, every chunk with the token counts so far (an answer stopped mid-way
still has them)."""


class InProcessCPUEngine(VLLMEngine):
    """vLLM's engine for a CPU replica of one engine process (``vllm.tensor_parallel_size`` 1): the model runs in
    the engine core's process (vLLM's single-process executor, ``uni``), not in a worker process of its own that
    the engine core drives over shared memory (Ray Serve LLM sets vLLM's ``mp`` executor on CPU, whatever the
    engine arguments say). The engine core's process is started with the OpenMP threads and their core binding
    that vLLM gives a CPU worker process."""

    def _prepare_engine_config(self, callback_ctx: Any) -> tuple[Any, Any, Any]:
        engine_args, frontend_args, vllm_config = super()._prepare_engine_config(callback_ctx)
        vllm_config.parallel_config.distributed_executor_backend = "uni"
        return engine_args, frontend_args, vllm_config

    def _start_async_llm_engine(self, engine_args: Any, vllm_config: Any, placement_group: Any) -> Any:
        from vllm.utils.ompmultiprocessing import OMPProcessManager

        with OMPProcessManager(vllm_config).configure_omp_envs(rank=0, local_rank=0):
            return super()._start_async_llm_engine(engine_args, vllm_config, placement_group)


class ChatRequest(ChatCompletionRequest):
    """A chat request to the deployment: vLLM's, without the OpenAI API's limit of 4 stop strings (evalplus
    stops on 7; vLLM's sampling takes any number)."""

    stop: str | list[str] | None = Field(default_factory=list)


class TeacherServer(LLMServer):
    """``LLMServer`` with more methods: ``chat_body`` (an OpenAI chat request body in, its response body out),
    ``chat_bodies`` (several at once, in one Serve request) and ``model_id`` (the ``model`` its requests name, for a
    job that attaches)."""

    async def model_id(self) -> str:
        return self._llm_config.model_id

    async def chat_bodies(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each chat request's response body, answered concurrently (``settled``)."""
        return settled(await asyncio.gather(*(self.chat_body(b) for b in bodies), return_exceptions=True))

    async def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The response body (or error body) of one chat request, answered whole. With ``stop_runaway`` (the
        project's own key, default on) the answer is generated as a stream and watched: once it repeats itself
        (``amr.runaway``) the request is aborted and the answer, cut after the repetition's first period, ends with
        ``finish_reason: runaway``."""
        body = dict(body)
        watched = body.pop("stop_runaway", True)
        if not watched:
            return await _whole(await self.chat(ChatRequest(**{**body, "stream": False})))
        stream = await self._run_request(ChatRequest(**{**body, **STREAMED}), engine_method="chat")
        try:
            return await _watched(stream)
        finally:
            await stream.aclose()  # a request stopped early is aborted in the engine


def settled(results: list[dict[str, Any] | BaseException]) -> list[dict[str, Any]]:
    """The answers of a Serve request's chat requests: each one's body, or ``{"exception": "Name: message"}`` where it
    failed (the caller tells a dead engine, whose requests it sends again, from a request's own failure)."""
    return [
        {"exception": f"{type(r).__name__}: {str(r)[:2000]}"} if isinstance(r, BaseException) else r for r in results
    ]


async def _whole(responses: AsyncIterator[Any]) -> dict[str, Any]:
    async for response in responses:
        return response.model_dump() if hasattr(response, "model_dump") else response
    raise RuntimeError("the engine ended the request without a response")


async def _watched(stream: AsyncIterator[Any]) -> dict[str, Any]:
    """Read a streamed chat answer (server-sent events, as vLLM's OpenAI layer writes them) into one response body,
    stopping it where it runs away. An engine that answers a stream whole (one response object) is taken as is."""
    watch, usage, finish, head = Watch(), {}, None, {}
    async for item in stream:
        if not isinstance(item, str):
            return item.model_dump() if hasattr(item, "model_dump") else item
        for event in _events(item):
            if "error" in event:
                return event
            head = head or {k: event.get(k) for k in ("id", "created", "model")}
            usage = event.get("usage") or usage
            for choice in event.get("choices") or ():
                finish = choice.get("finish_reason") or finish
                if (cut := watch.feed((choice.get("delta") or {}).get("content") or "")) is not None:
                    return _body(head, cut, "runaway", usage)
    return _body(head, watch.text, finish, usage)


def _events(chunk: str) -> list[dict[str, Any]]:
    """The JSON events of a chunk of server-sent events (``data: {...}``), the end marker left out."""
    return [
        json.loads(line[len("data: ") :])
        for line in chunk.split("\n")
        if line.startswith("data: ") and line.strip() != "data: [DONE]"
    ]


def _body(head: dict[str, Any], text: str, finish: str | None, usage: dict[str, Any]) -> dict[str, Any]:
    return {
        **head,
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": usage,
    }
