"""The pipeline's own cost, with an instant scripted teacher, and LanceDB top-1 latency.

    python bench/pipeline.py [--instructions 200 600] [--wave-size 100] [--sizes 10000 100000]

Part 1 runs the ``amr`` method end to end (Ray Data stages, parsing, MiniLM embeddings, LanceDB
retrieval and inserts, the bwrap sandbox, Parquet writes) on MBPP train instructions with a scripted
teacher that answers at once over HTTP, so nearly all wall time is spent outside the teacher (its
server's busy time is reported). Reported per input size: instructions/s, per core, the wall time per
stage and per wave step, and each wave's fixed overhead (its wall time less the teacher, embedding and sandbox
steps); across two sizes, the marginal rate (extra instructions over extra seconds)
and the fixed cost it leaves. Part 2: top-1 cosine search
latency on tables of random 384-d modules, brute force and with the ANN index: one query at a time
(median of 200) and per query when 200 go in one call, as retrieval sends a wave's. Writes bench/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: tests.support (the scripted teacher)

from amr.config import DistillConfig
from amr.prompts import decompose, response_evolution, testgen
from tests.support.scripted_teacher import ScriptedTeacher


def script(messages: list[dict[str, str]]) -> str:
    """Per instruction (its number in the text), two small functions: a helper and the answer, in the direct and the
    evolved answer alike, so that bootstrapping fills the module table and every wave retrieves, evolves and grows
    it."""
    system, user = messages[0]["content"], messages[1]["content"]
    if system == testgen.SYSTEM:
        name = re.search(r"### Function Under Test: (\w+)", user).group(1)
        return f"```python\ndef test_{name}():\n    assert {name}(3) == {name}(3)\n```"
    n = re.search(r"Task (\d+)", user).group(1)
    helper = f'def scale_{n}(x: int) -> int:\n    """Multiply x by {n}."""\n    return x * {n}\n'
    answer = (
        f'def solve_{n}(x: int) -> int:\n    """Task {n}: scale x by {n} and add one."""\n    return scale_{n}(x) + 1\n'
    )
    if system == decompose.SYSTEM:
        return (
            "```python\n"
            + helper.replace(f"return x * {n}", "...")
            + "\n"
            + answer.split("    return")[0]
            + "    ...\n```"
        )
    if system == response_evolution.SYSTEM:
        return f"```python\n{helper}\n\n{answer}```"
    return f"```python\n{helper}\n\n{answer}```"  # the direct answer: bootstrapping verifies both functions


def pipeline(instructions: int, wave_size: int) -> dict:
    from amr.data import mbpp_train
    from amr.pipelines import distill

    tmp = Path(tempfile.mkdtemp(prefix="amr-bench-"))
    source = tmp / "instructions.jsonl"
    rows = (mbpp_train() * (instructions // 374 + 1))[:instructions]
    source.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"b/{i}",
                    "instruction": f"Task {i}. {r['instruction']}",
                    "tests": [f"assert solve_{i}(1) == {i + 1}"],
                }
            )
            + "\n"
            for i, r in enumerate(rows)
        )
    )
    with ScriptedTeacher(script) as teacher:
        config = DistillConfig(run_dir=str(tmp / "run"), wave_size=wave_size, teacher=teacher.config(concurrency=4))
        config.input.source = str(source)
        start = time.perf_counter()
        manifest = distill.run(config)
        wall = time.perf_counter() - start
        teacher_s = teacher.busy_s
    evolved = manifest["stages"]["evolve"]["rows"] - sum(manifest["stages"]["evolve"]["kept_direct"].values())
    if not (manifest["modules"]["rows"] and evolved and manifest["dataset"]["response_accuracy"] == 1.0):
        # the scripted answers are all right and reuse each other's helpers: anything less measures a broken run
        sys.exit(
            f"bench/pipeline.py: the scripted run did not do the method's work ({manifest['modules']['rows']} modules, "
            f"{evolved} answers evolved, accuracy {manifest['dataset']['response_accuracy']}); see {tmp}/run"
        )
    stages = {name: s.get("wall_time_s") for name, s in manifest["stages"].items() if "wall_time_s" in s}
    steps: dict[str, float] = {}
    for w in manifest["modules"]["waves"]:
        for step, s in w["seconds"].items():
            steps[step] = steps.get(step, 0.0) + s
    steps = {step: round(s, 2) for step, s in steps.items()}
    # a wave's fixed overhead: everything but the teacher (evolve), embedding (novelty) and sandbox work with
    # the teacher's tests (verify): reading its slice, retrieval, inserts, writing its files
    overhead = [
        w["wall_time_s"] - sum(w["seconds"].get(k, 0) for k in ("evolve", "novelty", "verify"))
        for w in manifest["modules"]["waves"]
    ]
    return {
        "instructions": instructions,
        "wave_size": wave_size,
        "wall_s": round(wall, 1),
        "teacher_busy_share": round(teacher_s / wall, 4),
        "instructions_per_s": instructions / wall,
        "per_core": instructions / wall / (os.cpu_count() or 1),
        "stage_wall_s": stages,
        "wave_steps_s": steps,
        "wave_overhead_s": {"mean": round(sum(overhead) / len(overhead), 3), "max": round(max(overhead), 3)},
        "modules": manifest["modules"]["rows"],
        "evolved": evolved,
        "response_accuracy": manifest["dataset"]["response_accuracy"],
    }


def search_latency(sizes: list[int], dim: int = 384, queries: int = 200) -> list[dict]:
    from amr.modules import ModuleDB

    rng = np.random.default_rng(0)
    out = []
    db = ModuleDB(tempfile.mkdtemp(prefix="amr-lance-"), dim)
    have = 0
    for size in sorted(sizes):
        vectors = rng.standard_normal((size - have, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for first in range(0, len(vectors), 10_000):
            chunk = vectors[first : first + 10_000]
            db.insert(
                {
                    "name": f"f{have + first + i}",
                    "signature": "def f()",
                    "description": "",
                    "code": f"def f{have + first + i}():\n    return {have + first + i}\n",
                    "test": "",
                    "run": "bench",
                    "instruction_id": "",
                    "stage": "bench",
                    "verdict": "passed",
                    "vector": v,
                }
                for i, v in enumerate(chunk)
            )
        have = size
        probe = rng.standard_normal((queries, dim)).astype(np.float32)
        result = {
            "modules": size,
            "brute_force_ms": _median_ms(db, probe),
            "brute_force_batched_ms": _batched_ms(db, probe),
        }
        if size >= 50_000:
            start = time.perf_counter()
            db.index(min_rows=1)
            result["index_build_s"] = round(time.perf_counter() - start, 1)
            result["indexed_ms"] = _median_ms(db, probe)
            result["indexed_batched_ms"] = _batched_ms(db, probe)
        out.append(result)
    return out


def _median_ms(db, probe: np.ndarray) -> float:
    handle = db.at()
    times = []
    for vector in probe:
        start = time.perf_counter()
        handle.search(vector).distance_type("cosine").limit(1).select(["name", "_distance"]).to_list()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 2)


def _batched_ms(db, probe: np.ndarray) -> float:
    """Per query, when a wave's queries go in one ``ModuleDB.search`` call (as retrieval sends them)."""
    start = time.perf_counter()
    db.search(probe)
    return round(1000 * (time.perf_counter() - start) / len(probe), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instructions", type=int, nargs="+", default=[600, 2000])
    parser.add_argument("--wave-size", type=int, default=100)
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--output", default="bench/results/pipeline.json")
    args = parser.parse_args()
    runs = [pipeline(n, args.wave_size) for n in args.instructions]
    report: dict = {"pipeline": runs}
    for p in runs:
        print(
            f"pipeline: {p['instructions']} instructions in {p['wall_s']} s = {p['instructions_per_s']:.2f}/s "
            f"({p['per_core']:.2f}/s per core), teacher busy {p['teacher_busy_share']:.1%}, stages "
            f"{p['stage_wall_s']}, wave steps {p['wave_steps_s']}, overhead per wave {p['wave_overhead_s']}, "
            f"{p['modules']} modules, {p['evolved']} answers evolved"
        )
    if len(runs) > 1:
        small, large = runs[0], runs[-1]
        rate = (large["instructions"] - small["instructions"]) / (large["wall_s"] - small["wall_s"])
        report["marginal"] = {
            "instructions_per_s": round(rate, 2),
            "per_core": round(rate / (os.cpu_count() or 1), 2),
            "fixed_s": round(small["wall_s"] - small["instructions"] / rate, 1),
        }
        print(
            f"marginal: {rate:.2f} instructions/s ({report['marginal']['per_core']}/s per core), "
            f"fixed cost {report['marginal']['fixed_s']} s"
        )
    report["search"] = search_latency(args.sizes)
    for s in report["search"]:
        print(
            f"top-1 at {s['modules']} modules: brute force {s['brute_force_ms']} ms "
            f"({s['brute_force_batched_ms']} ms batched)"
            + (
                f", indexed {s['indexed_ms']} ms ({s['indexed_batched_ms']} ms batched; build {s['index_build_s']} s)"
                if "indexed_ms" in s
                else ""
            )
        )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
