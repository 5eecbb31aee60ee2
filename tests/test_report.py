"""`amr report` on job outputs laid out as the jobs write them: provenance links scores to methods, the paper's
table with deltas against direct, costs, the funnel and module growth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from amr.report import collect, growth, score_table, teacher_cost
from jobs.cli import app

runner = CliRunner()


def manifest(method: str, accuracy: float, waves: list[int] | None = None) -> dict:
    stages = {"direct": {"rows": 10, "errors": 0, "input_tokens": 100, "output_tokens": 300}}
    modules = {}
    if waves is not None:
        stages["bootstrap"] = {"rows": 2, "errors": 0, "input_tokens": 20, "output_tokens": 40, "candidates": {"verified": 3},
                          "test_calls": 3, "test_input_tokens": 30, "test_output_tokens": 60, "inserted": 3}
        stages["grow"] = {"candidates": {"verified": sum(waves), "known": 1}, "test_calls": sum(waves) + 1,
                          "test_input_tokens": 5, "test_output_tokens": 7}
        modules = {"rows": 3 + sum(waves), "version": 1 + len(waves),
                   "waves": [{"wave": i, "rows": 5, "inserted": n} for i, n in enumerate(waves)]}
    return {"method": method, "teacher_model": "teacher", "stages": stages, "modules": modules, "wall_time_s": 12.0,
            "dataset": {"rows": 10, "dropped": 0, "with_tests": 10, "response_accuracy": accuracy}}


def scores(model: Path | str, dataset: str, base: float, plus: float) -> dict:
    return {"model": str(model), "dataset": dataset, "version": {"humaneval": "v0.1.10", "mbpp": "v0.1.0"}[dataset],
            "n_tasks": 40, "limit": 40, "base_pass@1": base, "plus_pass@1": plus}


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def method_dirs(root: Path, method: str, accuracy: float, he: tuple, mbpp: tuple, waves=None) -> None:
    write(root / method / "distill" / "manifest.json", manifest(method, accuracy, waves))
    student = root / method / "student"
    write(student / "train.json", {"model": "smollm2-135m-instruct", "examples": 10, "steps": 4, "final_loss": 0.5,
                                   "tokens_per_s": 100.0, "wall_time_s": 60.0,
                                   "dataset": str(root / method / "distill" / "dataset.parquet")})
    for dataset, (base, plus) in (("humaneval", he), ("mbpp", mbpp)):
        write(root / method / "eval" / dataset / "scores.json", scores(student / "model", dataset, base, plus))


@pytest.mark.timeout(120)
def test_report_links_scores_to_methods_and_lays_out_the_papers_table(tmp_path):
    root = tmp_path / "run"
    method_dirs(root, "amr", 0.6, (0.45, 0.40), (0.5, 0.425), waves=[2, 0, 1])
    method_dirs(root, "direct", 0.5, (0.40, 0.35), (0.5, 0.45))
    for dataset in ("humaneval", "mbpp"):
        write(root / "base" / "eval" / dataset / "scores.json", scores("smollm2-135m-instruct", dataset, 0.1, 0.05))
    methods = collect([root])
    assert [m.label for m in methods] == ["smollm2-135m-instruct (not fine-tuned)", "direct", "AMR-Evol"]
    header, rows = score_table(methods)
    assert header == ["Method", "HumanEval", "HumanEval+", "MBPP", "MBPP+"]
    assert rows == [["smollm2-135m-instruct (not fine-tuned)", "10.0", "5.0", "10.0", "5.0"],
                    ["direct", "40.0", "35.0", "50.0", "45.0"],
                    ["AMR-Evol", "45.0 (+5.0)", "40.0 (+5.0)", "50.0 (+0.0)", "42.5 (-2.5)"]]
    amr = methods[2]
    assert growth(amr.manifest) == [3, 5, 5, 6]
    assert teacher_cost(amr.manifest) == {"calls": 10 + 2 + 3 + 4, "input_tokens": 100 + 20 + 30 + 5,
                                          "output_tokens": 300 + 40 + 60 + 7}

    # a second run of the same methods: labels say which run
    method_dirs(tmp_path / "other", "amr", 0.7, (0.5, 0.5), (0.5, 0.5))
    labels = [m.label for m in collect([root, tmp_path / "other"])]
    assert "AMR-Evol (run/amr/distill)" in labels and "AMR-Evol (other/amr/distill)" in labels

    result = runner.invoke(app, ["report", str(root), "--output", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| AMR-Evol | 45.0 (+5.0) | 40.0 (+5.0) | 50.0 (+0.0) | 42.5 (-2.5) |" in md
    assert "HumanEval(+) v0.1.10: 40 tasks (--limit); MBPP(+) v0.1.0: 40 tasks (--limit)" in md
    assert "| AMR-Evol | 10 | 10 | 60.0% of 10 | 19 | 155 | 407 | 6 | 12.0 |" in md
    assert "| grow |  |  |  |  | 3 verified, 1 known |" in md.split("## Funnel: AMR-Evol")[1]
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<td>45.0 (+5.0)</td>" in html and html.count("<img") == 2


@pytest.mark.timeout(60)
def test_nothing_to_report_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path), "--output", str(tmp_path / "report")])
    assert result.exit_code == 2 and f"no manifest.json or scores.json under {tmp_path}" in result.output
