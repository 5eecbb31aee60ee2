"""A deterministic teacher for tests and benchmarks: an OpenAI-compatible ``/v1/chat/completions``
server on 127.0.0.1 whose answers come from a script, a function of the chat messages.

Jobs reach it through the ``openai`` back end, so stage logic is exercised over real HTTP and the
real ``ray.data.llm`` processor. It is never a default teacher. With ``latency_s`` it answers as a
remote API does, after a fixed delay, ``slots`` requests at a time (a replica of that many sequences),
so benchmarks measure the pipeline rather than the machine. With ``faults`` it fails requests as a real
endpoint does: ``faults(messages, attempt)`` (attempt: how many times this chat came before) names a fault
of ``FAULTS`` or None to answer.

A script that raises fails the test: the request is answered with an HTTP 422 error naming the exception (not
retried: the job does not wait on it), the exception is recorded, and it is raised again in the test, when the ``with`` block
ends or, for a teacher that outlives one test (a fixture), when the test that made the request ends (the autouse
fixture in ``tests/conftest.py`` calls ``raise_script_errors``). Where an error row is the point, the script asks
for one explicitly: ``raise Rejected("why")`` is answered with HTTP 422, which the job records on the row.

    with ScriptedTeacher(lambda messages: "```python\\ndef f():\\n    return 1\\n```") as scripted:
        teacher = OpenAITeacher(scripted.config())
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import traceback
import weakref
from collections.abc import Callable

from aiohttp import web

from amr.config import OpenAIConfig, TeacherConfig

Script = Callable[[list[dict[str, str]]], str]
Faults = Callable[[list[dict[str, str]], int], "str | None"]
FAULTS = ("500", "503", "429", "drop", "no-choices", "html", "slow")
"""HTTP 500/503/429 with a JSON error; the connection closed before any answer; a 200 whose JSON has no
``choices``; a 200 HTML page (a proxy's); an answer after ``slow_s``. Also ``429-after``: a 429 with
``Retry-After: 1``."""


_LIVE: weakref.WeakSet[ScriptedTeacher] = weakref.WeakSet()


class Rejected(Exception):
    """Raised by a script to answer a request with HTTP 422 on purpose: the job records it as the row's error."""


class ScriptError(AssertionError):
    """A test's script raised: the test fails with the script's traceback."""


def raise_script_errors() -> None:
    """Raise (once) what the scripts of every live scripted teacher raised since the last call."""
    errors = [e for teacher in list(_LIVE) for e in teacher.take_script_errors()]
    if errors:
        raise ScriptError(f"{len(errors)} request(s) made the teacher's script raise:\n" + "\n".join(errors))


class ScriptedTeacher:
    def __init__(
        self,
        script: Script,
        model: str = "scripted",
        latency_s: float = 0.0,
        slots: int | None = None,
        keep_requests: bool = True,
        faults: Faults | None = None,
        slow_s: float = 5.0,
    ):
        self.script, self.model, self.latency_s = script, model, latency_s
        self.faults, self.slow_s, self._attempts = faults, slow_s, {}
        self.faulted: list[str] = []  # every fault served, in order
        self.received_at: list[float] = []  # time.perf_counter() of every request received (faulted ones too)
        self.script_errors: list[str] = []  # the tracebacks of what the script raised (Rejected aside)
        self._slots = asyncio.Semaphore(slots) if slots else None
        self.keep_requests = keep_requests  # False: count only (a benchmark's memory figures stay the job's)
        self.requests: list[list[dict[str, str]]] = []  # every chat received, in arrival order
        self.parameters: list[dict] = []  # and the rest of its request body (sampling, model), in the same order
        self.calls = 0
        self.answered_at: list[float] = []  # time.perf_counter() of every answer, in order
        self.busy_s = 0.0  # time spent answering (parsing, the script, the reply)
        self.in_flight = self.most_in_flight = 0  # requests being answered (latency included), now and at most
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="scripted-teacher")
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def config(self, **openai) -> TeacherConfig:
        """A teacher config that reaches this server through the openai back end."""
        settings = {"api_key_env": None, **openai}
        return TeacherConfig(
            backend="openai", model=self.model, openai=OpenAIConfig(base_url=self.base_url, **settings)
        )

    def __enter__(self) -> ScriptedTeacher:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the scripted teacher did not start")
        _LIVE.add(self)
        return self

    def __exit__(self, kind, value, tb) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        _LIVE.discard(self)
        errors = self.take_script_errors()
        if errors and kind is None:  # else the test already fails with its own exception
            raise ScriptError(f"{len(errors)} request(s) made the teacher's script raise:\n" + "\n".join(errors))

    def take_script_errors(self) -> list[str]:
        errors, self.script_errors = self.script_errors, []
        return errors

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        # on exit, requests still in flight (a slow fault's) are cancelled at once, not waited for up to 60 s
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        self._loop.run_until_complete(runner.setup())
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._loop.run_until_complete(web.SockSite(runner, sock).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    async def _complete(self, request: web.Request) -> web.Response:
        if self._slots:
            async with self._slots:
                return await self._timed(request)
        return await self._timed(request)

    async def _timed(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            began = time.perf_counter()
            try:
                return await self._answer(request)
            finally:
                self.busy_s += time.perf_counter() - began
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.Response:
        self.received_at.append(time.perf_counter())
        body = await request.json()
        messages = body["messages"]
        if self.faults:
            key = repr(messages)
            attempt = self._attempts[key] = self._attempts.get(key, -1) + 1
            if fault := self.faults(messages, attempt):
                self.faulted.append(fault)
                return await self._fault(request, fault)
        self.calls += 1
        self.answered_at.append(time.perf_counter())
        if self.keep_requests:
            self.requests.append(messages)
            self.parameters.append({k: v for k, v in body.items() if k != "messages"})
        try:
            text = self.script(messages)
        except Rejected as exc:  # asked for: a 4xx is not retried, the job records it on the row
            return web.json_response({"error": {"message": f"rejected: {exc}"}}, status=422)
        except Exception as exc:  # a bug in the test or in what the job asked: the test fails
            self.script_errors.append(f"{messages[0]['content'][:80]!r}...: {traceback.format_exc()}")
            return web.json_response({"error": {"message": f"the script raised {exc!r}"}}, status=422)
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        completion_tokens = len(text.split())
        return web.json_response(
            {
                "id": f"chatcmpl-{self.calls}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    async def _fault(self, request: web.Request, fault: str) -> web.Response:
        if fault in ("500", "503", "429"):
            return web.json_response({"error": {"message": f"injected {fault}"}}, status=int(fault))
        if fault == "429-after":  # a rate limit that says when to come back
            return web.json_response({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "1"})
        if fault == "drop":
            request.transport.close()
            return web.Response()
        if fault == "no-choices":
            return web.json_response({"object": "chat.completion", "model": self.model})
        if fault == "html":
            return web.Response(text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        if fault == "slow":
            await asyncio.sleep(self.slow_s)
            return web.json_response({"error": {"message": "too late"}}, status=504)
        raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")
