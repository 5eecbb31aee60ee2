"""Scaling of the distillation job: instructions per hour against teacher replicas and against input size,
with the driver's memory.

    python bench/scale.py [--replicas 1 2 4] [--per-replica 150] [--sizes 1000 10000 100000] [--size-replicas 16]

The teacher is scripted (bench/pipeline.py's answers) and answers as a remote API does: after a fixed
``--latency``, one request per replica at a time, so the figures measure the pipeline and not these cores.
The job runs as many HTTP workers as replicas. Replicas: weak scaling, ``--per-replica`` instructions per
replica, so a perfect pipeline takes the same time at every count; efficiency = rate(R) / (R x rate(1)).
A warm-up run (Ray workers, imports) comes first and is not counted.
Sizes: ``--size-replicas`` replicas (enough that the pipeline, not the teacher, is the limit); driver memory is the job process's peak RSS growth over
the run (ru_maxrss) and its RSS after. Method ``direct`` (one teacher call per instruction) by default:
the amr method's waves are measured by bench/pipeline.py. Writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import psutil
import ray

from amr.config import DistillConfig
from amr.runtime import init_ray
from amr.scripted_teacher import ScriptedTeacher
from pipeline import script  # bench/pipeline.py (this folder is on sys.path)
from jobs import distill


def _rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def measure(rows: int, replicas: int, latency: float, method: str) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="amr-scale-"))
    source = tmp / "instructions.jsonl"
    source.write_text("".join(json.dumps({"id": f"s/{i}", "instruction": f"Task {i}. Scale a number.",
                                          "tests": [f"assert solve_{i}(1) == {i + 1}"]}) + "\n" for i in range(rows)))
    with ScriptedTeacher(script, latency_s=latency, slots=replicas, keep_requests=False) as teacher:
        config = DistillConfig(run_dir=str(tmp / "run"), method=method,
                               teacher=teacher.config(concurrency=replicas, batch_size=1))
        config.input.source = str(source)
        config.modules.seed_limit = 0
        before, peak_before = _rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        start = time.perf_counter()
        manifest = distill.run(config)
        seconds = time.perf_counter() - start
    assert manifest["dataset"]["rows"] == rows, manifest["dataset"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": rows, "replicas": replicas, "seconds": round(seconds, 1),
            "per_hour": round(rows / seconds * 3600), "ideal_per_hour": round(replicas / latency * 3600),
            "teacher_calls": teacher.calls, "driver_rss_before_mib": round(before),
            "driver_peak_growth_mib": round(max(0.0, peak - peak_before)), "driver_rss_after_mib": round(_rss_mib())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--per-replica", type=int, default=150)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--latency", type=float, default=0.2, help="Seconds per teacher answer.")
    parser.add_argument("--size-replicas", type=int, default=16)
    parser.add_argument("--method", default="direct")
    args = parser.parse_args()
    init_ray(DistillConfig().ray)
    report: dict = {"latency_s": args.latency, "method": args.method, "replicas": [], "sizes": []}
    measure(10, 1, args.latency, args.method)  # warm-up
    for replicas in args.replicas:
        report["replicas"].append(measure(args.per_replica * replicas, replicas, args.latency, args.method))
        print(json.dumps(report["replicas"][-1]), flush=True)
    base = report["replicas"][0]["per_hour"] / report["replicas"][0]["replicas"]
    for r in report["replicas"]:
        r["efficiency"] = round(r["per_hour"] / (r["replicas"] * base), 2)
    for rows in args.sizes:
        report["sizes"].append(measure(rows, args.size_replicas, args.latency, args.method))
        print(json.dumps(report["sizes"][-1]), flush=True)
    ray.shutdown()
    print(json.dumps(report, indent=2))
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/scale.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
