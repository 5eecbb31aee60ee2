"""The report's figures (matplotlib, Agg), each written as a PNG to a path or a binary file."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from amr.report.collect import Row
from amr.report.tables import COLUMNS, funnel, growth, pass1, stage_times

Output = str | Path | BinaryIO
LOSS = "train/loss"


def _save(fig, path: Output) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def _integer(*axes) -> None:
    """Ticks on whole numbers only (waves, functions, rows, steps)."""
    from matplotlib.ticker import MaxNLocator

    for axis in axes:
        axis.set_major_locator(MaxNLocator(integer=True))


def _colours(methods: list[Row]) -> dict[str, str]:
    """One colour per method in every figure."""
    return {m.label: f"C{i % 10}" for i, m in enumerate(methods)}


def plot_scores(methods: list[Row], path: Output) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    scored = [m for m in methods if m.scores]
    x = np.arange(len(COLUMNS))
    width = 0.8 / max(len(scored), 1)
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(COLUMNS), 4))
    for i, m in enumerate(scored):
        values = [pass1(m, d, kind) or 0.0 for d, kind, _ in COLUMNS]
        bars = ax.bar(x + i * width - 0.4 + width / 2, values, width, label=m.label, color=_colours(methods)[m.label])
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, [name for _, _, name in COLUMNS])
    ax.set_ylabel("pass@1 (%)")
    ax.set_title("Student pass@1 per distillation method")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_growth(methods: list[Row], path: Output) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    grown = [(m.label, growth(m.manifest)) for m in methods if m.manifest and m.manifest["modules"]]
    for label, rows in grown:
        ax.plot(range(len(rows)), rows, marker="o", label=label, color=_colours(methods)[label])
    _integer(ax.xaxis, ax.yaxis)
    ax.set_ylim(0, max(max(rows) for _, rows in grown) * 1.1 + 1)  # an empty table too: 0 and 1, not 0.01
    ax.set_xlabel("wave (0: after bootstrapping)")
    ax.set_ylabel("verified functions in the table")
    ax.set_title("Functional module table growth")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_funnel(methods: list[Row], path: Output) -> None:
    """Per distilled method, the rows left after each step (``tables.funnel``), as horizontal bars."""
    import matplotlib.pyplot as plt

    distilled = [m for m in methods if m.manifest]
    steps = [funnel(m.manifest) for m in distilled]
    fig, axes = plt.subplots(
        1, len(distilled), figsize=(4.5 * len(distilled), 0.4 * max(len(s) for s in steps) + 1.2), squeeze=False
    )
    for ax, m, s in zip(axes[0], distilled, steps):
        bars = ax.barh([label for label, _ in s], [count for _, count in s], color="#4c72b0")
        ax.bar_label(bars, fontsize=8, padding=2)
        ax.invert_yaxis()
        _integer(ax.xaxis)
        ax.set_xlim(0, max(count for _, count in s) * 1.15 or 1)
        ax.set_title(f"Funnel: {m.label}", fontsize=10)
        ax.set_xlabel("rows")
    _save(fig, path)


def plot_loss(methods: list[Row], path: Output, curves: dict[str, dict[str, list[tuple[int, float]]]]) -> None:
    """Training loss per step for each method with ``curves`` (label -> TensorBoard tag -> points)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, tags in curves.items():
        points = tags.get(LOSS, [])
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o", label=label, color=_colours(methods)[label])
    _integer(ax.xaxis)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("Student training loss")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_times(methods: list[Row], path: Output) -> None:
    """Seconds per step of every method (``tables.stage_times``), as horizontal bars grouped by method."""
    import matplotlib.pyplot as plt

    colours = _colours(methods)
    bars = [(f"{m.label}: {step}", seconds, colours[m.label]) for m in methods for step, seconds in stage_times(m)]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(bars) + 1.2))
    drawn = ax.barh([label for label, _, _ in bars], [s for _, s, _ in bars], color=[c for _, _, c in bars])
    ax.bar_label(drawn, fmt="%.0f s", fontsize=8, padding=2)
    ax.invert_yaxis()
    ax.set_xlim(0, max((s for _, s, _ in bars), default=1) * 1.15)
    ax.set_xlabel("seconds")
    ax.set_title("Time per step")
    ax.tick_params(axis="y", labelsize=8)
    _save(fig, path)
