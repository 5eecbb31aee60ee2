"""A modelled sandbox for the simulated cluster: the job's sandbox actors (``amr.sandbox.stage.SandboxActors``: one per
node, ``sandbox.workers`` checks at once each) with each check costing what a real check costs, in the engines' time.

The cluster runs its checks on tens of CPUs (8 per actor in the shipped config); this machine has 2, and a real
check costs ~5-10 ms of them (a fork in a warm bwrap server). The modelled actor runs each check in its own process
(the code is the benchmark's scripted code, never a model's) for the verdict, and holds a worker for the real
sandbox's time per check, measured at start (``measure``), divided by the time scale.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray

from bench.simcluster import SANDBOX_CHECK_S, TIME_SCALE


def verdict(code: str, test: str, entry_point: str | None) -> tuple[str, str]:
    """The sandbox's verdict on a check, run here: the code, then the test's statements and its ``check``/``test_*``
    functions (as ``amr/sandbox/worker.py`` calls them)."""
    namespace: dict[str, Any] = {"__name__": "__sandbox__"}
    try:
        exec(compile(code, "solution.py", "exec"), namespace)
    except Exception as exc:  # noqa: BLE001 - the check's verdict
        return "error", f"{type(exc).__name__}: {exc} (while running the code)"
    try:
        exec(compile(test, "test.py", "exec"), namespace)
        for name, function in list(namespace.items()):
            if callable(function) and getattr(getattr(function, "__code__", None), "co_filename", "") == "test.py":
                if name == "check":
                    function(namespace[entry_point])
                elif name.startswith("test_"):
                    function()
    except Exception as exc:  # noqa: BLE001
        return "failed", f"{type(exc).__name__}: {exc}"
    return "passed", ""


@ray.remote(max_restarts=-1, max_task_retries=-1)
class ModelledSandboxActor:
    """``amr.sandbox.stage._SandboxActor``'s interface: ``run(checks)`` gives one record per check, in order."""

    def __init__(self, config: dict[str, Any]):
        self.workers = config["workers"]
        self.seconds = float(os.environ[SANDBOX_CHECK_S])
        self.scale = float(os.environ[TIME_SCALE])
        self.pool = ThreadPoolExecutor(self.workers)

    def run(self, checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(self.pool.map(self._check, checks))

    def _check(self, check: dict[str, Any]) -> dict[str, Any]:
        began = time.monotonic()
        status, reason = verdict(check["code"], check.get("test") or "", check.get("entry_point"))
        time.sleep(max(0.0, self.seconds / self.scale - (time.monotonic() - began)))
        return {
            "status": status,
            "reason": reason,
            "duration_s": self.seconds,
            "stdout": "",
            "stderr": "",
            "isolation": "modelled",
        }

    def close(self) -> None:
        self.pool.shutdown()


def measure(config: Any, checks: int = 200) -> float:
    """Seconds one check server of the real sandbox (``config``'s isolation) takes a check of the scripted code."""
    from amr.sandbox import Sandbox

    code = 'def scale_5(x: int) -> int:\n    """Multiply x by 5."""\n    return x * 5\n'
    test = "def test_scale_5():\n    assert scale_5(3) == scale_5(3)\n"
    with Sandbox(config.model_copy(update={"workers": 1})) as sandbox:
        sandbox.run([{"code": code, "test": test}] * 10)
        began = time.perf_counter()
        records = sandbox.run([{"code": code, "test": test}] * checks)
        seconds = (time.perf_counter() - began) / checks
    if any(r["status"] != "passed" for r in records):
        raise RuntimeError(f"the real sandbox failed the scripted check: {records[0]}")
    return seconds
