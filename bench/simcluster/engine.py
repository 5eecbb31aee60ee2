"""A model of a vLLM engine on a GPU, behind Ray Serve LLM's ``LLMServer`` in place of vLLM (it never touches CUDA).

Ray Serve LLM builds a replica's engine from the class named by ``RAYLLM_VLLM_ENGINE_CLS`` (``LLMServer``'s
"escape hatch for patching", ray 2.60.0 ``llm_server.py``; vLLM's engine otherwise): the simulated cluster's nodes set
it to ``bench.simcluster.engine.ModelledEngine``, so the job's own deployment (``amr.serving``: its placement groups,
replicas, routing and request path) runs with this engine and nothing else changed.

The engine batches continuously over ``max_num_seqs`` slots, as vLLM does: a request waits for a free slot, its
prompt is prefilled in chunks that ride along the running decode steps, then it decodes one token per step until its
output length; steps take ``rates.Rates.step_s`` of the batch. The output length of each answer is a recorded one
(``lengths``: the local teacher's answers to the same stage, 3,000-token runaways included), capped at the request's
``max_tokens``; the answer's text is ``bench.scripted.script``'s, so that the job does its real work with it.

Time: the engine runs ``AMR_SIM_TIME_SCALE`` (k) times faster than the wall clock: its clock is ``k x time.time()``.
It starts in ``AMR_SIM_ENGINE_START_S`` of that time (loading weights, capturing CUDA graphs), idle meanwhile.
Every ``STATS_EVERY_S`` it appends its counters (slot-seconds busy, seconds idle, tokens, requests) to
``$AMR_SIM_STATS_DIR/<replica>.jsonl``, which ``bench/sim_cluster.py`` reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import json
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.llm._internal.serve.core.engine.protocol import LLMEngine
from ray.serve.llm.openai_api_models import ChatCompletionResponse

from bench.scripted import script
from bench.simcluster import ENGINE_START_S, STATS_DIR, TIME_SCALE, lengths
from bench.simcluster.rates import MAX_BATCHED_TOKENS, Rates

STATS_EVERY_S = 0.5
"""Wall seconds between two lines of an engine's counters."""
CHUNK_TOKENS = 64
"""Tokens of a streamed answer per chunk (256 characters of text: ``amr.runaway``'s check interval)."""
CHARS_PER_TOKEN = 4
EPSILON = 1e-6
"""Tokens within which an event is due (floating-point sums of step fractions)."""


def streamed_text(answer: str, output: int, repeats_from: int | None) -> str:
    """A streamed answer's text, ``CHARS_PER_TOKEN`` characters a token: the scripted answer, then prose that does not
    repeat, and for a recorded runaway, from its ``repeats_from``-th token, one line over and over, as the recorded
    answer repeated itself there (the replica's runaway watch, ``amr.runaway``, sees what it saw)."""
    plain = (output if repeats_from is None else repeats_from) * CHARS_PER_TOKEN
    text = (
        answer
        + "".join(f"\nNote {i}: the function above handles case {i}." for i in range(output))[
            : max(0, plain - len(answer))
        ]
    )
    return text + ("\nThe test repeats the same check." * output)[: max(0, output * CHARS_PER_TOKEN - len(text))]


def stages() -> dict[str, str]:
    """The recorded stage whose lengths answer a system prompt. Bootstrapping's answers (no recording of their own)
    are drawn from the direct answers'."""
    from amr.prompts import bootstrap, decompose, direct, response_evolution, testgen

    return {
        direct.SYSTEM: "direct",
        bootstrap.SYSTEM: "direct",
        decompose.SYSTEM: "decompose",
        response_evolution.SYSTEM: "evolve",
        testgen.SYSTEM: "tests",
    }


@dataclass(order=True)
class _Sequence:
    event_at: float
    """The engine's decode progress (tokens per running sequence) at its next event: its next streamed chunk, or its
    last token."""
    prompt: int = field(compare=False)
    prefill: int = field(compare=False)
    """Prompt tokens to compute (not in the prefix cache)."""
    output: int = field(compare=False)
    stream: bool = field(compare=False)
    ready: asyncio.Future = field(compare=False)
    """Resolved at each event (the one waiting on it makes the next)."""
    started_at: float = field(default=0.0, compare=False)
    """The decode progress when it started decoding."""
    complete: bool = field(default=False, compare=False)

    @property
    def done_at(self) -> float:
        return self.started_at + self.output

    def tokens(self, progress: float) -> int:
        """Output tokens it has at decode progress ``progress``."""
        return self.output if self.complete else max(0, min(self.output, int(progress - self.started_at)))


