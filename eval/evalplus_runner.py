"""EvalPlus inside the sandbox: the source of the check that scores samples with ``evalplus.evaluate.evaluate``, its
process pool, checkers, guard and time limits as evalplus has them; and evalplus's expected outputs, computed by
the host from the canonical solutions.

Standard library and evalplus only: ``eval.score`` runs this file's text as a check's code, followed by a
``main({...})`` call, with a read-only directory of inputs (``dataset.jsonl``, ``samples.jsonl`` and
``<md5>.pkl``, the expected outputs). evalplus's results are the only thing written to the check's stdout:
its own output and anything its checkers print go to stderr.

evalplus 0.3.1 finds its dataset through module globals read when it is imported (``HUMANEVAL_OVERRIDE_PATH``,
``MBPP_OVERRIDE_PATH``) and downloads it from GitHub otherwise; it keys the canonical solutions' expected outputs
by the dataset file's md5 in ``CACHE_DIR``. ``evaluate`` returns nothing: it writes
``<samples>_eval_results.json`` next to the samples.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sys
import threading
import types
from collections.abc import Iterator

DATASET, SAMPLES = "dataset.jsonl", "samples.jsonl"


class EvalPlusDownload(RuntimeError):
    """evalplus tried to download a dataset: a bug here, never allowed."""


def main(task: dict) -> None:
    """``task``: dataset, inputs (the directory of the input files), site (the job's site-packages), and
    evalplus's parallel, min_time_limit and gt_time_limit_factor. Writes evalplus's results JSON to stdout."""
    sys.path[:] = [p for p in sys.path if not p.endswith(("site-packages", "dist-packages"))] + task["site"]
    for threads in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[threads] = "1"  # no BLAS thread pool: the check's process limit counts threads too
    answer = os.dup(1)
    os.dup2(2, 1)  # evalplus prints its summary; a checker may print anything: none of it is the answer
    shutil.copy(os.path.join(task["inputs"], SAMPLES), SAMPLES)  # evalplus writes its results beside them
    with _offline(task["dataset"], os.path.join(task["inputs"], DATASET), task["inputs"]):
        from evalplus.evaluate import evaluate

        evaluate(
            dataset=task["dataset"],
            samples=SAMPLES,
            parallel=task["parallel"],
            min_time_limit=task["min_time_limit"],
            gt_time_limit_factor=task["gt_time_limit_factor"],
        )
    with open(SAMPLES.removesuffix(".jsonl") + "_eval_results.json", "rb") as f, os.fdopen(answer, "wb") as out:
        shutil.copyfileobj(f, out)


def groundtruth(dataset: str, dataset_file: str, cache_dir: str) -> str:
    """evalplus's expected outputs of ``dataset_file`` (its canonical solutions run on every input), written to
    ``cache_dir/<key>.pkl`` unless there; returns the key."""
    from evalplus.data import get_human_eval_plus, get_human_eval_plus_hash, get_mbpp_plus, get_mbpp_plus_hash
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
    from evalplus.evaluate import get_groundtruth

    with _offline(dataset, dataset_file, cache_dir):
        if dataset == "humaneval":
            problems, key, not_none = get_human_eval_plus(), get_human_eval_plus_hash(), []
        else:
            problems, key, not_none = get_mbpp_plus(), get_mbpp_plus_hash(), MBPP_OUTPUT_NOT_NONE_TASKS
        get_groundtruth(problems, key, not_none)
    return key


@contextlib.contextmanager
def _offline(dataset: str, dataset_file: str, cache_dir: str) -> Iterator[None]:
    """Point evalplus at ``dataset_file`` and ``cache_dir``; make any download attempt an error; make its
    stall watchdog thread a daemon (a plain thread that sleeps 20 s keeps the interpreter alive after a run)."""
    import evalplus.data.humaneval as humaneval
    import evalplus.data.mbpp as mbpp
    import evalplus.evaluate as evaluate

    def refuse(url: str, path: str) -> None:
        raise EvalPlusDownload(f"evalplus tried to download {url} (to {path}); datasets come from amr/data only")

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
