"""Response quality per method, paired: does a method's final answer pass its instruction's own tests where
direct distillation's does, and at what teacher cost?

    python bench/quality.py [--first 601 --last 700] [--methods direct amr amr-gated amr-checked direct-checked]
                            [--seed-limit 175] [--seed-from FILE | --seed-table DIR | --seed-reference N]
                            [--shared-from DIR] [--config jobs/configs/local_cpu.yaml]
                            [--set KEY=VALUE ...] [--output DIR]

Every method distils the same MBPP train slice with the config's teacher (one engine for all: the methods
share the job's deployment; R_d and MD are computed once and copied to each method that has them under the same
settings, as ``amr run`` shares R_d; their teacher tokens count in every method's cost).
The module table is seeded once, as the paper does, from a pool of its own: ``amr modules bootstrap`` over
``--seed-from`` (e.g. self-instructed instructions, less those near a slice problem; default: the decontaminated
MBPP train problems outside the slice), ``--seed-limit`` of them (0: no seed table, and no bootstrap either: every
method starts from an empty table, ``modules.bootstrap_limit=0``); every AMR method starts from a copy of that
table. ``--seed-table`` copies instead the finished seed table of an earlier run's output (``DIR/seed``; e.g. one
built with another teacher, to compare teachers on the same table), recorded in ``quality.json`` with the teacher
that built it. ``--seed-reference N`` builds it without the teacher, from MBPP's reference solutions of the first
``N`` decontaminated train problems outside the slice (less those near a slice problem): each function the problem's
asserts call, described by the problem statement, verified by those asserts in the sandbox (a bench table, not
the paper's, to measure a table larger than the teacher's bootstrap gives).
``--shared-from`` names an earlier output of the same slice whose R_d and MD the methods copy where their
fingerprints match (so a new method or table is paired with the very direct answers of that output).
A matched baseline (``direct-checked``, ``amr-checked-no-retrieval``) runs after ``amr-checked`` with its teacher
tokens as ``check.token_budget``, as ``amr run`` does. Rerunning the same command resumes every method's run.

Response accuracy is the project's own: each final answer's code run in the sandbox against the instruction's
MBPP asserts (the instruction shows the first, as MBPP's prompt does, for the function's name). Reported per method:
accuracy; teacher tokens (input and output, every stage: R_d, decompositions, rewrites, tests, resamples, growth
tests; not the seed table's, reported once); accuracy points per million teacher tokens; the share of answers that
are R_d; the paired count against direct (right in both, only this method, only direct) with an exact two-sided
sign test; the rows gained and broken against direct by the source of the final answer (R_d, the rewrite, a
resample, a repair); for the AMR methods rows without specs, rows that retrieved a function (and the mean
similarity), rewrites that call a retrieved function and rewrites that define one (copy it). Writes
``<output>/quality.json`` and prints the table as Markdown (for docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def slice_file(first: int, last: int, folder: Path) -> Path:
    """MBPP train problems ``first``..``last`` less the MBPP+ tasks among them (an evaluation benchmark's tasks are
    never distilled); the other overlaps stay (quality, not training)."""
    from amr.data import mbpp_train, mbpp_train_overlaps

    plus = {r["id"] for r in mbpp_train_overlaps() if r["check"] == "same-task"}
    chosen = [r for r in mbpp_train() if first <= int(r["id"].split("/")[1]) <= last and r["id"] not in plus]
    print(f"MBPP train {first}-{last}: {sum(first <= int(i.split('/')[1]) <= last for i in plus)} MBPP+ tasks left out")
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


def outside_slice(pool: Path, slice_path: Path, folder: Path, threshold: float = 0.8) -> Path:
    """``pool``'s instructions less those near a problem of the slice: the decontamination's n-gram check, or a cosine
    of problem statements (MiniLM) of ``threshold`` or more. Self-instructed instructions come from MBPP-like seeds
    and can restate a slice problem; a seed table must not hold its solution."""
    from amr.decontam import NgramIndex, nearest, problem_statement
    from amr.embeddings import Embedder
    from amr.model_store import pull

    records = [json.loads(line) for line in pool.read_text().splitlines()]
    problems = [json.loads(line) for line in slice_path.read_text().splitlines()]
    items = [{"id": p["id"], "prompt": p["instruction"], "solution": ""} for p in problems]
    index = NgramIndex.build(items, 13)
    embedder = Embedder(str(pull("all-minilm-l6-v2")))
    vectors = embedder.encode([problem_statement(r["instruction"]) for r in records])
    _, cosines = nearest(vectors, embedder.encode([problem_statement(p["instruction"]) for p in problems]), 1)
    kept = [r for r, c in zip(records, cosines[:, 0]) if c < threshold and not index.match(r["instruction"], 1)]
    path = folder / f"{pool.stem}.outside-{slice_path.stem}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    print(f"seed pool {pool}: {len(records) - len(kept)} of {len(records)} near a slice problem, left out")
    return path


def seed(base, pool: Path, limit: int, folder: Path) -> dict:
    """The seed table in ``folder/modules`` (``amr modules bootstrap``; resumed if done): its report."""
    from amr.pipelines import waves

    config = base.model_copy(deep=True)
    config.run_dir, config.modules.bootstrap_from, config.modules.bootstrap_limit = str(folder), str(pool), limit
    return waves.bootstrap(config)


def copied_seed(earlier: Path, folder: Path) -> dict:
    """The finished seed table of an earlier run's output ``earlier`` copied to ``folder`` (kept if copied already):
    that run's seed report, with where it came from and the teacher that built it."""
    report = earlier / "quality.json"
    if not (earlier / "seed" / "bootstrap.parquet").exists() or not report.exists():
        sys.exit(f"--seed-table {earlier}: no finished seed table (seed/bootstrap.parquet and quality.json)")
    made = json.loads(report.read_text())
    if not folder.exists():
        shutil.copytree(earlier / "seed", folder, ignore=shutil.ignore_patterns("*.lease*"))
    return {**made["seed"], "copied_from": str(earlier), "built_by": made["teacher"]}


