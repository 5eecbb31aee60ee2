"""The module table at scale: top-1 latency and recall@1 against brute force, and what a wave's table calls cost, at
each table size (``amr.modules.ModuleDB`` with its vector index and upkeep, ``amr.ann``).

    python bench/module_table.py [--rows 10000 1000000] [--dim 1024] [--waves 16] [--dir DIR [--build-only]]

At each size, a table of that many modules (vectors of ``--dim`` dimensions: gte-large's 1024, the paper configs'
embedder) is written, then given its upkeep as a job's last wave would (``upkeep(force=True)``: compaction, and above
``modules.index_min_rows`` the B-tree on instruction ids); with ``--dir`` the tables are kept there, and a later run
starts from the version they were written at (split a long run: ``--build-only`` first). Then:
- the vector index built from the table, as a job does when it starts or resumes (``ModuleDB.index``: above
  ``modules.index_min_rows`` the IVF index trained on a sample and every row added): its seconds and the growth of
  resident memory it caused (``--build-only`` stops before it);
- top-1: ``--queries`` single-vector ``ModuleDB.search`` calls (each opens the latest version, as a wave's call opens
  its pinned one), p50 and p95 of their latency, and recall@1: how often the module found is the one brute force
  (numpy, every row) finds; with ``amr.ann.NPROBES`` IVF partitions visited and with each of ``--nprobes``;
- waves: ``--waves`` waves as the distill job makes them: pin the latest version, retrieve for ``--wave-queries``
  specs and check ``--candidates`` new functions for novelty at that version, insert ``--inserts`` of them, count
  the wave's inserts by its ``--wave-size`` instruction ids, the upkeep (a refresh every ``modules.upkeep_every``
  waves), unpin. Seconds per wave of each call, the upkeep's averaged over the waves.

The vectors are synthetic (no 1M-text corpus embeds on 2 cores in a bench's time): unit vectors from a mixture of
Gaussians of varied widths in 16 dimensions, mapped into ``--dim`` and noised. Held-out queries have the same median
top-1 cosine as all-MiniLM-L6-v2 embeddings of Python stdlib function specs (0.78 vs 0.77 at 5k rows) and a smaller
gap to the second best (median 0.020 vs 0.047): harder for an ANN index than the real specs. Writes
bench/results/module_table.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np
import psutil
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from amr import ann
from amr.ann import Upkeep
from amr.config import ModulesConfig
from amr.modules import UPKEEP, ModuleDB, module_key, schema

BATCH = 50_000
BUILT = "bench.built"
"""The tag of the version a table was written at (``--dir``: a later run starts from it)."""


def vectors(n: int, dim: int, seed: int, clusters: int = 1000, intrinsic: int = 16) -> np.ndarray:
    """``n`` unit vectors of the fixed mixture (the module docstring); ``seed`` picks the draw, not the mixture."""
    mixture = np.random.default_rng(0)
    centres = mixture.standard_normal((clusters, intrinsic), dtype=np.float32)
    widths = np.exp(mixture.uniform(np.log(0.2), np.log(1.5), clusters)).astype(np.float32)
    basis = np.linalg.qr(mixture.standard_normal((dim, intrinsic)))[0].T.astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for first in range(0, n, 65_536):
        last = min(n, first + 65_536)
        chosen = rng.integers(0, clusters, last - first)
        z = centres[chosen] + widths[chosen, None] * rng.standard_normal((last - first, intrinsic), dtype=np.float32)
        x = z @ basis + 0.3 * np.sqrt(intrinsic / dim) * rng.standard_normal((last - first, dim), dtype=np.float32)
        out[first:last] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def nearest(queries: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Brute force: the row of ``x`` nearest to each query (cosine of unit vectors), a batch of rows at a time."""
    best, score = np.zeros(len(queries), dtype=np.int64), np.full(len(queries), -np.inf, dtype=np.float32)
    for first in range(0, len(x), BATCH):
        similarity = queries @ x[first : first + BATCH].T
        row = similarity.argmax(axis=1)
        value = similarity[np.arange(len(queries)), row]
        better = value > score
        best[better], score[better] = row[better] + first, value[better]
    return best


def modules(x: np.ndarray, first: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"f{first + i}",
            "signature": f"def f{first + i}(x)",
            "description": f"function {first + i}",
            "code": f"def f{first + i}(x):\n    return x + {first + i}",
            "test": f"assert f{first + i}(0) == {first + i}",
            "run": "bench",
            "instruction_id": f"i{first + i}",
            "stage": "growth",
            "verdict": "passed",
            "vector": v,
        }
        for i, v in enumerate(x)
    ]


