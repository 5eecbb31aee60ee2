"""The report's tables and figures' data, pure: from what ``amr.report.collect`` read to rows of strings."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from amr import storage
from amr.cost import teacher_cost as stages_cost
from amr.methods import METHODS, REFERENCE
from amr.report.collect import Row
from amr.report.stats import Paired, p_text, paired, verdict, wilson
from amr.stages import endings

DATASETS = {"humaneval": "HumanEval", "mbpp": "MBPP"}
COLUMNS = [
    (d, kind, f"{name}{'+' if kind == 'plus' else ''}") for d, name in DATASETS.items() for kind in ("base", "plus")
]
Table = tuple[list[str], list[list[str]]]


def score_table(methods: list[Row]) -> Table:
    """The paper's layout: pass@1 (%) per method on HE, HE+, MBPP, MBPP+, with the change against direct
    for the other trained students."""
    reference = next((m for m in methods if m.name == REFERENCE and m.manifest), None)
    header = ["Method", *(name for _, _, name in COLUMNS)]
    rows = []
    for m in methods:
        if not m.scores:
            continue
        cells = [m.label]
        for dataset, kind, _ in COLUMNS:
            value = pass1(m, dataset, kind)
            base = pass1(reference, dataset, kind) if reference and m.train and m is not reference else None
            text = "-" if value is None else f"{value:.1f}"
            cells.append(text if value is None or base is None else f"{text} ({value - base:+.1f})")
        rows.append(cells)
    return header, rows


LEVEL = re.compile(r"(?:^|/)level(\d+)/")
"""A run's level folder (``amr run`` with ``levels``): ``OUTPUT/levelL/<method>/...``."""


def level_of(method: Row) -> int | None:
    """The Code Evol-Instruct level a method's row was distilled on, from where it lies; None: not per level."""
    found = LEVEL.search((method.run_dir or next(iter(method.evals.values()), "")) + "/")
    return int(found.group(1)) if found else None


def level_table(methods: list[Row]) -> Table:
    """The paper's Table 1 layout: a row per method, a column per level and benchmark, pass@1 (%)."""
    per_method: dict[str, dict[int, Row]] = {}
    for m in methods:
        if m.scores and (level := level_of(m)) is not None:
            per_method.setdefault(m.name, {})[level] = m
    levels = sorted({level for found in per_method.values() for level in found})
    header = ["Method", *(f"L{level} {name}" for level in levels for _, _, name in COLUMNS)]
    rows = []
    for name, found in per_method.items():
        cells = [METHODS[name].label if name in METHODS else name]
        for level in levels:
            for dataset, kind, _ in COLUMNS:
                value = pass1(found.get(level), dataset, kind)
                cells.append("-" if value is None else f"{value:.1f}")
        rows.append(cells)
    return header, rows


def pass1(method: Row | None, dataset: str, kind: str) -> float | None:
    """pass@1 in %, or None where the method was not scored on ``dataset``."""
    scores = method.scores.get(dataset) if method else None
    return 100 * scores[f"{kind}_pass@1"] if scores else None


def teacher_name(manifest: dict[str, Any]) -> str:
    """The teacher as its config named it (a registry name, a hub id), a local path by its folder's name."""
    ref = manifest.get("config", {}).get("teacher", {}).get("model") or manifest["teacher_model"]
    return storage.name(ref) if ref.startswith(("/", ".", "~")) or "://" in ref else ref


def distill_table(methods: list[Row]) -> Table:
    """Per method: instructions, dataset rows, response accuracy, the share of answers that are R_d, teacher calls
    and tokens, wall time."""
    header = [
        "Method",
        "Teacher",
        "Instructions",
        "Dataset rows",
        "Response accuracy",
        "Answers R_d",
        "Teacher calls",
        "Input tokens",
        "Output tokens",
        "Modules",
        "Wall time (s)",
    ]
    rows = []
    for m in methods:
        if not m.manifest:
            continue
        d, cost = m.manifest["dataset"], teacher_cost(m.manifest)
        accuracy = (
            "-" if d["response_accuracy"] is None else f"{100 * d['response_accuracy']:.1f}% of {d['with_tests']}"
        )
        modules = m.manifest["modules"].get("rows", "-") if m.manifest["modules"] else "-"
        rows.append(
            [
                m.label,
                teacher_name(m.manifest),
                str(d["rows"] + d["dropped"]),
                str(d["rows"]),
                accuracy,
                from_direct(d),
                str(cost["calls"]),
                str(cost["input_tokens"]),
                str(cost["output_tokens"]),
                str(modules),
                str(m.manifest["wall_time_s"]),
            ]
        )
    return header, rows


