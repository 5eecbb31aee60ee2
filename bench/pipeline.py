"""The pipeline's own cost, with an instant scripted teacher.

    python bench/pipeline.py [--instructions 600 2000] [--wave-size 100] [--embedding-dtypes float32 auto]

It runs the ``amr`` method end to end (Ray Data stages, parsing, MiniLM embeddings, LanceDB
retrieval and inserts, the bwrap sandbox, Parquet writes) on MBPP train instructions with a scripted
teacher that answers at once over HTTP, so nearly all wall time is spent outside the teacher (its
server's busy time is reported). Reported per input size: instructions/s, per core, the wall time per
stage and per wave step, and each wave's fixed overhead (its wall time less the teacher, embedding and sandbox
steps); across two sizes, the marginal rate (extra instructions over extra seconds)
and the fixed cost it leaves. The module table's search at scale: bench/module_table.py. Writes
bench/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: bench.scripted, tests.support

from amr.config import DistillConfig
from bench.scripted import script, write_instructions
from tests.support.scripted_teacher import ScriptedTeacher


def pipeline(instructions: int, wave_size: int, embedding_dtype: str = "auto") -> dict:
    from amr.pipelines import distill

    tmp = Path(tempfile.mkdtemp(prefix="amr-bench-"))
    source = write_instructions(tmp / "instructions.jsonl", instructions)
    with ScriptedTeacher(script) as teacher:
        config = DistillConfig(run_dir=str(tmp / "run"), wave_size=wave_size, teacher=teacher.config(concurrency=4))
        config.input.source = str(source)
        config.embedding.dtype = embedding_dtype
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
    retrieved = {
        r["id"]: [f["name"] for f in json.loads(r["retrieved"])]
        for path in sorted((tmp / "run" / "waves").glob("*.parquet"))
        for r in pq.read_table(path, columns=["id", "retrieved"]).to_pylist()
    }
    return {
        "instructions": instructions,
        "wave_size": wave_size,
        "embedding_dtype": config.embedding.actor_dtype,
        "retrieved": retrieved,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instructions", type=int, nargs="+", default=[600, 2000])
    parser.add_argument("--wave-size", type=int, default=100)
    parser.add_argument(
        "--embedding-dtypes",
        nargs="+",
        default=["auto"],
        help="embedding.dtype of each run at every size, side by side (e.g. float32 auto: the ratio and how many rows "
        "retrieved the same functions)",
    )
    parser.add_argument("--output", default="bench/results/pipeline.json")
    args = parser.parse_args()
    runs = [pipeline(n, args.wave_size, d) for n in args.instructions for d in args.embedding_dtypes]
    for first, other in zip(runs[:: len(args.embedding_dtypes)], runs[1 :: len(args.embedding_dtypes)]):
        same = sum(first["retrieved"][i] == other["retrieved"].get(i) for i in first["retrieved"])
        other["against_first_dtype"] = {
            "speed_ratio": round(first["wall_s"] / other["wall_s"], 2),
            "same_retrieval_share": round(same / len(first["retrieved"]), 4),
        }
    for p in runs:
        p.pop("retrieved")
    report: dict = {"pipeline": runs}
    for p in runs:
        print(
            f"pipeline ({p['embedding_dtype']} embeddings): {p['instructions']} instructions in {p['wall_s']} s = "
            f"{p['instructions_per_s']:.2f}/s "
            f"({p['per_core']:.2f}/s per core), teacher busy {p['teacher_busy_share']:.1%}, stages "
            f"{p['stage_wall_s']}, wave steps {p['wave_steps_s']}, overhead per wave {p['wave_overhead_s']}, "
            f"{p['modules']} modules, {p['evolved']} answers evolved, {p.get('against_first_dtype', '')}"
        )
    if len(args.instructions) > 1:
        small, large = runs[len(args.embedding_dtypes) - 1], runs[-1]  # the last dtype's
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
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
