"""Scaling of the distillation job: instructions per hour against teacher replicas and against input size,
with the driver's memory; and the driver's memory of `amr instructions decontaminate` against input size.

    python bench/scale.py [--replicas 1 2 4] [--per-replica 150] [--sizes 1000 10000 100000] [--size-replicas 16]
                          [--decontamination-sizes 1000 10000]

The teacher is scripted (bench/scripted.py's answers) and answers as a remote API does: after a fixed
``--latency``, one request per replica at a time, so the figures measure the pipeline and not these cores.
It runs in this process; each measured job runs in a fresh process of its own (its own local Ray), so the
driver's memory is the job's alone. There a warm-up job of ``WARM_UP`` rows (Ray workers, imports) comes
first and is not counted. The job runs as many HTTP workers as replicas. An empty ``--replicas``,
``--sizes`` or ``--decontamination-sizes`` skips that part.
Replicas: weak scaling, ``--per-replica`` instructions per replica, so a perfect pipeline takes the same
time at every count; efficiency = rate(R) / (R x rate(1)), of the whole job (``per_hour``: its start-up,
the stage actors', and its last stage included) and of its streaming phase (``streaming_per_hour``: the
teacher's answers per hour from its first answer in the measured job to its last; one per instruction with
``direct``).
Sizes: ``--size-replicas`` replicas (enough that the pipeline, not the teacher, is the limit). Driver memory:
its RSS before the measured job, the highest RSS seen during it (sampled every 0.1 s) and its RSS after;
flat memory is the same peak at every size. Method ``direct`` (one teacher call per instruction) by
default: the amr method's waves are measured by bench/pipeline.py. Decontamination: the same instructions
through every check (no teacher), the same memory figures. Writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: bench.scripted, tests.support

from amr.config import DistillConfig
from bench.scripted import script, write_instructions
from tests.support.scripted_teacher import ScriptedTeacher

WARM_UP = 10


def _job(config: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: a warm-up job, then the measured one."""
    from amr.pipelines import distill
    from amr.runtime import init_ray

    config = DistillConfig(**config)
    init_ray(config.ray)
    tmp = Path(config.run_dir).parent
    write_instructions(tmp / "warm-up.jsonl", WARM_UP, "s", mbpp=False)
    distill.run(
        config.model_copy(
            update={
                "run_dir": str(tmp / "warm-up"),
                "input": config.input.model_copy(update={"source": str(tmp / "warm-up.jsonl")}),
            }
        )
    )
    manifest, measured = _measured(lambda: distill.run(config))
    return {**measured, "dataset_rows": manifest["dataset"]["rows"]}


def _decontamination_job(source: str) -> dict[str, Any]:
    """In a fresh process: ``amr instructions decontaminate`` of a warm-up file, then of ``source``."""
    from amr.config import InstructionsConfig
    from amr.pipelines import instructions
    from amr.runtime import init_ray

    config = InstructionsConfig()
    init_ray(config.ray)
    tmp = Path(source).parent
    write_instructions(tmp / "warm-up.jsonl", WARM_UP, "s", mbpp=False)
    instructions.decontaminate(str(tmp / "warm-up.jsonl"), config, str(tmp / "warm-up.clean.jsonl"))
    report, measured = _measured(lambda: instructions.decontaminate(source, config, str(tmp / "clean.jsonl")))
    return {**measured, "dataset_rows": report["input_rows"]}


def _measured(run: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """``run()``'s result, its seconds and this process's RSS before, at its highest (sampled every 0.1 s)
    and after; then Ray is shut down."""
    import ray

    process, peak, done = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], process.memory_info().rss)

    before = process.memory_info().rss
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    after = process.memory_info().rss
    ray.shutdown()
    # started_at: perf_counter is CLOCK_MONOTONIC on Linux, the clock of every process (the teacher's too)
    return result, {
        "seconds": seconds,
        "started_at": start,
        "driver_rss_before_mib": before >> 20,
        "driver_peak_rss_mib": max(peak[0], before, after) >> 20,
        "driver_rss_after_mib": after >> 20,
    }


def measure(rows: int, replicas: int, latency: float, method: str) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="amr-scale-"))
    write_instructions(tmp / "instructions.jsonl", rows, "s", mbpp=False)
    with ScriptedTeacher(script, latency_s=latency, slots=replicas, keep_requests=False) as teacher:
        config = DistillConfig(
            run_dir=str(tmp / "run"), method=method, teacher=teacher.config(concurrency=replicas, batch_size=1)
        )
        config.input.source = str(tmp / "instructions.jsonl")
        config.modules.bootstrap_limit = 0
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            job = pool.submit(_job, config.model_dump()).result()
    assert job["dataset_rows"] == rows, job
    answered = [t for t in teacher.answered_at if t >= job["started_at"]]  # the warm-up's calls left out
    return {
        "rows": rows,
        "replicas": replicas,
        "seconds": round(job["seconds"], 1),
        "per_hour": round(rows / job["seconds"] * 3600),
        "streaming_per_hour": round((len(answered) - 1) / (answered[-1] - answered[0]) * 3600),
        "ideal_per_hour": round(replicas / latency * 3600),
        "teacher_calls": len(answered),
        "driver_rss_before_mib": job["driver_rss_before_mib"],
        "driver_peak_rss_mib": job["driver_peak_rss_mib"],
        "driver_rss_after_mib": job["driver_rss_after_mib"],
    }


def measure_decontamination(rows: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="amr-scale-"))
    write_instructions(tmp / "instructions.jsonl", rows, "s", mbpp=False)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        job = pool.submit(_decontamination_job, str(tmp / "instructions.jsonl")).result()
    assert job["dataset_rows"] == rows, job
    return {
        "rows": rows,
        "seconds": round(job["seconds"], 1),
        "per_hour": round(rows / job["seconds"] * 3600),
        **{k: v for k, v in job.items() if k.startswith("driver_")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--per-replica", type=int, default=150)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10_000, 100_000])
    parser.add_argument("--latency", type=float, default=0.2, help="Seconds per teacher answer.")
    parser.add_argument("--size-replicas", type=int, default=16)
    parser.add_argument("--method", default="direct")
    parser.add_argument("--decontamination-sizes", type=int, nargs="*", default=[1000, 10_000])
    args = parser.parse_args()
    report: dict = {
        "latency_s": args.latency,
        "method": args.method,
        "replicas": [],
        "sizes": [],
        "decontamination_sizes": [],
    }
    for replicas in args.replicas:
        report["replicas"].append(measure(args.per_replica * replicas, replicas, args.latency, args.method))
        print(json.dumps(report["replicas"][-1]), flush=True)
    if report["replicas"]:
        first = report["replicas"][0]
        for r in report["replicas"]:
            for rate, name in (("per_hour", "efficiency"), ("streaming_per_hour", "streaming_efficiency")):
                r[name] = round(r[rate] / (r["replicas"] * first[rate] / first["replicas"]), 2)
    for rows in args.sizes:
        report["sizes"].append(measure(rows, args.size_replicas, args.latency, args.method))
        print(json.dumps(report["sizes"][-1]), flush=True)
    for rows in args.decontamination_sizes:
        report["decontamination_sizes"].append(measure_decontamination(rows))
        print(json.dumps(report["decontamination_sizes"][-1]), flush=True)
    print(json.dumps(report, indent=2))
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/scale.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