def from_direct(dataset: dict[str, Any]) -> str:
    """The share of a dataset's answers that are R_d, with the rows ("-" in a manifest written before it was
    counted)."""
    if dataset.get("from_direct") is None:
        return "-"
    return f"{100 * dataset['from_direct']:.0f}% ({dataset['sources'].get('direct', 0)} of {dataset['rows']})"


def teacher_cost(manifest: dict[str, Any]) -> dict[str, int]:
    """Teacher calls and tokens over every stage of a distill run (``amr.stages.teacher_cost``)."""
    return stages_cost(manifest["stages"])


def stage_notes(stage: dict[str, Any]) -> str:
    """What a stage found, in words: rows without specs, queries, verdicts, candidates, inserts, rows resampled
    until an answer passed."""
    notes = [f"{stage['without_specs']} without specs"] if "without_specs" in stage else []
    notes += [f"{stage['queries']} queries"] if "queries" in stage else []
    notes += [f"{v} {k}" for k, v in stage.get("verdicts", {}).items()]
    notes += [f"{v} {k}" for k, v in stage.get("candidates", {}).items()]
    notes += [f"{stage['inserted']} inserted"] if "inserted" in stage else []
    notes += [f"R_d kept on {v}: {k}" for k, v in stage.get("kept_direct", {}).items()]
    notes += [f"{stage['without_heading']} without the answer heading"] if stage.get("without_heading") else []
    notes += [f"{stage['resolved']} resolved by resampling"] if "resolved" in stage else []
    notes += endings(stage)
    notes += [f"skipped: {stage['skipped']}"] if "skipped" in stage else []
    notes += ["resumed"] if stage.get("resumed") else []
    return ", ".join(notes)


def funnel_table(method: Row) -> Table:
    """A method's stages: rows out, teacher errors, tokens and what each stage found."""
    header = ["Stage", "Rows", "Errors", "Input tokens", "Output tokens", "Notes"]
    rows = [
        [name, *(str(s.get(k, "")) for k in ("rows", "errors", "input_tokens", "output_tokens")), stage_notes(s)]
        for name, s in method.manifest["stages"].items()
    ]
    return header, rows


def funnel(manifest: dict[str, Any]) -> list[tuple[str, int]]:
    """The rows that come out of each step, from the instructions to the answers that pass their tests: each
    teacher stage's rows without an error (MD: with specs), the dataset, and the answers passing."""
    d, stages = manifest["dataset"], manifest["stages"]
    steps = [("instructions", d["rows"] + d["dropped"])]
    steps += [(n, s["rows"] - s["errors"]) for n, s in stages.items() if "errors" in s and n != "bootstrap"]
    if "without_specs" in stages.get("decompose", {}):  # counted once MD's retry is done
        md = stages["decompose"]
        names = [n for n, _ in steps]
        after = max(names.index(n) for n in ("decompose", "decompose-retry") if n in names)
        steps.insert(after + 1, ("with specs", md["rows"] - md["without_specs"]))
    steps.append(("dataset rows", d["rows"]))
    if d["response_accuracy"] is not None:
        steps.append(("passing tests", round(d["response_accuracy"] * d["with_tests"])))
    return steps