def reference_seed(base, pool: Path, limit: int, folder: Path) -> dict:
    """The seed table in ``folder/modules`` from MBPP's reference solutions of ``pool``'s first ``limit`` problems
    (resumed if done): per problem the functions its asserts call, standalone, described by the problem statement,
    novel against the table (``modules.novelty_threshold``) and verified by the problem's own asserts in the sandbox.
    Its report: candidates by outcome, the table and the wall time."""
    from amr.data import MBPP
    from amr.decontam import problem_statement
    from amr.modules import ModuleDB
    from amr.parsing import defined_functions
    from amr.pipelines import waves
    from amr.sandbox.stage import SandboxActors
    from amr.stages import grow
    from amr.storage import RunDir

    began, run_dir = time.perf_counter(), RunDir(str(folder))
    with SandboxActors(base.sandbox) as sandbox, waves.embedders(base) as embedder:
        db = ModuleDB(str(folder / "modules"), embedder.dim, base.modules.table)
        if not run_dir.exists("bootstrap.parquet"):
            reference = {f"mbpp/{r['task_id']}": r["code"] for r in map(json.loads, MBPP.read_text().splitlines())}
            problems = [json.loads(line) for line in pool.read_text().splitlines()][:limit]
            tests = {p["id"]: "\n".join(p["tests"]) for p in problems}
            candidates = [
                {"instruction_id": p["id"], **f, "description": problem_statement(p["instruction"])}
                for p in problems
                for f in defined_functions(reference[p["id"]])
                if re.search(rf"\b{re.escape(f['name'])}\(", tests[p["id"]])
            ]
            kept, rejected = grow.novel(candidates, db, embedder, db.version, base.modules.novelty_threshold)
            records = sandbox.run([{"code": c["code"], "test": tests[c["instruction_id"]]} for c in kept])
            verified = [
                {
                    **c,
                    "test": tests[c["instruction_id"]],
                    "outcome": "verified" if r["status"] == "passed" else "failed",
                }
                for c, r in zip(kept, records)
            ]
            grow.insert(verified, db, "seed", "reference")
            outcomes = [{k: v for k, v in c.items() if k != "vector"} for c in [*verified, *rejected]]
            run_dir.write_rows("bootstrap.parquet", outcomes or [{"outcome": "none"}])
        outcomes = run_dir.read_table("bootstrap.parquet").to_pydict()["outcome"]
        return {
            "source": f"MBPP reference solutions of {pool.name}'s first {limit} problems",
            "candidates": dict(sorted(Counter(o for o in outcomes if o != "none").items())),
            "inserted": db.count(stage="reference"),
            "table": {"uri": db.uri, "rows": db.count(), "version": db.version},
            "wall_s": round(time.perf_counter() - began, 1),
        }


