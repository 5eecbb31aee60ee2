"""The CPU's bf16 detection and what ``dtype: auto`` becomes."""

from __future__ import annotations

import pytest

from amr import hardware
from amr.config import VLLMConfig
from amr.serving import engine_dtype, vllm_engine_kwargs


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


def test_flags_are_read_from_this_machine():
    hardware.cpu_flags.cache_clear()
    flags = hardware.cpu_flags()
    assert "fpu" in flags or not flags  # a Linux x86 CPU lists fpu; elsewhere nothing is read
    assert hardware.cpu_bf16() == bool({"amx_bf16", "avx512_bf16"} & flags)
