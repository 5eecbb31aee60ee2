"""The teacher engine on ray.data.llm + vLLM (CPU), with real models."""


import pytest

from amr.config import TeacherConfig, VLLMConfig
from amr.engines import EngineError, Teacher

pytestmark = pytest.mark.slow


def _teacher(model: str, max_tokens: int, max_model_len: int = 1024) -> Teacher:
    cfg = TeacherConfig(model=model, vllm=VLLMConfig(max_model_len=max_model_len, batch_size=4))
    cfg.sampling.max_tokens = max_tokens
    return Teacher(cfg)


def test_tiny_model_generates_and_failing_rows_are_recorded(ray_local, tiny_model):
    rows = [{"id": f"r{i}", "topic": f"t{i}", "messages": [{"role": "user", "content": f"def f{i}(x):"}]}
            for i in range(5)]
    rows[1]["sampling"] = {"max_tokens": 3}
    rows.append({"id": "too-long", "topic": "x", "messages": [{"role": "user", "content": "import os\n" * 2000}]})
    out = {r["id"]: r for r in _teacher(tiny_model, 16).generate(ray_local.data.from_items(rows), carry=("id", "topic")).take_all()}
    assert sorted(out) == sorted(r["id"] for r in rows)
    for i in (0, 2, 3, 4):
        row = out[f"r{i}"]
        assert row["error"] is None and row["topic"] == f"t{i}"
        assert row["num_input_tokens"] > 3 and row["num_output_tokens"] == 16  # random weights: never EOS
        assert isinstance(row["response"], str)
    assert out["r1"]["num_output_tokens"] == 3  # per-row sampling overrides the config
    failed = out["too-long"]
    assert "maximum context length" in failed["error"] and failed["response"] == "" and failed["topic"] == "x"


def test_gpu_device_without_gpus_fails_fast(ray_local, tiny_model):
    cfg = TeacherConfig(model=tiny_model, vllm=VLLMConfig(device="gpu"))
    with pytest.raises(EngineError, match="the Ray cluster has 0 GPUs"):
        Teacher(cfg).generate(ray_local.data.from_items([{"id": "a", "messages": []}]))
