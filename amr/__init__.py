"""amr-evol: distil code generation from a teacher LLM with AMR-Evol, on Ray.

The Python API (``amr.api``): ``amr.distill(config, overrides)``, ``amr.teacher(config, overrides)`` (one engine for
the distillations inside its ``with`` block) and ``amr.build_instructions(output, config, overrides)``; loaded on
first use, so that importing a submodule stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["DistillResult", "build_instructions", "distill", "teacher"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from amr import api

        return getattr(api, name)
    raise AttributeError(f"module 'amr' has no attribute {name!r}")