class ModelledEngine(LLMEngine):
    """vLLM's continuous batching on modelled GPUs (see the module's docstring)."""

    def __init__(self, llm_config: Any):
        self.llm_config = llm_config
        kwargs = llm_config.engine_kwargs
        self.rates = Rates.of(llm_config.model_id, llm_config.accelerator_type, kwargs.get("tensor_parallel_size", 1))
        self.slots = int(kwargs["max_num_seqs"])
        self.prefix_caching = bool(kwargs.get("enable_prefix_caching", True))
        self.scale = float(os.environ[TIME_SCALE])
        self.stats_path = Path(os.environ[STATS_DIR]) / f"{uuid.uuid4().hex[:12]}.jsonl"
        self.stages = stages()
        self.system_tokens: dict[str, int] = {}
        self.waiting: deque[_Sequence] = deque()
        self.prefilling: deque[_Sequence] = deque()
        self.decoding: list[_Sequence] = []
        self.progress = 0.0
        """Tokens each decoding sequence has gained since the engine started (one a step)."""
        self.prefilled = 0.0
        """Tokens of the head of ``prefilling`` computed so far."""
        self.prompts = 0
        self.starts = 0.0
        """Sums over the decoding sequences of their prompts and ``started_at``: their KV cache is
        ``prompts + len(decoding) * progress - starts`` tokens."""
        self.counters = {"busy_slot_s": 0.0, "idle_s": 0.0, "output_tokens": 0, "prefill_tokens": 0.0, "requests": 0}
        self.kv_peak = 0.0
        self.waiter: asyncio.Future | None = None
        self.last = self.now()

    def now(self) -> float:
        return self.scale * time.time()

    async def start(self) -> None:
        """Load (``AMR_SIM_ENGINE_START_S`` of engine time: the GPUs held, nothing served), then serve."""
        self.stats_path.parent.mkdir(parents=True, exist_ok=True)
        self.reporter = asyncio.get_running_loop().create_task(self._report())
        await asyncio.sleep(float(os.environ.get(ENGINE_START_S, 0)) / self.scale)
        self.loop = asyncio.get_running_loop().create_task(self._run())

    async def chat(self, request: Any, raw_request_info: Any = None):
        messages = [{"role": m["role"], "content": m["content"]} for m in request.messages]
        stage = self.stages.get(messages[0]["content"])
        if stage is None:
            raise ValueError(
                f"the modelled engine has no recorded lengths for this system prompt: {messages[0]!r:.200}"
            )
        prompt, output, repeats_from = lengths.draw(stage, hashlib.sha256(json.dumps(messages).encode()).hexdigest())
        limit = request.max_completion_tokens or request.max_tokens
        output = max(1, min(output, limit or output))
        cached = self._system_tokens(messages[0]["content"]) if self.prefix_caching else 0
        stream = bool(getattr(request, "stream", False))
        seq = _Sequence(
            0.0, prompt, max(1, prompt - cached), output, stream, asyncio.get_running_loop().create_future()
        )
        self.waiting.append(seq)
        self.counters["requests"] += 1
        self._wake()
        finish = "length" if limit and output >= limit else "stop"
        try:
            if not stream:
                while not seq.complete:
                    await self._next(seq)
                yield ChatCompletionResponse(
                    model=self.llm_config.model_id,
                    choices=[
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": script(messages)},
                            "finish_reason": finish,
                        }
                    ],
                    usage={"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output},
                )
                return
            text, sent = streamed_text(script(messages), output, repeats_from), 0
            while not seq.complete:
                await self._next(seq)
                tokens = seq.tokens(self.progress)
                upto = len(text) if seq.complete else tokens * CHARS_PER_TOKEN
                yield self._event(text[sent:upto], finish if seq.complete else None, prompt, tokens)
                sent = max(sent, upto)
            yield "data: [DONE]\n\n"
        finally:
            if not seq.complete:  # its reader stopped it (a runaway), or went away: vLLM aborts the request
                self._abort(seq)

    async def _next(self, seq: _Sequence) -> None:
        """Wait for the sequence's next event."""
        await seq.ready
        seq.ready = asyncio.get_running_loop().create_future()

    def _event(self, delta: str, finish: str | None, prompt: int, tokens: int) -> str:
        """A server-sent event of a streamed chat answer, with the token counts so far (as vLLM's OpenAI layer writes
        them with ``stream_options: {include_usage, continuous_usage_stats}``)."""
        body = {
            "id": "chatcmpl-modelled",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.llm_config.model_id,
            "choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": tokens, "total_tokens": prompt + tokens},
        }
        return f"data: {json.dumps(body)}\n\n"

    def _abort(self, seq: _Sequence) -> None:
        """Take a sequence out of the engine wherever it is, its slot freed."""
        self._advance(self.now() - self.last)
        self.last = self.now()
        if seq in self.decoding:
            self.decoding.remove(seq)
            heapq.heapify(self.decoding)
            self.prompts -= seq.prompt
            self.starts -= seq.started_at
            self.counters["output_tokens"] += seq.tokens(self.progress)
        elif seq in self.prefilling:
            if self.prefilling[0] is seq:
                self.prefilled = 0.0
            self.prefilling.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.complete = True
        self._wake()

    def _system_tokens(self, system: str) -> int:
        """The shared system message's tokens (~4 characters a token), served from the prefix cache."""
        return self.system_tokens.setdefault(system, len(system) // 4)

    async def _run(self) -> None:
        """Advance the modelled engine from event to event: arrivals, a prompt prefilled, an output complete."""
        while True:
            now = self.now()
            self._advance(now - self.last)
            self.last = now
            self._admit()
            wait = self._next_event_s()
            loop = asyncio.get_running_loop()
            self.waiter = loop.create_future()
            timer = None if wait is None else loop.call_later(max(wait / self.scale, 0.0005), self._wake)
            try:
                await self.waiter
            finally:
                if timer is not None:
                    timer.cancel()

    def _wake(self) -> None:
        """End the scheduler's wait: a request arrived or left, or its next event is due."""
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _busy(self) -> int:
        return len(self.prefilling) + len(self.decoding)

    def _kv_tokens(self) -> float:
        return self.prompts + len(self.decoding) * self.progress - self.starts + self.prefilled

    def _step_s(self) -> tuple[float, int]:
        """One step's seconds now, and the prompt tokens it prefills."""
        decoding = len(self.decoding)
        chunk = max(0, MAX_BATCHED_TOKENS - decoding) if self.prefilling else 0
        return self.rates.step_s(decoding, self._kv_tokens(), chunk), chunk

    def _advance(self, elapsed: float) -> None:
        """``elapsed`` seconds of engine steps: the prefill queue and the decoding sequences progress, finished
        outputs are answered."""
        while elapsed > 1e-9:
            busy = self._busy()
            if not busy:
                self.counters["idle_s"] += elapsed
                return
            step, chunk = self._step_s()
            span = elapsed
            if self.prefilling:  # until the head's prompt is in
                span = min(span, (self.prefilling[0].prefill - self.prefilled) / chunk * step)
            if self.decoding:  # until the next chunk or output completes
                span = min(span, max(0.0, self.decoding[0].event_at - self.progress) * step)
            self.counters["busy_slot_s"] += busy * span
            if self.prefilling:
                self.prefilled += span / step * chunk
                self.counters["prefill_tokens"] += span / step * chunk
            self.progress += span / step if self.decoding else 0.0
            elapsed -= span
            self._finish()

    def _finish(self) -> None:
        """Move a prefilled prompt to decoding, answer the complete outputs."""
        self.kv_peak = max(self.kv_peak, self._kv_tokens())
        if self.prefilling and self.prefilled >= self.prefilling[0].prefill - EPSILON:
            seq = self.prefilling.popleft()
            self.prefilled = 0.0
            seq.started_at = self.progress
            seq.event_at = self._next_event_at(seq)
            self.prompts += seq.prompt
            self.starts += seq.started_at
            heapq.heappush(self.decoding, seq)
        while self.decoding and self.decoding[0].event_at <= self.progress + EPSILON:
            seq = heapq.heappop(self.decoding)
            if seq.done_at <= self.progress + EPSILON:
                seq.complete = True
                self.prompts -= seq.prompt
                self.starts -= seq.started_at
                self.counters["output_tokens"] += seq.output
            else:  # a streamed chunk
                seq.event_at = self._next_event_at(seq)
                heapq.heappush(self.decoding, seq)
            if not seq.ready.done():
                seq.ready.set_result(None)

    def _next_event_at(self, seq: _Sequence) -> float:
        """A streamed sequence's next chunk boundary, or its end."""
        if not seq.stream:
            return seq.done_at
        chunks = int((self.progress + EPSILON - seq.started_at) // CHUNK_TOKENS) + 1  # one past _finish's tolerance
        return min(seq.done_at, seq.started_at + chunks * CHUNK_TOKENS)

    def _admit(self) -> None:
        while self.waiting and self._busy() < self.slots:
            self.prefilling.append(self.waiting.popleft())

    def _next_event_s(self) -> float | None:
        """Engine seconds to the next prefill or output completion (None: idle until a request arrives)."""
        if not self._busy():
            return None
        step, chunk = self._step_s()
        times = []
        if self.prefilling:
            times.append((self.prefilling[0].prefill - self.prefilled) / chunk * step)
        if self.decoding:
            times.append((self.decoding[0].event_at - self.progress) * step)
        return max(0.0, min(times))

    async def _report(self) -> None:
        with self.stats_path.open("a") as out:
            while True:
                self._advance(self.now() - self.last)
                self.last = self.now()
                line = {"t": self.last, "slots": self.slots, "kv_peak_tokens": round(self.kv_peak), **self.counters}
                line["prefill_tokens"] = round(line["prefill_tokens"])
                out.write(json.dumps(line) + "\n")
                out.flush()
                await asyncio.sleep(STATS_EVERY_S)

    def routing_stats(self) -> dict:
        return {}

    async def resolve_lora(self, lora_model: Any) -> None:
        raise NotImplementedError("the modelled engine serves no LoRA adapters")

    async def completions(self, request: Any, raw_request_info: Any = None):
        raise NotImplementedError("the modelled engine answers chat requests only")
        yield  # an async generator, as the protocol's

    async def embeddings(self, request: Any, raw_request_info: Any = None):
        raise NotImplementedError("the modelled engine answers chat requests only")
        yield

    async def transcriptions(self, request: Any, raw_request_info: Any = None):
        raise NotImplementedError("the modelled engine answers chat requests only")
        yield

    async def reset_prefix_cache(self) -> None:
        return None
