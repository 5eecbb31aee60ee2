"""Scoring with EvalPlus (``evalplus.evaluate.evaluate``) inside the project's sandbox, offline.

The model's code is untrusted: evalplus runs it in the sandbox (``amr.sandbox``), as one check whose code is
``eval/evalplus_runner.py``, with evalplus's own process pool, checkers, guard and time limits inside (its
checkers cap their address space at 4 GiB). The check sees the standard library of an interpreter of the job's
Python version, the job's site-packages and a directory with the dataset, the samples and the expected outputs,
all read-only; evalplus's results come back on its stdout. On a Ray cluster it runs on a sandbox node, under
bwrap (``amr.sandbox.cluster``).

The expected outputs (the canonical solutions, trusted, run on every input) are computed once per dataset file
by evalplus in a fresh interpreter on the host, and kept in ``cache_dir`` as evalplus names them: the md5 of the
dataset file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from amr.config import IsolationConfig, SandboxConfig
from amr.sandbox import Sandbox, SandboxError
from amr.sandbox.stage import call_where_checks_run
from eval.evalplus_runner import DATASET, SAMPLES

KS = (1, 10, 100)
RUNNER = (Path(__file__).parent / "evalplus_runner.py").read_text()
INPUTS_ROOT = "/var/tmp"
SAMPLE_S = 2 * (60 + 4)
"""The longest evalplus spends on one sample: base and plus inputs, each at most EVALPLUS_TIMEOUT_PER_TASK (60 s)
and its margins. The check's deadline allows that for every sample, ``parallel`` at a time."""


class ScoringError(RuntimeError):
    """evalplus could not score the samples (as opposed to samples that fail)."""


def results_path(samples: str | Path) -> Path:
    """Where ``score`` writes evalplus's results for a samples file."""
    return Path(str(samples).removesuffix(".jsonl") + "_eval_results.json")


