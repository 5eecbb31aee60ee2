"""Starting Ray: a local runtime sized for the LLM stages, or a connection to a cluster."""

from __future__ import annotations

import os
import sys

import ray

from amr.config import RayConfig

LOCAL_MIN_CPUS = 8
"""ray.data.llm runs chat-template, tokenize, engine and detokenize actors that each ask for a CPU;
a local Ray gets at least this many logical CPUs so that they all start on a 2-core machine."""


def init_ray(config: RayConfig) -> None:
    if ray.is_initialized():
        return
    if config.address:
        ray.init(address=config.address, log_to_driver=True)
    else:
        num_cpus = config.num_cpus or max(LOCAL_MIN_CPUS, os.cpu_count() or 1)
        ray.init(num_cpus=num_cpus, include_dashboard=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = sys.stderr.isatty()
