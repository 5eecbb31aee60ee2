"""What this machine's CPU can do, where an engine's defaults depend on it."""

from __future__ import annotations

import functools
import os
from pathlib import Path

SMALL_MACHINE_CORES = 2
"""Cores of a machine on which a CPU engine keeps none free (``cpu_reserved_cores``)."""
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU flags (``/proc/cpuinfo``) of native bfloat16 arithmetic: Intel AMX tiles, or AVX512-BF16."""


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_bf16() -> bool:
    """Whether the CPU computes in bfloat16 natively: then bf16 is faster than float32 (vLLM: 2.35x the tokens/s,
    the same answers passing; docs/benchmarks.md), elsewhere it is emulated and slower."""
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def cpu_dtype() -> str:
    """The floating-point type a CPU engine computes in when its config says ``auto``."""
    return "bfloat16" if cpu_bf16() else "float32"


def cpu_reserved_cores() -> int | None:
    """Cores a CPU engine keeps free of its compute threads where its config leaves it to the machine: none on a
    machine of ``SMALL_MACHINE_CORES`` cores or fewer, where vLLM's one would take half the compute away (none
    measured 1.6x the tokens/s on 2 cores); vLLM's own default (None: one) elsewhere."""
    return 0 if len(os.sched_getaffinity(0)) <= SMALL_MACHINE_CORES else None
