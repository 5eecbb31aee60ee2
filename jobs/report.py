"""``amr report DIR... --output OUT``: the report (``amr.report``) of finished runs."""

from __future__ import annotations

from pathlib import Path

import typer

from amr.report import write
from jobs.common import console, run_as_module


def main(
    dirs: list[Path] = typer.Argument(..., exists=True, help="`amr run` outputs, distill run dirs or eval dirs."),
    output: Path = typer.Option(..., "--output", "-o", help="Directory for report.html, report.md and the plots."),
) -> None:
    """Report: the paper's table, response accuracy, the funnel, token costs and plots from finished runs."""
    out = write(dirs, output)
    console.print(f"report: {out / 'report.html'} (and report.md)", soft_wrap=True, highlight=False)


if __name__ == "__main__":
    run_as_module(main, "report")
