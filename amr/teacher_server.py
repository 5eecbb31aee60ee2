"""The teacher deployment's replica class: Ray Serve LLM's ``LLMServer``, reached with plain request and response
bodies. A module of its own: it imports vLLM, which only the replicas and the process that deploys them need; the
job's client actors send dicts and get dicts back without importing it (seconds of CPU each)."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from ray.llm._internal.serve.core.server.llm_server import LLMServer
from ray.serve.llm.openai_api_models import ChatCompletionRequest


class ChatRequest(ChatCompletionRequest):
    """A chat request to the deployment: vLLM's, without the OpenAI API's limit of 4 stop strings (evalplus
    stops on 7; vLLM's sampling takes any number)."""

    stop: str | list[str] | None = Field(default_factory=list)


class TeacherServer(LLMServer):
    """``LLMServer`` with two more methods, ``chat_body`` (an OpenAI chat request body in, its response body out) and
    ``model_id`` (the ``model`` its requests name, for a job that attaches)."""

    async def model_id(self) -> str:
        return self._llm_config.model_id

    async def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The response body (or error body) of one non-streamed chat request."""
        responses = await self.chat(ChatRequest(**body))
        async for response in responses:
            return response.model_dump() if hasattr(response, "model_dump") else response
        raise RuntimeError("the engine ended the request without a response")
