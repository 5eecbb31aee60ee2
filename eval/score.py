"""Scoring with EvalPlus (``evalplus.evaluate.evaluate``, in a fresh process), offline.

evalplus 0.3.1 finds its dataset through module globals read when it is imported (``HUMANEVAL_OVERRIDE_PATH``,
``MBPP_OVERRIDE_PATH``) and downloads it from GitHub otherwise; it caches the canonical solutions' expected
outputs in ``CACHE_DIR`` keyed by the dataset file's md5. ``evaluate`` returns nothing: it writes
``<samples>_eval_results.json`` next to the samples, and reads an existing one back instead of scoring again.

Its checkers are forked from the process that calls ``evaluate`` and cap their address space at 4 GiB
(``RLIMIT_AS``). A Ray driver already maps ~9 GiB (the object store), so checkers forked from it fail every
allocation of a large input; scoring therefore runs in a fresh interpreter of its own, which imports nothing of
the job (a spawned process imports the job's main module again, and evalplus's checkers forked from it were
measured ~5x slower).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

KS = (1, 10, 100)


class EvalPlusDownload(RuntimeError):
    """evalplus tried to download a dataset: a bug here, never allowed."""


def results_path(samples: str | Path) -> Path:
    """Where ``evaluate`` writes its results for a samples file."""
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
) -> dict[str, Any]:
    """Score ``samples`` (JSONL: task_id, solution; every task of ``dataset_file``, any number of samples
    each) on EvalPlus's base and plus tests, ``parallel`` checks at once (None: one per CPU); return pass@k and
    the path of evalplus's results JSON. evalplus's own output (progress, its summary) goes to ``log`` if given."""
    results = results_path(samples)
    results.unlink(missing_ok=True)  # evalplus would read a stale one back
    arguments = [
        dataset,
        str(dataset_file),
        str(samples),
        str(cache_dir),
        parallel or os.cpu_count(),
        min_time_limit,
        gt_time_limit_factor,
        log and str(log),
    ]
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys; from eval.score import _evaluate; _evaluate(*json.loads(sys.argv[1]))",
            json.dumps(arguments),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"evalplus scoring of {samples} failed (exit {done.returncode}):\n{done.stdout[-3000:]}")
    return {**pass_at_k(results), "results": str(results)}


def _evaluate(
    dataset: str,
    dataset_file: str,
    samples: str,
    cache_dir: str,
    parallel: int,
    min_time_limit: float,
    gt_time_limit_factor: float,
    log: str | None,
) -> None:
    from evalplus.evaluate import evaluate

    with _offline(dataset, dataset_file, cache_dir), _output(log):
        evaluate(
            dataset=dataset,
            samples=samples,
            parallel=parallel,
            min_time_limit=min_time_limit,
            gt_time_limit_factor=gt_time_limit_factor,
        )


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


@contextlib.contextmanager
def _offline(dataset: str, dataset_file: str | Path, cache_dir: str | Path) -> Iterator[None]:
    """Point evalplus at ``dataset_file`` and ``cache_dir``; make any download attempt an error; make its
    stall watchdog thread a daemon (a plain thread that sleeps 20 s keeps the interpreter alive after a run)."""
    import evalplus.data.humaneval as humaneval
    import evalplus.data.mbpp as mbpp
    import evalplus.evaluate as evaluate

    def refuse(url: str, path: str) -> None:
        raise EvalPlusDownload(f"evalplus tried to download {url} (to {path}); datasets come from amr/data only")

    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    module, name = (humaneval, "HUMANEVAL_OVERRIDE_PATH") if dataset == "humaneval" else (mbpp, "MBPP_OVERRIDE_PATH")
    patches = [
        (module, name, str(dataset_file)),
        (humaneval, "make_cache", refuse),
        (mbpp, "make_cache", refuse),
        (evaluate, "CACHE_DIR", str(cache_dir)),
        (evaluate, "threading", types.SimpleNamespace(Thread=functools.partial(threading.Thread, daemon=True))),
    ]
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in patches]
    try:
        for obj, attr, value in patches:
            setattr(obj, attr, value)
        yield
    finally:
        for obj, attr, value in saved:
            setattr(obj, attr, value)


@contextlib.contextmanager
def _output(log: str | Path | None) -> Iterator[None]:
    if log is None:
        yield
        return
    with open(log, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        yield
