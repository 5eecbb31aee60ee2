"""Teacher faults, and what the job does about them: per fault, rows lost and time added.

    python bench/faults.py [--rows 20] [--output runs/bench-faults]

``amr distill --method direct`` over ``--rows`` instructions against the scripted teacher (an OpenAI-compatible
server on 127.0.0.1) that injects one fault kind: transient (each request fails twice, then is answered) and
permanent (every request fails). A rerun after the permanent outage, with the fault gone, shows the resume
asking again for exactly the failed rows. Prints a Markdown table (for docs/benchmarks.md) and writes
``<output>/faults.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: tests.support (the scripted teacher)

WHAT = {
    "500": "HTTP 500",
    "503": "HTTP 503",
    "429": "HTTP 429",
    "drop": "connection dropped",
    "no-choices": "200 without choices",
    "html": "200 HTML page (a proxy's)",
    "slow": "no answer before the deadline",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--output", default="runs/bench-faults")
    args = parser.parse_args()

    from amr.config import DistillConfig, RayConfig
    from amr.pipelines import distill
    from amr.runtime import init_ray
    from tests.support.scripted_teacher import FAULTS, ScriptedTeacher

    out = Path(args.output)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    source = out / "instructions.jsonl"
    source.write_text(
        "".join(json.dumps({"id": f"r{i}", "instruction": f"Task {i}: write f{i}()."}) + "\n" for i in range(args.rows))
    )
    init_ray(RayConfig())
    answer = lambda messages: "```python\ndef f():\n    return 1\n```"  # noqa: E731

    def job(name: str, server: ScriptedTeacher) -> tuple[dict, float]:
        cfg = DistillConfig(method="direct", run_dir=str(out / name))
        cfg.input.source = str(source)
        cfg.teacher = server.config(max_retries=3, base_retry_wait_s=0.2, request_timeout_s=2.0)
        began = time.perf_counter()
        manifest = distill.run(cfg)
        return manifest, time.perf_counter() - began

    with ScriptedTeacher(answer) as server:
        _, baseline = job("none", server)
    results = []
    for fault in FAULTS:
        with ScriptedTeacher(answer, faults=lambda m, attempt, f=fault: f if attempt < 2 else None, slow_s=5) as server:
            manifest, seconds = job(f"transient-{fault}", server)
        outage = {"on": True}
        with ScriptedTeacher(answer, faults=lambda m, a, f=fault, o=outage: f if o["on"] else None, slow_s=5) as server:
            began = time.perf_counter()
            try:
                down, down_s = job(f"permanent-{fault}", server)
            except Exception as exc:  # an endpoint that never answers in time stops the job (EngineError, raised
                if "EngineError" not in repr(exc) + str(exc):  # from a Ray Data task: wrapped)
                    raise
                down, down_s = {"stopped": "EngineError"}, time.perf_counter() - began
            outage["on"] = False
            asked = server.calls
            resumed, _ = job(f"permanent-{fault}", server)
            asked_again = server.calls - asked
        results.append(
            {
                "fault": fault,
                "transient_rows": manifest["dataset"]["rows"],
                "transient_added_s": round(seconds - baseline, 1),
                "permanent_rows": down["dataset"]["rows"] if "dataset" in down else None,
                "permanent_errors": down["stages"]["direct"]["errors"] if "stages" in down else None,
                "permanent_s": round(down_s, 1),
                "resume_asked": asked_again,
                "resume_rows": resumed["dataset"]["rows"],
            }
        )
    (out / "faults.json").write_text(
        json.dumps({"rows": args.rows, "baseline_s": round(baseline, 1), "faults": results})
    )
    print(f"{args.rows} instructions, `direct`, no fault: {baseline:.1f} s\n")
    print(
        "| fault | transient (2 failures per request): rows kept, time added | permanent: rows kept, errors, time "
        "| rerun after it: requests, rows |"
    )
    print("|---|---|---|---|")
    for r in results:
        print(
            f"| {WHAT[r['fault']]} | {r['transient_rows']}/{args.rows}, +{r['transient_added_s']} s "
            + (
                f"| {r['permanent_rows']}/{args.rows}, {r['permanent_errors']} errors, {r['permanent_s']} s "
                if r["permanent_rows"] is not None
                else f"| the job stops (EngineError: not answering), {r['permanent_s']} s "
            )
            + f"| {r['resume_asked']}, {r['resume_rows']}/{args.rows} |"
        )


if __name__ == "__main__":
    main()
