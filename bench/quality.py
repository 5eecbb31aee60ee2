"""Response quality per method, paired: does a method's final answer pass its instruction's own tests where
direct distillation's does?

    python bench/quality.py [--first 601 --last 700] [--methods direct amr amr-checked]
                            [--config jobs/configs/local_cpu.yaml] [--set KEY=VALUE ...] [--output DIR]

Every method distils the same MBPP train slice with the config's teacher (one engine for all: the methods
share the job's deployment, and R_d: ``direct.parquet`` is computed once and copied, as ``amr run`` does).
Response accuracy is the project's own: each final answer's code run in the sandbox against the
instruction's MBPP asserts (never shown to the teacher). Reported per method: accuracy, the paired count
against direct (right in both, only this method, only direct), teacher tokens and wall time; and for the AMR
methods where they lose: rows whose MD gave no spec, rows that retrieved a function (and the mean
similarity of what they retrieved), and evolved answers that broke a passing R_d. Writes
``<output>/quality.json`` and prints the table as Markdown (for docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def slice_file(first: int, last: int, folder: Path) -> Path:
    """MBPP train problems ``first``..``last`` (all of them: quality, not training, so no decontamination)."""
    from amr.data import mbpp_train

    chosen = [r for r in mbpp_train() if first <= int(r["id"].split("/")[1]) <= last]
    path = folder / f"mbpp-{first}-{last}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in chosen))
    return path


def passed(run_dir: Path) -> dict[str, bool]:
    """Per instruction id, whether its final answer passed its tests (a dropped row counts as wrong)."""
    import pyarrow.parquet as pq

    table = pq.read_table(run_dir / "dataset.parquet", columns=["id", "tests_passed"]).to_pylist()
    return {r["id"]: bool(r["tests_passed"]) for r in table}


def diagnostics(run_dir: Path, direct: dict[str, bool], ours: dict[str, bool]) -> dict:
    """Where an AMR method gains and loses: MD, retrieval and the evolved answers."""
    import pyarrow.parquet as pq

    out: dict = {}
    if (run_dir / "decompose.parquet").exists():
        md = pq.read_table(run_dir / "decompose.parquet", columns=["md_reason"]).column("md_reason").to_pylist()
        out["md_without_specs"] = sum(r is not None for r in md)
    if (run_dir / "waves").exists():
        files = sorted(str(p) for p in (run_dir / "waves").glob("*.parquet"))
        waves = [r for f in files for r in pq.read_table(f, columns=["id", "retrieved"]).to_pylist()]
        hits = [[h["similarity"] for h in json.loads(r["retrieved"] or "[]")] for r in waves]
        found = [s for row in hits for s in row]
        out["rows_retrieving"] = sum(bool(h) for h in hits)
        out["mean_similarity"] = round(sum(found) / len(found), 3) if found else None
    out["broke_passing_r_d"] = sum(direct.get(i, False) and not ours.get(i, False) for i in direct)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="jobs/configs/local_cpu.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--first", type=int, default=601)
    parser.add_argument("--last", type=int, default=700)
    parser.add_argument("--methods", nargs="+", default=["direct", "amr", "amr-checked"])
    parser.add_argument("--output", default="bench/results/quality")
    args = parser.parse_args()

    from amr.config import DistillConfig, load_config
    from amr.engines import open_teacher
    from amr.pipelines import distill, fingerprints
    from amr.runtime import init_ray
    from amr.storage import RunDir

    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    source = slice_file(args.first, args.last, out)
    base = load_config(DistillConfig, args.config, [*args.set, f"input.source={source}", "input.limit=null"])
    methods = ["direct", *[m for m in args.methods if m != "direct"]]
    init_ray(base.ray)
    results = {}
    with open_teacher(base.teacher, base.model_store):
        for method in methods:
            run_dir = out / method
            if method != "direct" and not RunDir(str(run_dir)).stage_done("direct.parquet"):
                RunDir(str(run_dir)).copy_stage("direct.parquet", RunDir(str(out / "direct")))
                fingerprints.copy(RunDir(str(run_dir)), RunDir(str(out / "direct")), "direct")
            began = time.perf_counter()
            manifest = distill.run(base.model_copy(update={"method": method, "run_dir": str(run_dir)}))
            tokens = [(s.get("input_tokens", 0), s.get("output_tokens", 0)) for s in manifest["stages"].values()]
            results[method] = {
                "manifest": manifest,
                "passed": passed(run_dir),
                "wall_s": round(time.perf_counter() - began, 1),
                "input_tokens": sum(t[0] for t in tokens),
                "output_tokens": sum(t[1] for t in tokens),
            }
    report = table(results, len(source.read_text().splitlines()))
    (out / "quality.json").write_text(
        json.dumps(
            {
                "config": args.config,
                "overrides": args.set,
                "slice": [args.first, args.last],
                "teacher": base.teacher.model,
                "methods": report,
            },
            indent=2,
        )
        + "\n"
    )
    print(markdown(report, base.teacher.model, args.first, args.last))


def table(results: dict, total: int) -> dict:
    direct = results["direct"]["passed"]
    report = {}
    for method, r in results.items():
        ours = r["passed"]
        row = {
            "accuracy": round(sum(ours.values()) / total, 4),
            "right": sum(ours.values()),
            "of": total,
            "both": sum(direct.get(i, False) and ours.get(i, False) for i in set(direct) | set(ours)),
            "only_this": sum(ours.get(i, False) and not direct.get(i, False) for i in ours),
            "only_direct": sum(direct.get(i, False) and not ours.get(i, False) for i in direct),
            "input_tokens": r["input_tokens"],
            "output_tokens": r["output_tokens"],
            "wall_s": r["wall_s"],
        }
        if method != "direct":
            row.update(diagnostics(Path(r["manifest"]["config"]["run_dir"]), direct, ours))
            if "check" in r["manifest"]["stages"]:
                row["fell_back_to_r_d"] = r["manifest"]["stages"]["check"]["checked_source"].get("direct", 0)
        report[method] = row
    return report


def markdown(report: dict, teacher: str, first: int, last: int) -> str:
    lines = [
        f"MBPP train {first}-{last}, teacher {teacher}:",
        "",
        "| method | accuracy | right | both | only this | only direct | input tok | output tok | wall (s) | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, r in report.items():
        notes = ", ".join(
            f"{k} {v}"
            for k, v in r.items()
            if k in ("md_without_specs", "rows_retrieving", "mean_similarity", "broke_passing_r_d", "fell_back_to_r_d")
        )
        lines.append(
            f"| {method} | {r['accuracy']:.1%} | {r['right']}/{r['of']} | {r['both']} | {r['only_this']} | "
            f"{r['only_direct']} | {r['input_tokens']} | {r['output_tokens']} | {r['wall_s']} | {notes} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
