"""The report: did AMR-Evol help? Then the paper's table (method x HumanEval, HumanEval+, MBPP, MBPP+), the
distillation's funnel and costs, training, time, module growth and examples.

    amr report DIR... --output OUT       (DIR: `amr run` outputs, distill run directories, eval directories)

It reads what the jobs wrote, found anywhere under each DIR: distill ``manifest.json``, ``train.json`` and
eval ``scores.json``. An evaluation is tied to its method by provenance: the evaluated model's directory sits
in a train output whose ``train.json`` names the distill dataset, next to that run's manifest. A model not
trained here (the student before fine-tuning) is a row of its own. When an AMR-Evol method and direct were
distilled side by side, the report leads with the two on the same instructions (paired verdicts, sign test)
and their students on the same tasks. Writes ``report.md``, ``report.html`` and the figures beside them.

Each DIR and OUT may be a local path or an object-store URI (``amr.storage``); a run whose outputs are in an
object store and whose students are on a local or shared disk links the same way (paths are compared
normalized). Modules: ``collect`` (reading), ``stats`` and ``tables`` (pure), ``plots``, ``render``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from amr import storage
from amr.methods import REFERENCE
from amr.report import plots
from amr.report.collect import ReportError, Row, collect, example_rows, row_verdicts, task_verdicts, training_curves
from amr.report.render import Section, markdown, page
from amr.report.tables import (
    Comparison,
    comparable,
    compare,
    datasets_note,
    distill_table,
    examples,
    funnel_table,
    growth,
    level_table,
    response_table,
    score_table,
    stage_times,
    student_table,
    teacher_cost,
    teacher_name,
    train_table,
    verdicts,
    without_specs,
)

__all__ = ["ReportError", "Row", "answer", "collect", "growth", "score_table", "teacher_cost", "write"]


def write(dirs: list[str | Path], out: str | Path) -> str:
    """Collect ``dirs`` and write the report into ``out`` (paths or URIs); return ``out``, normalized."""
    import matplotlib

    matplotlib.use("Agg")
    methods = collect(dirs)
    if not methods:
        raise ReportError(f"no manifest.json or scores.json under {', '.join(map(str, dirs))}")
    folder = storage.RunDir(storage.normalize(out))
    comparisons = [_comparison(a, b) for a, b in comparable(methods)]
    curves = {m.label: c for m in methods if m.student and (c := training_curves(m.student))}

    def figure(name: str, plot: Callable[[Any, BinaryIO], None], data: Any) -> str:
        png = io.BytesIO()
        plot(data, png)
        folder.write_bytes(name, png.getvalue())
        return name

    sections = [
        *(_lead(c) for c in comparisons),
        Section(
            "Student pass@1 (%)",
            f"EvalPlus, greedy. {datasets_note(methods)}."
            + (
                f" In brackets: the change against {REFERENCE} distillation."
                if any(m.name == REFERENCE and m.scores for m in methods)
                else ""
            ),
            tables=[score_table(methods)],
            figures=[(figure("pass_at_1.png", plots.plot_scores, methods), "pass@1 per method")]
            if any(m.scores for m in methods)
            else [],
        ),
    ]
    by_level = level_table(methods)
    if by_level[1]:
        sections.append(
            Section(
                "Per instruction level (the paper's Table 1)",
                "pass@1 (%) of each method's student, distilled on the instructions of one Code Evol-Instruct "
                "level (L1-L3).",
                tables=[by_level],
            )
        )
    distilled = [m for m in methods if m.manifest]
    if distilled:
        sections.append(
            Section(
                "Distillation",
                "Response accuracy: final answers passing the instructions' own tests in the sandbox. Teacher "
                "calls and tokens over every stage. The funnel: rows left after each step.",
                tables=[distill_table(methods)],
                figures=[(figure("funnel.png", plots.plot_funnel, methods), "rows left after each step")],
            )
        )
    if any(m.train for m in methods):
        sections.append(
            Section(
                "Student training",
                tables=[train_table(methods)],
                figures=[
                    (
                        figure("loss.png", partial(plots.plot_loss, curves=curves), methods),
                        "training loss per step (TensorBoard)",
                    )
                ]
                if curves
                else [],
            )
        )
    if any(stage_times(m) for m in methods):
        sections.append(
            Section(
                "Time per step",
                figures=[(figure("time.png", plots.plot_times, methods), "seconds per step of each method")],
            )
        )
    if any(m.manifest["modules"] for m in distilled):
        sections.append(
            Section(
                "Module table growth",
                figures=[(figure("module_growth.png", plots.plot_growth, methods), "module table growth per wave")],
            )
        )
    sections += [s for c in comparisons for s in _examples(c)]
    sections += [
        Section(f"Stages: {m.label}", f"Teacher {teacher_name(m.manifest)}.", tables=[funnel_table(m)])
        for m in distilled
    ]
    sections = [s for s in sections if s.sentences or any(rows for _, rows in s.tables) or s.figures or s.examples]
    lede = _lede(methods)
    folder.write_text("report.md", markdown(sections, lede))
    folder.write_text("report.html", page(sections, lede))
    return folder.uri


def answer(dirs: list[str | Path]) -> list[str]:
    """Did AMR help: the report's verdicts in words, for the terminal (none without an AMR method and direct)."""
    return [line for a, b in comparable(collect(dirs)) for line in verdicts(_comparison(a, b))]


