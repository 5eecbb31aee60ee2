"""Sandbox throughput against evalplus's own checker, on the same pairs, side by side in one run.

    python bench/sandbox.py [--workers 2] [--rounds 3] [--empty 200]

Pairs: HumanEval+'s 164 canonical solutions with their base inputs; expected outputs come from the
canonical solutions run in this process, as evalplus's ground truth does. evalplus checks them with
``evalplus.eval.untrusted_check`` in a process pool of ``--workers`` (as ``evalplus.evaluate`` does);
amr's sandbox with a pool of ``--workers`` warm servers at the strongest level available (bwrap
here), the same inputs and outputs as a test. Also reported: the latency of one check of an empty
program, one at a time, on each side. Writes bench/results/sandbox.json.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import pickle
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from amr.config import SandboxConfig
from amr.data import HUMANEVAL_PLUS
from amr.sandbox import Sandbox

TEST = """import base64, math, pickle
from copy import deepcopy
_inputs, _expected = pickle.loads(base64.b64decode({blob!r}))

def check(candidate):
    for args, want in zip(_inputs, _expected):
        got = candidate(*deepcopy(args))
        assert got == want or (isinstance(want, float) and math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-6))
"""


def pairs() -> list[dict]:
    from evalplus.gen.util import trusted_exec

    with gzip.open(HUMANEVAL_PLUS, "rt") as f:
        problems = [json.loads(line) for line in f]
    out = []
    for p in problems:
        code = p["prompt"] + p["canonical_solution"]
        expected, ref_time = trusted_exec(code, p["base_input"], p["entry_point"], record_time=True)
        blob = base64.b64encode(pickle.dumps((p["base_input"], expected))).decode()
        out.append(
            {
                "code": code,
                "entry_point": p["entry_point"],
                "inputs": p["base_input"],
                "expected": expected,
                "atol": p["atol"],
                "ref_time": ref_time,
                "test": TEST.format(blob=blob),
            }
        )
    return out


def evalplus_check(pair: dict) -> str:
    from evalplus.eval import untrusted_check

    return untrusted_check(
        "humaneval",
        pair["code"],
        pair["inputs"],
        pair["entry_point"],
        pair["expected"],
        pair["atol"],
        pair["ref_time"],
        fast_check=True,
    )[0]


def run_evalplus(work: list[dict], workers: int) -> tuple[float, list[str]]:
    with ProcessPoolExecutor(workers) as pool:
        start = time.perf_counter()
        verdicts = list(pool.map(evalplus_check, work))
        return time.perf_counter() - start, verdicts


def run_amr(work: list[dict], sandbox: Sandbox) -> tuple[float, list[str]]:
    start = time.perf_counter()
    records = sandbox.run(work)
    return time.perf_counter() - start, [r["status"] for r in records]


def empty_latency(n: int) -> dict[str, float]:
    from evalplus.eval import untrusted_check

    evalplus_s = []
    for _ in range(n):
        start = time.perf_counter()
        untrusted_check("humaneval", "def f():\n    return None\n", [[]], "f", [None], 0, [0.0], fast_check=True)
        evalplus_s.append(time.perf_counter() - start)
    amr_s = []
    with Sandbox(SandboxConfig(workers=1)) as sandbox:
        for _ in range(n):
            start = time.perf_counter()
            sandbox.run([{"code": "", "test": ""}])
            amr_s.append(time.perf_counter() - start)
    return {"evalplus_ms": 1000 * statistics.median(evalplus_s), "amr_ms": 1000 * statistics.median(amr_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="times the 164 pairs are checked")
    parser.add_argument("--empty", type=int, default=200, help="empty-program checks for the latency")
    parser.add_argument("--output", default="bench/results/sandbox.json")
    args = parser.parse_args()
    work = pairs() * args.rounds
    start = time.perf_counter()
    sandbox = Sandbox(SandboxConfig(workers=args.workers))
    startup = time.perf_counter() - start
    with sandbox:
        amr_s, amr_verdicts = run_amr(work, sandbox)
    evalplus_s, evalplus_verdicts = run_evalplus(work, args.workers)
    latency = empty_latency(args.empty)
    report = {
        "pairs": len(work),
        "workers": args.workers,
        "isolation": sandbox.level,
        "evalplus": {
            "seconds": evalplus_s,
            "checks_per_s": len(work) / evalplus_s,
            "passed": evalplus_verdicts.count("pass"),
        },
        "amr": {
            "seconds": amr_s,
            "checks_per_s": len(work) / amr_s,
            "passed": amr_verdicts.count("passed"),
            "pool_start_s": startup,
        },
        "empty_program_latency": latency,
    }
    report["throughput_ratio_amr_over_evalplus"] = report["amr"]["checks_per_s"] / report["evalplus"]["checks_per_s"]
    for side in ("evalplus", "amr"):
        r = report[side]
        print(
            f"{side:>9}: {len(work)} checks in {r['seconds']:.2f} s = {r['checks_per_s']:.1f} checks/s, "
            f"{r['passed']} passed"
        )
    print(f"amr pool start ({args.workers} {sandbox.level} servers): {startup:.2f} s")
    print(
        f"empty program, one check at a time: evalplus {latency['evalplus_ms']:.1f} ms, amr {latency['amr_ms']:.1f} ms"
    )
    print(f"throughput ratio (amr / evalplus): {report['throughput_ratio_amr_over_evalplus']:.2f}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