def score(
    dataset: str,
    dataset_file: str | Path,
    samples: str | Path,
    *,
    cache_dir: str | Path,
    parallel: int | None = None,
    min_time_limit: float = 1.0,
    gt_time_limit_factor: float = 4.0,
    log: str | Path | None = None,
    sandbox: IsolationConfig | None = None,
) -> dict[str, Any]:
    """Score ``samples`` (JSONL: task_id, solution; every task of ``dataset_file``, any number of samples
    each) on EvalPlus's base and plus tests, ``parallel`` checks at once (None: one per CPU), in the sandbox
    ``sandbox`` describes; return pass@k and the path of evalplus's results JSON, written next to the samples.
    evalplus's own output (progress, its summary) goes to ``log`` if given."""
    results = results_path(samples)
    results.unlink(missing_ok=True)
    parallel = parallel or os.cpu_count() or 1
    expected = _expected_outputs(dataset, Path(dataset_file), Path(cache_dir))
    inputs = _Inputs({DATASET: Path(dataset_file), SAMPLES: Path(samples), expected.name: expected})
    n_samples = sum(1 for line in Path(samples).read_bytes().splitlines() if line.strip())
    task = {
        "dataset": dataset,
        "parallel": parallel,
        "min_time_limit": min_time_limit,
        "gt_time_limit_factor": gt_time_limit_factor,
    }
    timeout_s = 60 + math.ceil(n_samples / parallel) * SAMPLE_S
    record = call_where_checks_run(sandbox or IsolationConfig(), parallel, _check, task, inputs, timeout_s)
    if log:
        Path(log).write_text(record["stderr"])
    if record["status"] != "passed":
        raise ScoringError(
            f"evalplus scoring of {samples} failed in the sandbox ({record['isolation']}): {record['status']}: "
            f"{record['reason']}\n{record['stderr'][-3000:]}"
        )
    try:
        json.loads(record["stdout"])["eval"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ScoringError(
            f"evalplus scoring of {samples}: unreadable results ({exc}): {record['stdout'][:300]!r}"
        ) from exc
    results.write_text(record["stdout"])
    return {**pass_at_k(results), "results": str(results)}


def pass_at_k(results: str | Path) -> dict[str, Any]:
    """base/plus pass@k (k in 1, 10, 100 up to the fewest samples of a task) from an evalplus results JSON,
    with the number of tasks and of samples."""
    from evalplus.eval import PASS, estimate_pass_at_k

    per_task = json.loads(Path(results).read_text())["eval"].values()
    total = np.array([len(r) for r in per_task])
    base = np.array([sum(s["base_status"] == PASS for s in r) for r in per_task])
    plus = np.array([sum(s["base_status"] == s["plus_status"] == PASS for s in r) for r in per_task])
    out: dict[str, Any] = {"n_tasks": len(total), "n_samples": int(total.sum())}
    for name, correct in (("base", base), ("plus", plus)):
        for k in KS:
            if total.min() >= k:
                out[f"{name}_pass@{k}"] = round(float(estimate_pass_at_k(total, correct, k).mean()), 4)
    return out


def _expected_outputs(dataset: str, dataset_file: Path, cache_dir: Path) -> Path:
    """``cache_dir/<md5>.pkl``, evalplus's expected outputs for ``dataset_file``, computed once (on the host: the
    canonical solutions are the dataset's, trusted) in a fresh interpreter."""
    key = hashlib.md5(dataset_file.read_bytes()).hexdigest()  # what evalplus names them by
    path = cache_dir / f"{key}.pkl"
    if path.is_file():
        return path
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from eval.evalplus_runner import groundtruth; print(groundtruth(*sys.argv[1:]))",
            dataset,
            str(dataset_file),
            str(cache_dir),
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise ScoringError(
            f"evalplus's expected outputs for {dataset_file} (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    if done.stdout.split()[-1] != key or not path.is_file():
        raise ScoringError(
            f"evalplus keyed the expected outputs of {dataset_file} {done.stdout.split()[-1]}, not md5 {key}"
        )
    return path


class _Inputs(dict):
    """The check's input files, name: path. Copied where the check runs; sent as their bytes when it runs on
    another node (Ray pickles a task's arguments)."""

    def __reduce__(self):
        return dict, ({name: path.read_bytes() for name, path in self.items()},)


def _check(
    isolation: IsolationConfig, task: dict[str, Any], inputs: dict[str, Path | bytes], timeout_s: float
) -> dict[str, Any]:
    """The scoring check, in a sandbox of its own on this node: its record."""
    site = sorted({sysconfig.get_paths()[key] for key in ("purelib", "platlib")})
    # not under /tmp, which the sandbox replaces with a tmpfs of its own; read by its user (65534 when run as root)
    with tempfile.TemporaryDirectory(prefix="amr-evalplus-", dir=INPUTS_ROOT) as folder:
        os.chmod(folder, 0o755)
        for name, source in inputs.items():
            target = Path(folder, name)
            if isinstance(source, bytes):
                target.write_bytes(source)
            else:
                shutil.copyfile(source, target)
            target.chmod(0o644)
        config = SandboxConfig(
            **isolation.model_dump(),
            workers=1,
            python=_python(),
            ro_binds=[*site, folder],
            timeout_s=timeout_s,
            memory_mb=16384,  # evalplus's checkers lower theirs to 4 GiB
            max_processes=8 * task["parallel"] + 64,  # evalplus's pool, a checker per worker, their threads
            max_open_files=1024,
            max_file_mb=256,
            disk_mb=1024,
            output_bytes=256 << 20,
        )
        code = f"{RUNNER}\nmain({ {**task, 'site': site, 'inputs': folder}!r})\n"
        with Sandbox(config) as sandbox:
            [record] = sandbox.run([{"code": code}])
    return record


@functools.cache
def _python() -> str:
    """An interpreter of this job's Python version that the sandbox can run (the job's site-packages are built
    for it): /usr/bin/python3, else the job's base interpreter."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = {}
    for candidate in ("/usr/bin/python3", sys._base_executable):
        if os.access(candidate, os.X_OK):
            found[candidate] = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True
            ).stdout.strip()
            if found[candidate] == version:
                return candidate
    raise SandboxError(f"no Python {version} interpreter to score in the sandbox (found: {found or 'none'})")
