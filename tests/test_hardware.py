"""The CPU's bf16 detection and what ``dtype: auto`` (engines) and ``precision: auto`` (training) become; the cores
a CPU engine keeps free."""

from __future__ import annotations

import os

import pytest

from amr import hardware
from amr.config import TrainConfig, VLLMConfig
from amr.serving import engine_dtype, vllm_engine_kwargs, vllm_env
from amr.training import precision, saved_dtype


@pytest.mark.parametrize(
    ("flags", "dtype"),
    [({"avx2", "amx_bf16", "amx_tile"}, "bfloat16"), ({"avx512f", "avx512_bf16"}, "bfloat16"), ({"avx2"}, "float32")],
)
def test_auto_is_bf16_only_where_the_cpu_has_it(monkeypatch, flags, dtype):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    assert engine_dtype(VLLMConfig()) == dtype
    assert vllm_engine_kwargs(VLLMConfig())["dtype"] == dtype


def test_a_set_dtype_and_gpu_auto_are_kept(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert engine_dtype(VLLMConfig(dtype="float32")) == "float32"
    assert engine_dtype(VLLMConfig(device="gpu")) == "auto"  # the model's own dtype


@pytest.mark.parametrize("flags", [{"avx2", "amx_bf16", "amx_tile"}, {"avx512f", "avx512_bf16"}, {"avx2"}, set()])
def test_training_auto_is_fp32_on_any_cpu(monkeypatch, flags):
    """Unlike an engine's dtype: bf16 training on this CPU (AVX512-BF16) was 1.53x the tokens/s of fp32 but learnt
    0.72 of its held-out loss drop in the same steps (docs/benchmarks.md)."""
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
    config = TrainConfig()
    assert (config.precision, precision(config), saved_dtype(config)) == ("auto", "fp32", "float32")


def test_training_precision_set_or_on_gpu_is_kept(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2"}))
    assert precision(TrainConfig(scaling={"use_gpu": True})) == "bf16"  # the paper's bf16
    assert [precision(TrainConfig(precision=p)) for p in ("bf16", "bf16-pure")] == ["bf16", "bf16-pure"]


def test_flags_are_read_from_this_machine():
    hardware.cpu_flags.cache_clear()
    flags = hardware.cpu_flags()
    assert "fpu" in flags or not flags  # a Linux x86 CPU lists fpu; elsewhere nothing is read
    assert hardware.cpu_bf16() == bool({"amx_bf16", "avx512_bf16"} & flags)


@pytest.mark.parametrize(("cores", "reserved"), [(1, "0"), (2, "0"), (4, None)])
def test_a_small_machine_keeps_no_core_free_unless_configured(monkeypatch, cores, reserved):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert vllm_env(VLLMConfig()).get("VLLM_CPU_NUM_OF_RESERVED_CPU") == reserved  # None: vLLM's default, one
    assert vllm_env(VLLMConfig(cpu_reserved_cores=1))["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1"
