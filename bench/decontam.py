"""Decontamination throughput: N instructions against every benchmark item, with and without the embedding
check, side by side in one run.

    python bench/decontam.py [--rows 100000] [--actors 2]

Instructions: MBPP's 974 problem statements, each made unique by a numbered variation clause and cycled up
to ``--rows`` (so the checks find real overlaps, as they would in generated levels). The stage is the job's
(`amr.stages.decontaminate`, Ray Data actors and its embedding actors), timed from dataset to collected rows,
the embedding actors' start and benchmark embedding included. Writes bench/results/decontam.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import ray

from amr.config import DecontamConfig, EmbeddingConfig, RayConfig
from amr.data import MBPP
from amr.decontam import benchmark_items
from amr.runtime import init_ray
from amr.stages import decontaminate

CLAUSES = [
    "The input may be empty.",
    "Return the result as a list.",
    "Handle negative numbers too.",
    "Do it in linear time.",
    "Do not use recursion.",
    "Explain nothing, just write the code.",
]


def instructions(rows: int) -> list[dict]:
    texts = [json.loads(line)["text"] for line in MBPP.read_text().splitlines()]
    return [
        {"id": f"bench/{i}", "instruction": f"{texts[i % len(texts)]} {CLAUSES[i % len(CLAUSES)]} (variant {i})"}
        for i in range(rows)
    ]


def measure(records: list[dict], config: DecontamConfig) -> dict:
    start = time.perf_counter()
    with decontaminate.embedders(config, EmbeddingConfig(), None) as embedder:
        rows = (
            decontaminate.run(ray.data.from_items(records), config, EmbeddingConfig(), None, embedder)
            .select_columns(["id", "contamination"])
            .take_all()
        )
    seconds = time.perf_counter() - start
    return {
        "embedding_threshold": config.embedding_threshold,
        "rows": len(rows),
        "seconds": round(seconds, 1),
        "rows_per_s": round(len(rows) / seconds, 1),
        "flagged": dict(Counter(r["contamination"] for r in rows if r["contamination"]).most_common()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--actors", type=int, default=2, help="checker actors (one CPU each), as many embedding actors")
    args = parser.parse_args()
    init_ray(RayConfig())
    records = instructions(args.rows)
    results = [
        measure(records, DecontamConfig(embedding_threshold=None, actors=args.actors)),
        measure(records, DecontamConfig(actors=args.actors)),
    ]
    report = {
        "rows": args.rows,
        "actors": args.actors,
        "benchmark_items": len(benchmark_items()),
        "results": results,
        "embedding_cost_ratio": round(results[1]["seconds"] / results[0]["seconds"], 2),
    }
    print(json.dumps(report, indent=2))
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/decontam.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
