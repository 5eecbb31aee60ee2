"""A served vLLM engine for a whole job: one OpenAI-compatible server, reached over HTTP."""

from __future__ import annotations

import pytest

from amr.config import SamplingConfig, TeacherConfig, VLLMConfig
from amr.engines import Teacher
from amr.serving import server_args, served


def test_server_args_follow_the_engine_settings():
    cfg = TeacherConfig(vllm=VLLMConfig(max_model_len=1024, enable_prefix_caching=False, engine_kwargs={"seed": 3}))
    args = server_args(cfg, "/models/m", 8123)
    assert args[:8] == ["--model", "/models/m", "--served-model-name", "/models/m", "--host", "127.0.0.1",
                        "--port", "8123"]
    assert {"--dtype", "float32", "--max-model-len", "1024", "--no-enable-prefix-caching", "--enforce-eager",
            "--seed", "3"} <= set(args)


def test_not_served_is_the_config_itself(tmp_path):
    cfg = TeacherConfig()
    with served(cfg, None, tmp_path / "log") as same:
        assert same is cfg


@pytest.mark.slow
def test_served_engine_answers_through_the_openai_backend(ray_local, tiny_model, tmp_path):
    cfg = TeacherConfig(model=tiny_model, sampling=SamplingConfig(max_tokens=8),
                        vllm=VLLMConfig(serve=True, max_model_len=1024))
    with served(cfg, None, tmp_path / "server.log") as reached:
        assert reached.backend == "openai" and reached.model == tiny_model
        rows = Teacher(reached).generate(ray_local.data.from_items(
            [{"id": str(i), "messages": [{"role": "user", "content": f"count to {i}"}]} for i in range(3)])).take_all()
        assert sorted(r["id"] for r in rows) == ["0", "1", "2"]
        assert all(r["error"] is None and r["num_output_tokens"] == 8 for r in rows)
        url = reached.openai.base_url
    import urllib.request

    with pytest.raises(OSError):
        urllib.request.urlopen(url.replace("/v1", "/health"), timeout=2)