def seeded(run_dir: Path, seed_dir: Path) -> None:
    """A method's run directory starts from a copy of the seed table (its lease excluded)."""
    if not (run_dir / "modules").exists():
        shutil.copytree(seed_dir / "modules", run_dir / "modules", ignore=shutil.ignore_patterns("*.lease*"))


SHARED = ("direct", "decompose")
"""The stages whose rows depend on the instruction and R_d alone: made once per slice and setting."""


def shared(run_dir: Path, config, method, outputs: list[Path]) -> None:
    """R_d and MD copied from a run in ``outputs`` (this output, then an earlier one) that made them under the same
    settings (the same fingerprint), as ``amr run`` shares R_d; their teacher tokens still count in each method's
    cost."""
    from amr.pipelines import fingerprints
    from amr.storage import RunDir

    now, target = fingerprints.current(config, method), RunDir(str(run_dir))
    made = {
        d: json.loads(f.read_text())
        for out in outputs
        for d in sorted(out.iterdir())
        if (f := d / fingerprints.FILE).exists()
    }
    for stage in (s for s in SHARED if s in method.stages and not target.stage_done(f"{s}.parquet")):
        same = (
            d
            for d, f in made.items()
            if d != run_dir and f.get(stage, {}).get("fingerprint") == now[stage]["fingerprint"]
        )
        if source := next(same, None):
            for name in (n for n in fingerprints.OUTPUTS[stage] if (source / n).exists()):
                target.copy_stage(name, RunDir(str(source)))
            fingerprints.copy(target, RunDir(str(source)), stage)


def passed(run_dir: Path, ids: list[str]) -> dict[str, bool]:
    """Per instruction id, whether its final answer passed its tests (a dropped row counts as wrong)."""
    import pyarrow.parquet as pq

    table = pq.read_table(run_dir / "dataset.parquet", columns=["id", "tests_passed"]).to_pylist()
    found = {r["id"]: bool(r["tests_passed"]) for r in table}
    return {i: found.get(i, False) for i in ids}


def sources(run_dir: Path) -> dict[str, str]:
    """Per instruction id, where its final answer came from (``dataset.parquet``'s ``source``)."""
    return {r["id"]: r["source"] for r in _rows(run_dir / "dataset.parquet", ["id", "source"])}


def diagnostics(run_dir: Path) -> dict:
    """What MD and retrieval did: rows without specs, rows that retrieved a function (mean similarity), rewrites that
    call a retrieved function or define one of its name, rows where R_d stayed (the gated method) and answers without
    the paper's heading."""
    from amr.stages.response_evolution import uses_module

    out: dict = {}
    if (run_dir / "decompose.parquet").exists():
        out["md_without_specs"] = sum(
            r["md_reason"] is not None for r in _rows(run_dir / "decompose.parquet", ["md_reason"])
        )
    if (run_dir / "waves").exists():
        columns = ["id", "retrieved", "are_kept", "evolved_response", "are_heading", "are_error"]
        waves = [r for f in sorted((run_dir / "waves").glob("*.parquet")) for r in _rows(f, columns)]
        hits = [h["similarity"] for r in waves for h in json.loads(r["retrieved"] or "[]")]
        out["rows_retrieving"] = sum(r["retrieved"] not in (None, "[]") for r in waves)
        out["mean_similarity"] = round(sum(hits) / len(hits), 3) if hits else None
        out["rewrites_calling_a_retrieved_function"] = sum(
            uses_module({**r, "are_response": r["evolved_response"]}) for r in waves if r["evolved_response"]
        )
        out["rewrites_defining_a_retrieved_function"] = sum(map(defines_retrieved, waves))
        if kept := Counter(r["are_kept"] for r in waves if r["are_kept"]):
            out["kept_r_d"] = dict(kept)
        if without := sum(r["are_heading"] is False and not r["are_error"] for r in waves):
            out["without_heading"] = without
    return out