def stage_times(method: Row) -> list[tuple[str, float]]:
    """Seconds per step of a method: its timed distill stages, bootstrapping, the waves, the rest of the
    distill job (Ray, the teacher, the dataset), training and each evaluation."""
    times: list[tuple[str, float]] = []
    if method.manifest:
        m = method.manifest
        times += [(n, s["wall_time_s"]) for n, s in m["stages"].items() if "wall_time_s" in s]
        waves = (m["modules"] or {}).get("waves", [])
        if waves and "waves" not in m["stages"]:  # a run from before the waves overlapped: they added up
            times.append(("waves", round(sum(w.get("wall_time_s", 0.0) for w in waves), 1)))
        times.append(("distill: rest", round(max(0.0, m["wall_time_s"] - sum(t for _, t in times)), 1)))
    if method.train:
        times.append(("train", method.train["wall_time_s"]))
    for dataset, s in sorted(method.scores.items()):
        if "generation_s" in s:
            times.append((f"eval {DATASETS.get(dataset, dataset)}", round(s["generation_s"] + s["scoring_s"], 1)))
    return times


def train_table(methods: list[Row]) -> Table:
    header = ["Method", "Student", "Examples", "Steps", "Final loss", "Tokens/s", "Wall time (s)"]
    rows = [
        [
            m.label,
            storage.name(m.train["model"]),
            str(m.train["examples"]),
            str(m.train["steps"]),
            "-" if m.train.get("final_loss") is None else f"{m.train['final_loss']:.4f}",
            str(m.train["tokens_per_s"]),
            str(m.train["wall_time_s"]),
        ]
        for m in methods
        if m.train
    ]
    return header, rows


def growth(manifest: dict[str, Any]) -> list[int]:
    """Module-table rows after bootstrapping and after each wave."""
    rows = [manifest["stages"].get("bootstrap", {}).get("inserted", 0)]
    for wave in manifest["modules"]["waves"]:
        rows.append(rows[-1] + wave["inserted"])
    return rows


def datasets_note(methods: list[Row]) -> str:
    """Which EvalPlus releases and how many tasks the scores are on (a --limit run is not the paper's full set)."""
    seen = {(s["dataset"], s["version"], s["n_tasks"], s["limit"]) for m in methods for s in m.scores.values()}
    return "; ".join(
        f"{DATASETS[d]}(+) {v}: {n} tasks{' (--limit)' if limit else ''}" for d, v, n, limit in sorted(seen)
    )


@dataclass(frozen=True)
class Benchmark:
    """Two students on one benchmark column (e.g. HumanEval+): tasks solved, and the paired count when both
    have per-task results."""

    name: str
    n: int
    solved_a: int
    solved_b: int
    pair: Paired | None


@dataclass(frozen=True)
class Comparison:
    """An AMR method (``a``) against direct (``b``) distilled on the same instructions."""

    a: Row
    b: Row
    responses: Paired
    benchmarks: list[Benchmark]


def comparable(methods: list[Row]) -> list[tuple[Row, Row]]:
    """(AMR method, direct) pairs with a distill run each: every AMR-Evol variant with the direct run of the
    same ``amr run`` output (its sibling folder) where there is one, else the first direct run."""
    directs = [m for m in methods if m.name == REFERENCE and m.run_dir]
    pairs = []
    for m in methods:
        if m.run_dir and m.name in METHODS and not METHODS[m.name].baseline and directs:
            root = storage.parent(storage.parent(m.run_dir))
            pairs.append(
                (m, next((d for d in directs if storage.parent(storage.parent(d.run_dir)) == root), directs[0]))
            )
    return pairs


def compare(
    a: Row,
    b: Row,
    rows_a: dict[str, bool],
    rows_b: dict[str, bool],
    tasks_a: dict[str, dict[str, dict[str, bool]] | None],
    tasks_b: dict[str, dict[str, dict[str, bool]] | None],
) -> Comparison:
    """``a`` against ``b``: per-instruction verdicts (id -> passed) and, per dataset, per-task verdicts
    (task -> kind -> passed; None where the results are missing: the counts then come from the scores)."""
    benchmarks = []
    for dataset, kind, name in COLUMNS:
        if dataset not in a.scores or dataset not in b.scores:
            continue
        ta, tb = tasks_a.get(dataset), tasks_b.get(dataset)
        if ta is not None and tb is not None:
            pair = paired({t: v[kind] for t, v in ta.items()}, {t: v[kind] for t, v in tb.items()})
            benchmarks.append(Benchmark(name, pair.n, pair.a, pair.b, pair))
        else:
            n = a.scores[dataset]["n_tasks"]
            solved = [round(m.scores[dataset][f"{kind}_pass@1"] * n) for m in (a, b)]
            benchmarks.append(Benchmark(name, n, *solved, None))
    return Comparison(a, b, paired(rows_a, rows_b), benchmarks)