def fill(db: ModuleDB, x: np.ndarray) -> None:
    """The table's first rows, written in batches as Arrow (the keys as ``ModuleDB.insert`` makes them)."""
    for first in range(0, len(x), BATCH):
        rows = modules(x[first : first + BATCH], first)
        columns = {f: [r[f] for r in rows] for f in schema(db.dim).names if f not in ("key", "vector", "created_at")}
        table = pa.table(
            {
                **columns,
                "key": [module_key(r["code"]) for r in rows],
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(x[first : first + BATCH].ravel()), db.dim),
                "created_at": pa.array([time.time_ns() // 1000] * len(rows), pa.timestamp("us", tz="UTC")),
            }
        )
        db.table.add(table.select(schema(db.dim).names).cast(schema(db.dim)))


def measure(rows: int, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    began = time.perf_counter()
    x = vectors(rows, args.dim, seed=1)
    config = ModulesConfig()
    upkeep = Upkeep(config.index_min_rows, config.upkeep_every, UPKEEP.scalar)
    db = ModuleDB(str(root / f"table-{rows}"), args.dim, upkeep=upkeep)
    if BUILT in db.table.tags.list():  # written by an earlier run (--dir): back to the version it was written at
        db.table.restore(db.table.tags.get_version(BUILT))
        written, upkeep = None, "reused"
    else:
        fill(db, x)
        written = round(time.perf_counter() - began, 1)
        upkeep = db.upkeep(keep_from=db.version, force=True)
        db.pin(BUILT, db.version)
    print(f"{rows} rows: written in {written} s, upkeep {upkeep}", flush=True)
    if args.build_only:
        return {"rows": rows, "write_s": written, "upkeep": upkeep}
    resident = psutil.Process().memory_info().rss
    built = db.index()
    built["rss_mib"] = round((psutil.Process().memory_info().rss - resident) / 2**20)
    print(f"  vector index {built}", flush=True)

    queries = vectors(args.queries, args.dim, seed=2)
    truth = [f"f{i}" for i in nearest(queries, x)]
    top1 = {}
    for nprobes in sorted({ann.NPROBES, *args.nprobes}):
        with patch.object(ann, "NPROBES", nprobes):
            latencies, found = [], []
            for query in queries:
                start = time.perf_counter()
                [[hit]] = db.search(query[None], 1)
                latencies.append(time.perf_counter() - start)
                found.append(hit["name"])
        top1[nprobes] = {
            "p50_ms": round(1000 * float(np.median(latencies)), 2),
            "p95_ms": round(1000 * float(np.percentile(latencies, 95)), 2),
            "recall_at_1": float(np.mean([f == t for f, t in zip(found, truth)])),
        }
        print(
            f"  top-1, nprobes {nprobes}{' (amr.ann)' if nprobes == ann.NPROBES else ''}: {top1[nprobes]}", flush=True
        )

    steps = {s: 0.0 for s in ("retrieve", "novelty", "insert", "count", "upkeep")}
    new = vectors(args.waves * args.candidates + args.waves * args.wave_queries, args.dim, seed=3)
    refreshes = []
    for wave in range(args.waves):
        version = db.version
        db.pin(f"bench.wave-{wave:05d}", version)
        specs = new[args.waves * args.candidates + wave * args.wave_queries :][: args.wave_queries]
        candidates = new[wave * args.candidates : (wave + 1) * args.candidates]
        timed = {}
        start = time.perf_counter()
        db.search(specs, 1, version)
        timed["retrieve"] = time.perf_counter() - start
        start = time.perf_counter()
        db.max_similarity(candidates, version)
        timed["novelty"] = time.perf_counter() - start
        first = rows + wave * args.inserts
        start = time.perf_counter()
        db.insert(modules(candidates[: args.inserts], first))
        timed["insert"] = time.perf_counter() - start
        ids = [f"i{first + i}" for i in range(args.wave_size)]
        start = time.perf_counter()
        counted = db.count(run="bench", stage="growth", instruction_id=ids)
        timed["count"] = time.perf_counter() - start
        assert counted == args.inserts, counted
        start = time.perf_counter()
        if done := db.upkeep(keep_from=db.version):
            refreshes.append(done)
        timed["upkeep"] = time.perf_counter() - start
        db.unpin(f"bench.wave-{wave:05d}")
        for step, seconds in timed.items():
            steps[step] += seconds
    per_wave = {step: round(seconds / args.waves, 3) for step, seconds in steps.items()}
    print(f"  per wave (s): {per_wave}; refreshes: {refreshes}", flush=True)
    return {
        "rows": rows,
        "dim": args.dim,
        "write_s": written,
        "upkeep": upkeep,
        "vector_index": built,
        "top1": top1,
        "per_wave_s": per_wave,
        "refreshes": refreshes,
        "versions_left": len(db.table.list_versions()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--nprobes", type=int, nargs="*", default=[40], help="top-1 also with these (amr.ann's too)")
    parser.add_argument("--waves", type=int, default=16)
    parser.add_argument("--wave-size", type=int, default=512, help="instructions per wave (gpu_cluster.yaml)")
    parser.add_argument("--wave-queries", type=int, default=1024, help="retrieval queries per wave (~2 specs a row)")
    parser.add_argument("--candidates", type=int, default=256, help="new functions checked for novelty per wave")
    parser.add_argument("--inserts", type=int, default=64, help="of them verified and inserted")
    parser.add_argument(
        "--dir", help="where the tables are kept, and reused from at the version written (default: a temporary one)"
    )
    parser.add_argument("--build-only", action="store_true", help="write the tables into --dir and stop")
    parser.add_argument("--output", default="bench/results/module_table.json")
    args = parser.parse_args()
    if args.build_only and not args.dir:
        parser.error("--build-only writes the tables for a later run: give --dir")
    with tempfile.TemporaryDirectory(prefix="amr-table-bench-") as scratch:
        results = [measure(rows, args, Path(args.dir or scratch)) for rows in args.rows]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