def defines_retrieved(row: dict) -> bool:
    """Whether a row's rewrite defines a function of a retrieved function's name (copies it into the answer)."""
    from amr.parsing import defined_functions, python_code

    names = {h["name"] for h in json.loads(row["retrieved"] or "[]")}
    code = python_code(row["evolved_response"] or "") or ""
    return bool(names & {f["name"] for f in defined_functions(code)})


def _rows(path: Path, columns: list[str]) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=columns).to_pylist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="jobs/configs/local_cpu.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--first", type=int, default=601)
    parser.add_argument("--last", type=int, default=700)
    parser.add_argument("--methods", nargs="+", default=["direct", "amr", "amr-gated", "amr-checked", "direct-checked"])
    parser.add_argument("--seed-limit", type=int, default=175, help="seed pool size (0: no seed table)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seed-from", help="seed pool instructions, less those near a slice problem (default: MBPP train outside it)"
    )
    seeds.add_argument("--seed-table", help="an earlier run's output whose seed table to copy instead of building one")
    seeds.add_argument(
        "--seed-reference", type=int, metavar="N", help="seed table of MBPP's reference solutions of N pool problems"
    )
    parser.add_argument("--shared-from", help="an earlier output of the slice whose R_d and MD to copy (same settings)")
    parser.add_argument("--output", default="bench/results/quality")
    args = parser.parse_args()

    from amr.config import DistillConfig, load_config
    from amr.logs import job_logs
    from amr.methods import distill_order
    from amr.runtime import init_ray
    from jobs.cli import bootstrap_lines
    from jobs.common import setup_logging

    setup_logging(verbose=False, log_level=None)  # the job's lines on the terminal, other programs' in out/logs
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    source = slice_file(args.first, args.last, out)
    empty = [] if args.seed_limit or args.seed_table or args.seed_reference else ["modules.bootstrap_limit=0"]
    base = load_config(DistillConfig, args.config, [*args.set, *empty, f"input.source={source}", "input.limit=null"])
    methods = distill_order(["direct", *[m for m in args.methods if m != "direct"]])
    ids = [json.loads(line)["id"] for line in source.read_text().splitlines()]
    with job_logs(out):
        init_ray(base.ray)
        seeding, results = distil(base, methods, args, out, ids)
    report = table(results)
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
        built = (
            f" (copied from {seeding['copied_from']}, built by {seeding['built_by']})" if "built_by" in seeding else ""
        )
        print("\n".join([f"Seed table{built}:", *bootstrap_lines(seeding)]))
    print(markdown(report, base.teacher.model, args.first, args.last))


def distil(base, methods: list[str], args: argparse.Namespace, out: Path, ids: list[str]) -> tuple[dict | None, dict]:
    """The seed table (unless ``--seed-limit 0``), then every method on one teacher deployment: the seeding's
    report and each method's manifest, verdicts, answer sources, wall time and teacher tokens."""
    from amr.cost import teacher_cost
    from amr.engines import open_teacher
    from amr.methods import METHODS
    from amr.pipelines import distill

    results: dict = {}
    outputs = [out, *([Path(args.shared_from).resolve()] if args.shared_from else [])]
    seeding = None
    if args.seed_reference:  # needs no teacher: made before its deployment starts
        pool = outside_slice(pool_file(args.first, args.last, out), out / f"mbpp-{args.first}-{args.last}.jsonl", out)
        seeding = reference_seed(base, pool, args.seed_reference, out / "seed")
    with open_teacher(base.teacher, base.model_store):
        if args.seed_table:
            seeding = copied_seed(Path(args.seed_table).resolve(), out / "seed")
        elif args.seed_limit and not args.seed_reference:
            pool = (
                outside_slice(Path(args.seed_from), out / f"mbpp-{args.first}-{args.last}.jsonl", out)
                if args.seed_from
                else pool_file(args.first, args.last, out)
            )
            seeding = seed(base, pool, args.seed_limit, out / "seed")
        for method in methods:
            run_dir, chosen = out / method, METHODS[method]
            if seeding and chosen.uses_modules:
                seeded(run_dir, out / "seed")
            config = base.model_copy(update={"method": method, "run_dir": str(run_dir)}, deep=True)
            shared(run_dir, config, chosen, outputs)
            if chosen.matched in results:  # resample to the teacher tokens of the method it is matched to
                config.check.token_budget = results[chosen.matched]["cost"]["tokens"]
            began = time.perf_counter()
            manifest = distill.run(config)
            results[method] = {
                "manifest": manifest,
                "passed": passed(run_dir, ids),
                "sources": sources(run_dir),
                "wall_s": round(time.perf_counter() - began, 1),
                "cost": teacher_cost(manifest["stages"]),
            }
    return seeding, results


