"""Response quality per method, paired: does a method's final answer pass its instruction's own tests where
direct distillation's does?

    python bench/quality.py [--first 601 --last 700] [--methods direct amr amr-checked] [--seed-limit 175]
                            [--config jobs/configs/local_cpu.yaml] [--set KEY=VALUE ...] [--output DIR]

Every method distils the same MBPP train slice with the config's teacher (one engine for all: the methods
share the job's deployment, and R_d: ``direct.parquet`` is computed once and copied, as ``amr run`` does).
The module table is seeded once, as the paper does, from a pool of its own: ``amr modules bootstrap`` over the
decontaminated MBPP train problems outside the slice (``--seed-limit`` of them; 0: no seed, each method
bootstraps from its input as the config says); every AMR method starts from a copy of that table.
Response accuracy is the project's own: each final answer's code run in the sandbox against the
instruction's MBPP asserts (the instruction shows the first, as MBPP's prompt does, for the function's name). Reported per method: accuracy, the paired count
against direct (right in both, only this method, only direct), teacher tokens and wall time; and for the AMR
methods where they lose: rows whose MD gave no spec, rows that retrieved a function (and the mean
similarity of what they retrieved), evolved answers that broke a passing R_d, and for amr-checked where its
answers came from (R_d, the evolved answer, a resample) with the rows each gained and broke. Writes
``<output>/quality.json`` and prints the table as Markdown (for docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def slice_file(first: int, last: int, folder: Path) -> Path:
    """MBPP train problems ``first``..``last`` (all of them: quality, not training, so no decontamination)."""
    from amr.data import mbpp_train

    chosen = [r for r in mbpp_train() if first <= int(r["id"].split("/")[1]) <= last]
    path = folder / f"mbpp-{first}-{last}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in chosen))
    return path


def pool_file(first: int, last: int, folder: Path) -> Path:
    """The seed pool: decontaminated MBPP train problems outside ``first``..``last``."""
    from amr.data import mbpp_train_decontaminated

    chosen = [r for r in mbpp_train_decontaminated() if not first <= int(r["id"].split("/")[1]) <= last]
    path = folder / f"pool-outside-{first}-{last}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in chosen))
    return path


def seed(base, pool: Path, limit: int, folder: Path) -> dict:
    """The seed table in ``folder/modules`` (``amr modules bootstrap``; resumed if done): its report."""
    from amr.pipelines import waves

    config = base.model_copy(deep=True)
    config.run_dir, config.modules.bootstrap_from, config.modules.bootstrap_limit = str(folder), str(pool), limit
    return waves.bootstrap(config)


def seeded(run_dir: Path, seed_dir: Path) -> None:
    """A method's run directory starts from a copy of the seed table (its lease excluded)."""
    if not (run_dir / "modules").exists():
        shutil.copytree(seed_dir / "modules", run_dir / "modules", ignore=shutil.ignore_patterns("*.lease*"))


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
        waves = [r for f in files for r in pq.read_table(f).select(["id", "retrieved", "are_kept"]).to_pylist()]
        hits = {r["id"]: [h["similarity"] for h in json.loads(r["retrieved"] or "[]")] for r in waves}
        found = [s for row in hits.values() for s in row]
        retrieving = [i for i, h in hits.items() if h]
        out["rows_retrieving"] = len(retrieving)
        out["mean_similarity"] = round(sum(found) / len(found), 3) if found else None
        out["retrieving_gained"] = sum(ours.get(i, False) and not direct.get(i, False) for i in retrieving)
        out["retrieving_broke"] = sum(direct.get(i, False) and not ours.get(i, False) for i in retrieving)
        out["kept_r_d"] = dict(Counter(r["are_kept"] for r in waves if r["are_kept"]))
    if (run_dir / "check.parquet").exists():  # amr-checked: where each final answer came from, and what it did
        source = {r["id"]: r["checked_source"] for r in _rows(run_dir / "check.parquet", ["id", "checked_source"])}
        for round_dir in sorted((run_dir / "resample").glob("*.parquet")):
            rows = _rows(round_dir, ["id", "checked_source"])
            source.update({r["id"]: "resample" for r in rows if r["checked_source"] == "resample"})
        out["answer_from"] = {
            name: f"{sum(1 for s in source.values() if s == name)} rows "
            f"({sum(ours.get(i, False) and not direct.get(i, False) for i, s in source.items() if s == name)} gained, "
            f"{sum(direct.get(i, False) and not ours.get(i, False) for i, s in source.items() if s == name)} broke)"
            for name in sorted(set(source.values()))
        }
    out["broke_passing_r_d"] = sum(direct.get(i, False) and not ours.get(i, False) for i in direct)
    return out