def _share(k: int, n: int) -> str:
    """``k`` of ``n`` in % with its 95% Wilson interval."""
    low, high = wilson(k, n)
    return f"{k} ({100 * k / n:.1f}%, {100 * low:.0f}-{100 * high:.0f})" if n else "-"


def verdicts(c: Comparison) -> list[str]:
    """The plain-words answer: one sentence on the answers, one per benchmark on the students."""
    a, b = c.a.label, c.b.label
    lines = [verdict(a, b, c.responses, "answered", "instructions correctly")]
    for bench in c.benchmarks:
        if bench.pair is not None:
            lines.append(verdict(f"{a}'s student", f"{b}'s student", bench.pair, "solved", f"{bench.name} tasks"))
            continue
        (la, ha), (lb, hb) = wilson(bench.solved_a, bench.n), wilson(bench.solved_b, bench.n)
        overlap = "the 95% intervals overlap: within noise" if la <= hb and lb <= ha else "beyond noise"
        lines.append(
            f"{bench.name}: {a}'s student solved {bench.solved_a} of {bench.n} tasks, {b}'s {bench.solved_b} "
            f"({overlap})"
        )
    return lines


def response_table(c: Comparison) -> Table:
    """The answers' accuracy on the same instructions, with the paired count and the sign test."""
    r, a, b = c.responses, c.a.label, c.b.label
    header = ["Instructions with tests", f"{b} correct", f"{a} correct", f"only {a}", f"only {b}", "both", "neither"]
    header.append("sign test")
    return header, [
        [str(r.n), _share(r.b, r.n), _share(r.a, r.n), str(r.only_a), str(r.only_b), str(r.both), str(r.neither)]
        + [p_text(r.p)]
    ]


def student_table(c: Comparison) -> Table:
    """The students' pass@1 per benchmark with its 95% interval, and the paired difference in tasks."""
    a, b = c.a.label, c.b.label
    header = ["Benchmark", "Tasks", f"{b}'s student", f"{a}'s student", f"only {a}", f"only {b}", "sign test"]
    rows = []
    for bench in c.benchmarks:
        pair = bench.pair
        paired_cells = [str(pair.only_a), str(pair.only_b), p_text(pair.p)] if pair else ["-", "-", "-"]
        rows.append(
            [bench.name, str(bench.n), _share(bench.solved_b, bench.n), _share(bench.solved_a, bench.n), *paired_cells]
        )
    return header, rows


def examples(
    rows: list[dict[str, Any]], passed_a: dict[str, bool], passed_b: dict[str, bool], n: int = 3
) -> list[dict[str, Any]]:
    """``n`` rows of an AMR run (``collect.example_rows``) with each answer's verdict on the instruction's tests
    (``amr_verdict``, ``direct_verdict``: "passed", "failed" or "not tested"), those that say most first: the
    two answers' verdicts differ, then a function was retrieved, then specs were found; input order within."""

    def telling(r: dict[str, Any]) -> tuple[bool, bool, bool]:
        differ = r["id"] in passed_a and r["id"] in passed_b and passed_a[r["id"]] != passed_b[r["id"]]
        return (not differ, not r["retrieved"], not r["specs"])

    def word(passed: bool | None) -> str:
        return "not tested" if passed is None else "passed" if passed else "failed"

    return [
        {**r, "amr_verdict": word(passed_a.get(r["id"])), "direct_verdict": word(passed_b.get(r["id"]))}
        for r in sorted(rows, key=telling)[:n]
    ]


def without_specs(rows: list[dict[str, Any]]) -> Table:
    """The rows modular decomposition found no spec in (``collect.example_rows``), and why."""
    return ["Instruction", "Why no specs"], [[r["id"], r["md_reason"] or "-"] for r in rows if not r["specs"]]