def table(results: dict) -> dict:
    """Per method: accuracy, cost, the R_d share, the paired count against direct and the rows gained and broken
    by the source of the final answer."""
    from amr.report.stats import paired

    direct = results["direct"]["passed"]
    report = {}
    for method, r in results.items():
        ours, cost, dataset = r["passed"], r["cost"], r["manifest"]["dataset"]
        pair = paired(ours, direct)
        accuracy = sum(ours.values()) / len(ours)
        by_source: dict[str, dict[str, int]] = {}
        for i, source in r["sources"].items():
            counts = by_source.setdefault(source, {"rows": 0, "gained": 0, "broke": 0})
            counts["rows"] += 1
            counts["gained"] += ours[i] and not direct[i]
            counts["broke"] += direct[i] and not ours[i]
        report[method] = {
            "accuracy": round(accuracy, 4),
            "right": pair.a,
            "of": len(ours),
            "both": pair.both,
            "only_this": pair.only_a,
            "only_direct": pair.only_b,
            "sign_test_p": round(pair.p, 4),
            "input_tokens": cost["input_tokens"],
            "output_tokens": cost["output_tokens"],
            "tokens": cost["tokens"],
            "accuracy_per_m_tokens": round(100 * accuracy / (cost["tokens"] / 1e6), 1) if cost["tokens"] else None,
            "from_direct": dataset["from_direct"],
            "by_source": by_source,
            "wall_s": r["wall_s"],
            **({"resample": r["manifest"]["stages"]["resample"]} if "resample" in r["manifest"]["stages"] else {}),
            **(diagnostics(Path(r["manifest"]["config"]["run_dir"])) if method != "direct" else {}),
        }
    return report


NOTES = (
    "md_without_specs",
    "rows_retrieving",
    "mean_similarity",
    "rewrites_calling_a_retrieved_function",
    "rewrites_defining_a_retrieved_function",
    "kept_r_d",
    "without_heading",
)


def markdown(report: dict, teacher: str, first: int, last: int) -> str:
    lines = [
        f"MBPP train {first}-{last}, teacher {teacher}:",
        "",
        "| method | accuracy | only this / only direct (sign test) | teacher tokens | acc. per M tokens | answers R_d "
        "| gained (broke) by source | wall (s) | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, r in report.items():
        notes = [f"{k} {r[k]}" for k in NOTES if k in r]
        if "resample" in r:
            s = r["resample"]
            budget = f", budget {s['token_budget']:,}" if "token_budget" in s else ""
            notes.append(f"resample rounds {len(s['rounds'])} (stopped: {s['stopped']}{budget})")
        sourced = ", ".join(
            f"{k} {v['rows']}: +{v['gained']} ({v['broke']})" for k, v in sorted(r["by_source"].items())
        )
        pair = "-" if method == "direct" else f"{r['only_this']} / {r['only_direct']} (p={r['sign_test_p']:.3f})"
        lines.append(
            f"| {method} | {r['accuracy']:.1%} ({r['right']}/{r['of']}) | {pair} | {r['tokens']:,} | "
            f"{r['accuracy_per_m_tokens']} | {r['from_direct']:.0%} | {sourced} | {r['wall_s']} | {'; '.join(notes)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