def _rows(path: Path, columns: list[str]) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=columns).to_pylist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="jobs/configs/local_cpu.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--first", type=int, default=601)
    parser.add_argument("--last", type=int, default=700)
    parser.add_argument("--methods", nargs="+", default=["direct", "amr", "amr-checked"])
    parser.add_argument("--seed-limit", type=int, default=175, help="seed pool size (0: no seed table)")
    parser.add_argument("--output", default="bench/results/quality")
    args = parser.parse_args()

    from amr.config import DistillConfig, load_config
    from amr.logs import job_logs
    from amr.runtime import init_ray
    from jobs.cli import bootstrap_lines
    from jobs.common import setup_logging

    setup_logging(verbose=False, log_level=None)  # the job's lines on the terminal, other programs' in out/logs
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    source = slice_file(args.first, args.last, out)
    base = load_config(DistillConfig, args.config, [*args.set, f"input.source={source}", "input.limit=null"])
    methods = ["direct", *[m for m in args.methods if m != "direct"]]
    with job_logs(out):
        init_ray(base.ray)
        seeding, results = distil(base, methods, args, out)
    report = table(results, len(source.read_text().splitlines()))
    (out / "quality.json").write_text(
        json.dumps(
            {
                "config": args.config,
                "overrides": args.set,
                "slice": [args.first, args.last],
                "teacher": base.teacher.model,
                "seed": seeding,
                "methods": report,
            },
            indent=2,
        )
        + "\n"
    )
    if seeding:
        print("\n".join(["Seed table:", *bootstrap_lines(seeding)]))
    print(markdown(report, base.teacher.model, args.first, args.last))


def distil(base, methods: list[str], args: argparse.Namespace, out: Path) -> tuple[dict | None, dict]:
    """The seed table (unless ``--seed-limit 0``), then every method on one teacher deployment: the seeding's
    report and each method's manifest, verdicts, wall time and teacher tokens."""
    from amr.engines import open_teacher
    from amr.methods import METHODS
    from amr.pipelines import distill, fingerprints
    from amr.storage import RunDir

    results = {}
    with open_teacher(base.teacher, base.model_store):
        seeding = (
            seed(base, pool_file(args.first, args.last, out), args.seed_limit, out / "seed")
            if args.seed_limit
            else None
        )
        for method in methods:
            run_dir = out / method
            if seeding and METHODS[method].uses_modules:
                seeded(run_dir, out / "seed")
            if method != "direct" and not RunDir(str(run_dir)).stage_done("direct.parquet"):
                RunDir(str(run_dir)).copy_stage("direct.parquet", RunDir(str(out / "direct")))
                fingerprints.copy(RunDir(str(run_dir)), RunDir(str(out / "direct")), "direct")
            began = time.perf_counter()
            manifest = distill.run(base.model_copy(update={"method": method, "run_dir": str(run_dir)}))
            tokens = [  # every teacher call: the stages' and the growth tests'
                (
                    s.get("input_tokens", 0) + s.get("test_input_tokens", 0),
                    s.get("output_tokens", 0) + s.get("test_output_tokens", 0),
                )
                for s in manifest["stages"].values()
            ]
            results[method] = {
                "manifest": manifest,
                "passed": passed(run_dir),
                "wall_s": round(time.perf_counter() - began, 1),
                "input_tokens": sum(t[0] for t in tokens),
                "output_tokens": sum(t[1] for t in tokens),
            }
    return seeding, results


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
            if k
            in (
                "md_without_specs",
                "rows_retrieving",
                "mean_similarity",
                "retrieving_gained",
                "retrieving_broke",
                "kept_r_d",
                "broke_passing_r_d",
                "answer_from",
            )
        )
        lines.append(
            f"| {method} | {r['accuracy']:.1%} | {r['right']}/{r['of']} | {r['both']} | {r['only_this']} | "
            f"{r['only_direct']} | {r['input_tokens']} | {r['output_tokens']} | {r['wall_s']} | {notes} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
