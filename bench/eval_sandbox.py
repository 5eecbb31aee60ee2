"""EvalPlus scoring inside the sandbox (``eval.score.score``) against evalplus alone, side by side in one run.

    python bench/eval_sandbox.py [--tasks 20] [--rounds 5] [--parallel 2]

The canonical solutions of the first ``--tasks`` tasks of HumanEval+ and MBPP+ v0.1.0, scored ``--rounds`` times
each way, alternating: evalplus alone (``evalplus.evaluate.evaluate`` in a fresh interpreter on the host, as
scoring ran before it moved into the sandbox) and ``score`` (the same call as one check in the sandbox, at the
strongest level available). The expected outputs are computed first, once, and are not timed. Reports the
median seconds per scoring, the ratio, and both pass@1s (they must agree). Writes bench/results/eval_sandbox.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from eval.data import dataset_file, load_tasks
from eval.score import pass_at_k, results_path, score

ALONE = """
import sys
from eval.evalplus_runner import _offline
from evalplus.evaluate import evaluate
dataset, data, samples, cache, parallel = sys.argv[1:]
with _offline(dataset, data, cache):
    evaluate(dataset=dataset, samples=samples, parallel=int(parallel), min_time_limit=10.0, gt_time_limit_factor=50.0)
"""
PATIENT = {"min_time_limit": 10.0, "gt_time_limit_factor": 50.0}
"""The tests' time limits: on a loaded 2-core machine evalplus's defaults time some canonical solutions out."""


def alone(dataset: str, data: Path, samples: Path, cache: Path, parallel: int) -> dict:
    results_path(samples).unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, "-c", ALONE, dataset, str(data), str(samples), str(cache), str(parallel)],
        check=True,
        capture_output=True,
    )
    return pass_at_k(results_path(samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--output", default="bench/results/eval_sandbox.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="amr-bench-eval-"))
    report = {"tasks": args.tasks, "rounds": args.rounds, "parallel": args.parallel, "datasets": {}}
    try:
        for dataset in ("humaneval", "mbpp"):
            data = dataset_file(dataset, limit=args.tasks, cache_dir=work)
            samples = work / f"{dataset}.jsonl"
            samples.write_text(
                "".join(
                    json.dumps({"task_id": t["task_id"], "solution": t["prompt"] + t["canonical_solution"]}) + "\n"
                    for t in load_tasks(data)
                )
            )
            score(dataset, data, samples, cache_dir=work, parallel=args.parallel, **PATIENT)  # expected outputs
            seconds: dict[str, list[float]] = {"alone": [], "sandbox": []}
            scores = {}
            for _ in range(args.rounds):
                start = time.perf_counter()
                scores["alone"] = alone(dataset, data, samples, work, args.parallel)
                seconds["alone"].append(time.perf_counter() - start)
                start = time.perf_counter()
                scores["sandbox"] = score(dataset, data, samples, cache_dir=work, parallel=args.parallel, **PATIENT)
                seconds["sandbox"].append(time.perf_counter() - start)
            scores["sandbox"].pop("results")
            median = {side: statistics.median(s) for side, s in seconds.items()}
            report["datasets"][dataset] = {
                "seconds": seconds,
                "median_s": median,
                "ratio": median["sandbox"] / median["alone"],
                "pass@1": {side: (s["base_pass@1"], s["plus_pass@1"]) for side, s in scores.items()},
            }
            row = report["datasets"][dataset]
            print(
                f"{dataset}, {args.tasks} tasks: evalplus alone {median['alone']:.2f} s, in the sandbox "
                f"{median['sandbox']:.2f} s (x{row['ratio']:.2f}); pass@1 base/plus alone {row['pass@1']['alone']}, "
                f"sandbox {row['pass@1']['sandbox']}",
                flush=True,
            )
            if scores["alone"] != scores["sandbox"]:
                sys.exit(f"{dataset}: the scores differ: {scores}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
