"""The report: the paper's table (method x HumanEval, HumanEval+, MBPP, MBPP+), the distillation's costs, and plots.

    amr report DIR... --output OUT       (DIR: `amr run` outputs, distill run directories, eval directories)

It reads what the jobs wrote, found anywhere under each DIR: distill ``manifest.json``, ``train.json`` and
eval ``scores.json``. An evaluation is tied to its method by provenance: the evaluated model's directory sits
in a train output whose ``train.json`` names the distill dataset, next to that run's manifest. A model not
trained here (the student before fine-tuning) is a row of its own. Writes ``report.md``, ``report.html``,
``pass_at_1.png`` and, when a method grew a module table, ``module_growth.png``.

Each DIR and OUT may be a local path or an object-store URI (``amr.storage``); a run whose outputs are in an
object store and whose students are on a local or shared disk links the same way (paths are compared
normalized).
"""

from __future__ import annotations

import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from amr import storage
from amr.methods import METHODS, REFERENCE, REGISTRY

DATASETS = {"humaneval": "HumanEval", "mbpp": "MBPP"}
COLUMNS = [
    (d, kind, f"{name}{'+' if kind == 'plus' else ''}") for d, name in DATASETS.items() for kind in ("base", "plus")
]
ORDER = [m.name for m in REGISTRY]


class ReportError(ValueError):
    """Nothing to report on."""


@dataclass
class Row:
    """One row of the report: a distillation method (or an untrained model) and what is known of it."""

    name: str
    """The method's name (``amr.methods``), or the run directory's or model's."""
    label: str
    manifest: dict[str, Any] | None = None
    train: dict[str, Any] | None = None
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # by dataset


def collect(dirs: list[str | Path]) -> list[Row]:
    """Every method found under ``dirs`` (local paths or URIs): distill manifests, train summaries and eval
    scores, linked by provenance."""
    missing = [str(d) for d in dirs if not storage.exists(d)]
    if missing:
        raise ReportError(f"no such directory: {', '.join(missing)}")
    methods: dict[str, Row] = {}  # keyed by the distill run directory (normalized), or by the untrained model
    for manifest_path in _found(dirs, "manifest.json"):
        manifest = storage.read_json(manifest_path)
        if "stages" in manifest:
            name = manifest["method"]
            methods[storage.parent(manifest_path)] = Row(
                name, METHODS[name].label if name in METHODS else name, manifest=manifest
            )
    for scores_path in _found(dirs, "scores.json"):
        scores = storage.read_json(scores_path)
        model = scores["model"]
        train_path = storage.join(storage.parent(model), "train.json")
        if storage.parent(model) != "." and storage.is_file(train_path):  # not a registry name: a trained student
            train = storage.read_json(train_path)
            dataset = train["dataset"]
            run_dir = storage.normalize(storage.parent(dataset) if os.path.splitext(dataset)[1] else dataset)
            method = methods.setdefault(run_dir, Row(storage.name(run_dir), storage.name(run_dir)))
            method.train = train
        else:
            name = storage.name(model)
            method = methods.setdefault(model, Row(name, f"{name} (not fine-tuned)"))
        method.scores[scores["dataset"]] = scores
    rows = sorted(
        methods.values(), key=lambda m: (m.manifest is not None, ORDER.index(m.name) if m.name in ORDER else len(ORDER))
    )
    for label in {m.label for m in rows if sum(o.label == m.label for o in rows) > 1}:
        same = {key: m for key, m in methods.items() if m.label == label}
        for key, m in same.items():
            m.label = f"{label} ({_below_common(key, list(same))})"
    return rows


def _below_common(key: str, keys: list[str]) -> str:
    """``key`` relative to the longest directory that all ``keys`` (paths or URIs) are under."""
    parts = [k.split("/") for k in keys]
    common = 0
    while all(len(p) > common and p[common] == parts[0][common] for p in parts):
        common += 1
    return "/".join(key.split("/")[common:]) or "."


def _found(dirs: list[str | Path], name: str) -> list[str]:
    """The files called ``name`` under ``dirs``, normalized (a file found twice counts once)."""
    return sorted({found for d in dirs for found in storage.find(d, name)})


def score_table(methods: list[Row]) -> tuple[list[str], list[list[str]]]:
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
            value = _pass1(m, dataset, kind)
            base = _pass1(reference, dataset, kind) if reference and m.train and m is not reference else None
            text = "-" if value is None else f"{value:.1f}"
            cells.append(text if value is None or base is None else f"{text} ({value - base:+.1f})")
        rows.append(cells)
    return header, rows


def _pass1(method: Row | None, dataset: str, kind: str) -> float | None:
    scores = method.scores.get(dataset) if method else None
    return 100 * scores[f"{kind}_pass@1"] if scores else None


def distill_table(methods: list[Row]) -> tuple[list[str], list[list[str]]]:
    """Per method: instructions, dataset rows, response accuracy, teacher calls and tokens, wall time."""
    header = [
        "Method",
        "Instructions",
        "Dataset rows",
        "Response accuracy",
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
                str(d["rows"] + d["dropped"]),
                str(d["rows"]),
                accuracy,
                str(cost["calls"]),
                str(cost["input_tokens"]),
                str(cost["output_tokens"]),
                str(modules),
                str(m.manifest["wall_time_s"]),
            ]
        )
    return header, rows


