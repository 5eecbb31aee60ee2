"""``amr report DIR... --output OUT``: the report (``amr.report``) of finished runs; DIR and OUT may be URIs."""

from __future__ import annotations

import typer

from amr.report import answer, write
from amr.storage import join
from jobs.common import console, run_as_module


def main(
    dirs: list[str] = typer.Argument(..., help="`amr run` outputs, distill run dirs or eval dirs (paths or URIs)."),
    output: str = typer.Option(
        ..., "--output", "-o", help="Directory (or URI) for report.html, report.md and the plots."
    ),
) -> None:
    """Report: did AMR-Evol help (against direct, paired), the paper's table, the funnel, costs, curves, examples."""
    out = write(dirs, output)
    for line in answer(dirs):
        console.print(line, soft_wrap=True, highlight=False)
    console.print(f"report: {join(out, 'report.html')} (and report.md)", soft_wrap=True, highlight=False)


if __name__ == "__main__":
    run_as_module(main, "report")
