"""How fast a vLLM engine of the teacher runs on a GPU: decode step time as a function of the batch, and prefill.

A roofline of the model's shape on the GPU's datasheet figures, with its one free parameter, the share of the
memory bandwidth a decode step achieves, taken from a published vLLM measurement of the same model:

- Qwen2.5 speed benchmark (https://qwen.readthedocs.io/en/latest/benchmark/speed_benchmark.html, the Qwen2.5
  docs' ``speed_benchmark.rst``; vLLM 0.6.3, A100 80GB, batch 1, generating 2048 tokens): Qwen2.5-32B-Instruct BF16
  on 2 GPUs (tensor parallel 2) with 30,720 input tokens: 31.82 tokens/s. Each step reads half the weights
  (32.8 GB) and half the KV cache of ~31.7k tokens (4.2 GB) per GPU in 31.4 ms: 1.18 TB/s, 0.58 of the A100's
  2.04 TB/s. That share (``MEMORY_EFFICIENCY``) lumps in the step's fixed costs (all-reduce, launches, sampling),
  which a larger batch amortises: at batch 128 the model is slower than a real engine, never faster.
- The same share on an H100 (3.35 TB/s) gives 37.7 ms per step for Qwen2.5-72B-Instruct on 2 H100s at batch 1;
  tenstorrent/tt-inference-server#143 reports 30.9 ms (TPOT) for that model on 2xH100 with vLLM: the H100 model
  is ~20% slow, which makes the engine's time longer and the job's GPU share of it larger, not smaller.

A decode step of ``B`` sequences holding ``S`` tokens of context, with ``c`` prompt tokens of chunked prefill riding
along (vLLM's default for the OpenAI server: ``max_num_batched_tokens`` 2048 per step), takes

    max(memory, compute) = max((W + S * kv) / tp / (BW * MEMORY_EFFICIENCY), 2 * P * (B + c) / tp / (FLOPS * MFU))

with ``P`` parameters, ``W`` their bytes, ``kv`` the KV-cache bytes per token (Qwen2.5-32B: 64 layers, 8 KV heads of
128, bf16: 256 KiB) and ``MFU`` 0.5 for the matrix products (an assumption: prefill at half the datasheet's dense
BF16 rate). Prefix caching (on in the shipped config) skips the prompts' shared system message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MEMORY_EFFICIENCY = 0.576
"""Achieved share of HBM bandwidth in a decode step: the Qwen2.5-32B, TP2, A100 figure above."""
MFU = 0.5
"""Achieved share of dense BF16 FLOPS in the matrix products of a step (assumed)."""
MAX_BATCHED_TOKENS = 2048
"""Tokens per engine step (decode tokens plus prefill chunks): vLLM's default for its OpenAI server."""


@dataclass(frozen=True)
class GPU:
    name: str
    bandwidth: float
    """HBM bytes/s (datasheet)."""
    flops: float
    """Dense BF16 FLOP/s (datasheet, without sparsity)."""
    memory: float
    """Bytes."""


@dataclass(frozen=True)
class Model:
    name: str
    parameters: float
    kv_bytes_per_token: int
    """K and V of every layer, bf16."""

    @classmethod
    def of(cls, name: str, config: dict) -> Model:
        """Its parameters and KV cache from its ``config.json`` (a Qwen2/Llama-style decoder)."""
        hidden, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
        head = config.get("head_dim") or hidden // config["num_attention_heads"]
        queries, kv = config["num_attention_heads"] * head, config["num_key_value_heads"] * head
        attention = 2 * hidden * queries + 2 * hidden * kv + queries + 2 * kv  # q, o, k, v (with q/k/v biases)
        mlp = 3 * hidden * config["intermediate_size"]
        embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
        return cls(name, embeddings + layers * (attention + mlp + 2 * hidden) + hidden, 2 * layers * kv * 2)


QWEN25_CODER_32B_INSTRUCT = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 5120,
    "intermediate_size": 27648,
    "num_hidden_layers": 64,
    "num_attention_heads": 40,
    "num_key_value_heads": 8,
    "vocab_size": 152064,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-06,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
"""The shape fields of Qwen/Qwen2.5-Coder-32B-Instruct's config.json (Hugging Face Hub)."""
CONFIGS = {"Qwen/Qwen2.5-Coder-32B-Instruct": QWEN25_CODER_32B_INSTRUCT}
"""The models the engine is modelled for, by hub id: their config.json."""
GPUS = {
    "H100": GPU("H100 SXM5 80GB", 3.35e12, 989e12, 80e9),
    "A100": GPU("A100 SXM4 80GB", 2.039e12, 312e12, 80e9),
}


class UnknownHardware(ValueError):
    """No rates for this model or GPU."""


@dataclass(frozen=True)
class Rates:
    """Step times of one engine replica: ``model`` on ``tensor_parallel`` GPUs of type ``gpu``."""

    model: Model
    gpu: GPU
    tensor_parallel: int

    @classmethod
    def of(cls, model: str, accelerator: str | None, tensor_parallel: int) -> Rates:
        """The rates of ``model``: a hub id, or the snapshot it resolves to in a Hugging Face cache
        (``.../models--ORG--NAME/snapshots/REV``, as the job's preflight hands the engines a pulled hub id)."""
        cached = re.search(r"models--([^/]+?)--([^/]+)/snapshots/[^/]+/?$", model)
        model = f"{cached.group(1)}/{cached.group(2)}" if cached else model
        if model not in CONFIGS:
            raise UnknownHardware(f"no modelled rates for model {model!r} (known: {', '.join(CONFIGS)})")
        if accelerator not in GPUS:
            raise UnknownHardware(f"no modelled rates for accelerator {accelerator!r} (known: {', '.join(GPUS)})")
        return cls(Model.of(model, CONFIGS[model]), GPUS[accelerator], tensor_parallel)

    def step_s(self, sequences: int, context_tokens: float, prefill_tokens: int = 0) -> float:
        """Seconds of one engine step: ``sequences`` decode one token each over ``context_tokens`` of KV cache, and
        ``prefill_tokens`` of prompts are computed along."""
        weights = 2 * self.model.parameters
        memory = (weights + context_tokens * self.model.kv_bytes_per_token) / self.tensor_parallel
        compute = 2 * self.model.parameters * (sequences + prefill_tokens) / self.tensor_parallel
        return max(memory / (self.gpu.bandwidth * MEMORY_EFFICIENCY), compute / (self.gpu.flops * MFU))

    def kv_capacity_tokens(self, memory_utilization: float = 0.9) -> int:
        """Tokens of KV cache the replica's GPUs hold next to the weights (vLLM's gpu_memory_utilization 0.9)."""
        free = self.gpu.memory * memory_utilization * self.tensor_parallel - 2 * self.model.parameters
        return int(free // self.model.kv_bytes_per_token)

    def describe(self) -> dict[str, float | str]:
        """The figures a report shows: single-sequence and full-batch decode, prefill."""
        return {
            "model": self.model.name,
            "gpu": self.gpu.name,
            "tensor_parallel": self.tensor_parallel,
            "decode_batch1_ms": round(1000 * self.step_s(1, 1000), 2),
            "decode_batch128_ms": round(1000 * self.step_s(128, 128 * 1500), 2),
            "decode_batch128_tokens_per_s": round(128 / self.step_s(128, 128 * 1500)),
            "prefill_tokens_per_s": round(MAX_BATCHED_TOKENS / self.step_s(0, 0, MAX_BATCHED_TOKENS)),
            "kv_capacity_tokens": self.kv_capacity_tokens(),
            "memory_efficiency": MEMORY_EFFICIENCY,
            "mfu": MFU,
        }