def teacher_cost(manifest: dict[str, Any]) -> dict[str, int]:
    """Teacher calls and tokens over every stage (answers, decompositions, growth and seed tests)."""
    cost = {"calls": 0, "input_tokens": 0, "output_tokens": 0}
    for stage in manifest["stages"].values():
        if "input_tokens" in stage:
            cost["calls"] += stage["rows"]
            cost["input_tokens"] += stage["input_tokens"]
            cost["output_tokens"] += stage["output_tokens"]
        cost["calls"] += stage.get("test_calls", 0)
        cost["input_tokens"] += stage.get("test_input_tokens", 0)
        cost["output_tokens"] += stage.get("test_output_tokens", 0)
    return cost


def funnel_table(method: Row) -> tuple[list[str], list[list[str]]]:
    """A method's stages: rows out, teacher errors, tokens and what each stage found."""
    header = ["Stage", "Rows", "Errors", "Input tokens", "Output tokens", "Notes"]
    rows = []
    for name, s in method.manifest["stages"].items():
        notes = [f"{s['without_specs']} without specs"] if "without_specs" in s else []
        notes += [f"{s['queries']} queries"] if "queries" in s else []
        notes += [f"{v} {k}" for k, v in s.get("verdicts", {}).items()]
        notes += [f"{v} {k}" for k, v in s.get("candidates", {}).items()]
        notes += [f"{s['inserted']} inserted"] if "inserted" in s else []
        notes += [f"skipped: {s['skipped']}"] if "skipped" in s else []
        notes += ["resumed"] if s.get("resumed") else []
        rows.append(
            [name, *(str(s.get(k, "")) for k in ("rows", "errors", "input_tokens", "output_tokens")), ", ".join(notes)]
        )
    return header, rows


def train_table(methods: list[Row]) -> tuple[list[str], list[list[str]]]:
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


def plot_scores(methods: list[Row], path: str | Path | BinaryIO) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    scored = [m for m in methods if m.scores]
    x = np.arange(len(COLUMNS))
    width = 0.8 / max(len(scored), 1)
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(COLUMNS), 4))
    for i, m in enumerate(scored):
        values = [_pass1(m, d, kind) or 0.0 for d, kind, _ in COLUMNS]
        bars = ax.bar(x + i * width - 0.4 + width / 2, values, width, label=m.label)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, [name for _, _, name in COLUMNS])
    ax.set_ylabel("pass@1 (%)")
    ax.set_title("Student pass@1 per distillation method")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)


def plot_growth(methods: list[Row], path: str | Path | BinaryIO) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in methods:
        if m.manifest and m.manifest["modules"]:
            rows = growth(m.manifest)
            ax.plot(range(len(rows)), rows, marker="o", label=m.label)
    ax.set_xlabel("wave (0: after bootstrapping)")
    ax.set_ylabel("verified functions in the table")
    ax.set_title("Functional module database growth")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)


def write(dirs: list[str | Path], out: str | Path) -> str:
    """Collect ``dirs`` and write the report into ``out`` (paths or URIs); return ``out``, normalized."""
    import matplotlib

    matplotlib.use("Agg")
    methods = collect(dirs)
    if not methods:
        raise ReportError(f"no manifest.json or scores.json under {', '.join(map(str, dirs))}")
    folder = storage.RunDir(storage.normalize(out))
    plots = []
    for name, alt, wanted, plot in (
        ("pass_at_1.png", "pass@1 per method", any(m.scores for m in methods), plot_scores),
        (
            "module_growth.png",
            "module table growth per wave",
            any(m.manifest and m.manifest["modules"] for m in methods),
            plot_growth,
        ),
    ):
        if wanted:
            png = io.BytesIO()
            plot(methods, png)
            folder.write_bytes(name, png.getvalue())
            plots.append((name, alt))
    sections = _sections(methods)
    folder.write_text("report.md", _markdown(sections, plots))
    folder.write_text("report.html", _html(sections, plots))
    return folder.uri


def _sections(methods: list[Row]) -> list[tuple[str, str, tuple[list[str], list[list[str]]]]]:
    """(title, caption, table) in reading order."""
    against = (
        f" In brackets: the change against {REFERENCE} distillation."
        if any(m.name == REFERENCE and m.scores for m in methods)
        else ""
    )
    sections = [
        ("Student pass@1 (%)", f"EvalPlus, greedy. {datasets_note(methods)}.{against}", score_table(methods)),
        (
            "Distillation",
            "Response accuracy: final answers passing the instructions' own tests in the "
            "sandbox. Teacher calls and tokens over every stage.",
            distill_table(methods),
        ),
        ("Student training", "", train_table(methods)),
    ]
    sections += [
        (f"Funnel: {m.label}", f"Teacher {m.manifest['teacher_model']}.", funnel_table(m))
        for m in methods
        if m.manifest
    ]
    return [s for s in sections if s[2][1]]


def _markdown(sections, plots) -> str:
    out = ["# amr-evol report", ""]
    for title, caption, (header, rows) in sections:
        out += [
            f"## {title}",
            "",
            *([caption, ""] if caption else []),
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows),
            "",
        ]
    out += [f"![{alt}]({name})" for name, alt in plots]
    return "\n".join(out) + "\n"


def _html(sections, plots) -> str:
    def table(header, rows):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    parts = [
        f"<h2>{html.escape(t)}</h2>" + (f"<p>{html.escape(c)}</p>" if c else "") + table(*tab) for t, c, tab in sections
    ]
    parts += [f'<figure><img src="{name}" alt="{alt}"><figcaption>{alt}</figcaption></figure>' for name, alt in plots]
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:72em}table{border-collapse:collapse;margin:.5em 0 1.5em}"
        "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}th:first-child,td:first-child"
        "{text-align:left}th{background:#f3f3f3}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>amr-evol report</title><style>{style}</style>"
        f"</head><body><h1>amr-evol report</h1>{''.join(parts)}</body></html>\n"
    )
