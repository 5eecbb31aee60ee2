"""The chat request a job sends to its teacher deployment. A module of its own: importing it imports vLLM's
protocol (seconds, and vLLM's start-up lines), which only the processes that send requests need."""

from __future__ import annotations

from pydantic import Field
from ray.serve.llm.openai_api_models import ChatCompletionRequest


class ChatRequest(ChatCompletionRequest):
    """A chat request to the deployment: vLLM's, without the OpenAI API's limit of 4 stop strings (evalplus
    stops on 7; vLLM's sampling takes any number)."""

    stop: str | list[str] | None = Field(default_factory=list)
