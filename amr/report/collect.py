"""What the report reads (its side effects): the jobs' summaries, linked by provenance, and the per-row and
per-task verdicts, training curves and example rows behind them."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amr import storage
from amr.methods import METHODS, REGISTRY

ORDER = [m.name for m in REGISTRY]
INPUT, DATASET, WAVES = "input.parquet", "dataset.parquet", "waves"  # amr.pipelines.distill's run directory
RESULTS = "samples_eval_results.json"  # evalplus's per-sample results, next to scores.json
PASS = "pass"
EXAMPLE_COLUMNS = ["id", "index", "instruction", "direct_response", "specs", "md_reason", "retrieved", "are_response"]


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
    run_dir: str | None = None
    """The distill run directory (normalized), when found."""
    student: str | None = None
    """The train output directory, when found."""
    evals: dict[str, str] = field(default_factory=dict)
    """The eval output directory per dataset."""


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
            name, run_dir = manifest["method"], storage.parent(manifest_path)
            label = METHODS[name].label if name in METHODS else name
            methods[run_dir] = Row(name, label, manifest=manifest, run_dir=run_dir)
    for scores_path in _found(dirs, "scores.json"):
        scores = storage.read_json(scores_path)
        model = scores["model"]
        train_path = storage.join(storage.parent(model), "train.json")
        if storage.parent(model) != "." and storage.is_file(train_path):  # not a registry name: a trained student
            train = storage.read_json(train_path)
            dataset = train["dataset"]
            run_dir = storage.normalize(storage.parent(dataset) if os.path.splitext(dataset)[1] else dataset)
            method = methods.setdefault(run_dir, Row(storage.name(run_dir), storage.name(run_dir)))
            method.train, method.student = train, storage.parent(train_path)
        else:
            name = storage.name(model)
            method = methods.setdefault(model, Row(name, f"{name} (not fine-tuned)"))
        method.scores[scores["dataset"]] = scores
        method.evals[scores["dataset"]] = storage.parent(scores_path)
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


def row_verdicts(run_dir: str) -> dict[str, bool]:
    """Per instruction with tests (by id): whether the method's answer passed them. A row the dataset left
    out (no answer, or the teacher's error) did not."""
    folder = storage.RunDir(run_dir)
    passed = {
        i: bool(p)
        for batch in folder.scan_columns(DATASET, ["id", "tests_passed"])
        for i, p in zip(batch["id"], batch["tests_passed"])
    }
    return {
        i: passed.get(i, False)
        for batch in folder.scan_columns(INPUT, ["id", "tests"])
        for i, tests in zip(batch["id"], batch["tests"])
        if tests
    }


def task_verdicts(eval_dir: str) -> dict[str, dict[str, bool]] | None:
    """Per benchmark task: whether every sample passed the ``base`` and the ``plus`` tests (evalplus's results
    next to ``scores.json``); None when the results are not there."""
    path = storage.join(eval_dir, RESULTS)
    if not storage.is_file(path):
        return None
    results = storage.read_json(path)["eval"]
    return {
        task: {
            "base": all(s["base_status"] == PASS for s in samples),
            "plus": all(s["base_status"] == s["plus_status"] == PASS for s in samples),
        }
        for task, samples in results.items()
    }


def training_curves(student: str) -> dict[str, list[tuple[int, float]]]:
    """The TensorBoard scalars ``amr train`` wrote under ``student`` (tag -> (step, value), by step; a resumed
    run's later value of a step wins); none when it wrote none."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its reader logs each file it reads at INFO
    curves: dict[str, dict[int, float]] = {}
    for folder in sorted(_event_dirs(student)):
        events = EventAccumulator(folder, size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            for e in events.Scalars(tag):
                curves.setdefault(tag, {})[e.step] = e.value
    return {tag: sorted(points.items()) for tag, points in curves.items()}


def _event_dirs(student: str) -> set[str]:
    """The local folders under ``student`` holding TensorBoard event files (checkpoints are not looked into)."""
    found = set()
    for folder, dirs, files in os.walk(student):
        dirs[:] = [d for d in dirs if d != "checkpoints"]
        if any(f.startswith("events.out.tfevents.") for f in files):
            found.add(folder)
    return found


def example_rows(run_dir: str) -> list[dict[str, Any]]:
    """An AMR run's rows as its waves hold them (instruction, R_d, specs, retrieved functions, the evolved
    answer), each with its dataset ``response`` where it has one, in input order."""
    folder = storage.RunDir(run_dir)
    responses = {
        i: r
        for batch in folder.scan_columns(DATASET, ["id", "response"])
        for i, r in zip(batch["id"], batch["response"])
    }
    rows = [
        dict(zip(EXAMPLE_COLUMNS, values))
        for batch in folder.scan_columns(WAVES, EXAMPLE_COLUMNS)
        for values in zip(*(batch[c] for c in EXAMPLE_COLUMNS))
    ]
    for row in rows:
        row["response"] = responses.get(row["id"])
        row["specs"] = json.loads(row["specs"] or "[]")
        row["retrieved"] = json.loads(row["retrieved"] or "[]")
    return sorted(rows, key=lambda r: r["index"])