def _comparison(a: Row, b: Row) -> Comparison:
    """Read what comparing ``a`` with ``b`` needs: their rows' and their students' tasks' verdicts."""
    return compare(
        a,
        b,
        row_verdicts(a.run_dir),
        row_verdicts(b.run_dir),
        {d: task_verdicts(e) for d, e in a.evals.items()},
        {d: task_verdicts(e) for d, e in b.evals.items()},
    )


def _lead(c: Comparison) -> Section:
    return Section(
        f"Did {c.a.label} help? Against {c.b.label} on the same instructions",
        "Response accuracy: each answer run against its instruction's own tests in the sandbox (a row left out "
        "of a dataset counts as failed). Students: pass@1 with its 95% Wilson interval. Sign test: exact, "
        "two-sided, on the items only one of the two got right.",
        sentences=verdicts(c),
        tables=[t for t in (response_table(c), student_table(c)) if t[1]],  # students: where both were scored
        lead=True,
    )


def _examples(c: Comparison) -> list[Section]:
    """A few rows side by side, and the rows without specs with the reason."""
    rows = example_rows(c.a.run_dir)
    return [
        Section(
            f"Examples: {c.b.label} and {c.a.label} side by side",
            "R_d is the teacher's direct answer (direct's training data); the specs come from modular "
            "decomposition, the functions from the module table, and the AMR answer from all three. Verdicts: the "
            "instruction's own tests.",
            examples=examples(rows, row_verdicts(c.a.run_dir), row_verdicts(c.b.run_dir)),
        ),
        Section(
            f"Rows without specs: {c.a.label}",
            "Their answer is evolved from the instruction alone: nothing to retrieve with.",
            tables=[without_specs(rows)],
        ),
    ]


def _lede(methods: list[Row]) -> str:
    """One line: the teacher(s), how many instructions, the students' benchmarks."""
    teachers = sorted({teacher_name(m.manifest) for m in methods if m.manifest})
    sizes = sorted({m.manifest["dataset"]["rows"] + m.manifest["dataset"]["dropped"] for m in methods if m.manifest})
    parts = [f"Teacher {', '.join(teachers)}" if teachers else ""]
    parts.append(f"{', '.join(map(str, sizes))} instructions" if sizes else "")
    note = datasets_note(methods)
    parts.append(f"students scored on {note}" if note else "")
    return "; ".join(p for p in parts if p) + "."
