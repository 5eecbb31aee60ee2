"""`amr report` on job outputs laid out as the jobs write them: provenance links scores to methods, the paper's
table with deltas against direct, costs, the funnel and module growth; the same over an object store (S3, moto)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from amr import storage
from amr.report import collect, growth, score_table, teacher_cost
from jobs.cli import app

runner = CliRunner()


def manifest(method: str, accuracy: float, waves: list[int] | None = None) -> dict:
    stages = {"direct": {"rows": 10, "errors": 0, "input_tokens": 100, "output_tokens": 300}}
    modules = {}
    if waves is not None:
        stages["bootstrap"] = {
            "rows": 2,
            "errors": 0,
            "input_tokens": 20,
            "output_tokens": 40,
            "candidates": {"verified": 3},
            "test_calls": 3,
            "test_input_tokens": 30,
            "test_output_tokens": 60,
            "inserted": 3,
        }
        stages["grow"] = {
            "candidates": {"verified": sum(waves), "known": 1},
            "test_calls": sum(waves) + 1,
            "test_input_tokens": 5,
            "test_output_tokens": 7,
        }
        modules = {
            "rows": 3 + sum(waves),
            "version": 1 + len(waves),
            "waves": [{"wave": i, "rows": 5, "inserted": n} for i, n in enumerate(waves)],
        }
    return {
        "method": method,
        "teacher_model": "teacher",
        "stages": stages,
        "modules": modules,
        "wall_time_s": 12.0,
        "dataset": {
            "rows": 10,
            "dropped": 0,
            "with_tests": 10,
            "response_accuracy": accuracy,
            "sources": {"are": 10} if waves is not None else {"direct": 10},
            "from_direct": 0.0 if waves is not None else 1.0,
        },
    }


def scores(model: Path | str, dataset: str, base: float, plus: float) -> dict:
    return {
        "model": str(model),
        "dataset": dataset,
        "version": {"humaneval": "v0.1.10", "mbpp": "v0.1.0"}[dataset],
        "n_tasks": 40,
        "limit": 40,
        "base_pass@1": base,
        "plus_pass@1": plus,
    }


def write(path: Path | str, data: dict) -> None:
    """A JSON file at a local path or a URI."""
    storage.write_json(path, data)


def method_dirs(
    root: Path | str, method: str, accuracy: float, he: tuple, mbpp: tuple, waves=None, students: Path | None = None
) -> None:
    """One method's outputs as `amr run` lays them out under ``root`` (a path or URI); the student under
    ``students`` when given (a run whose output is a URI keeps its students on a local disk)."""
    write(storage.join(root, method, "distill", "manifest.json"), manifest(method, accuracy, waves))
    student = storage.join(students, method) if students else storage.join(root, method, "student")
    write(
        storage.join(student, "train.json"),
        {
            "model": "smollm2-135m-instruct",
            "examples": 10,
            "steps": 4,
            "final_loss": 0.5,
            "tokens_per_s": 100.0,
            "wall_time_s": 60.0,
            "dataset": storage.join(root, method, "distill", "dataset.parquet"),
        },
    )
    for dataset, (base, plus) in (("humaneval", he), ("mbpp", mbpp)):
        write(
            storage.join(root, method, "eval", dataset, "scores.json"),
            scores(storage.join(student, "model"), dataset, base, plus),
        )


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
    assert rows == [
        ["smollm2-135m-instruct (not fine-tuned)", "10.0", "5.0", "10.0", "5.0"],
        ["direct", "40.0", "35.0", "50.0", "45.0"],
        ["AMR-Evol", "45.0 (+5.0)", "40.0 (+5.0)", "50.0 (+0.0)", "42.5 (-2.5)"],
    ]
    amr = methods[2]
    assert growth(amr.manifest) == [3, 5, 5, 6]
    assert teacher_cost(amr.manifest) == {
        "calls": 10 + 2 + 3 + 4,
        "input_tokens": 100 + 20 + 30 + 5,
        "output_tokens": 300 + 40 + 60 + 7,
        "tokens": 100 + 20 + 30 + 5 + 300 + 40 + 60 + 7,
    }

    # a second run of the same methods: labels say which run
    method_dirs(tmp_path / "other", "amr", 0.7, (0.5, 0.5), (0.5, 0.5))
    labels = [m.label for m in collect([root, tmp_path / "other"])]
    assert "AMR-Evol (run/amr/distill)" in labels and "AMR-Evol (other/amr/distill)" in labels

    result = runner.invoke(app, ["report", str(root), "--output", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| AMR-Evol | 45.0 (+5.0) | 40.0 (+5.0) | 50.0 (+0.0) | 42.5 (-2.5) |" in md
    assert "HumanEval(+) v0.1.10: 40 tasks (--limit); MBPP(+) v0.1.0: 40 tasks (--limit)" in md
    assert "| AMR-Evol | teacher | 10 | 10 | 60.0% of 10 | 0% (0 of 10) | 19 | 155 | 407 | 6 | 12.0 |" in md
    assert "| grow |  |  |  |  | 3 verified, 1 known |" in md.split("## Stages: AMR-Evol")[1]
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<td>45.0 (+5.0)</td>" in html and html.count("<img") == 4  # pass@1, funnel, time, growth


@pytest.mark.timeout(60)
def test_nothing_to_report_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path), "--output", str(tmp_path / "report")])
    assert result.exit_code == 2 and f"no manifest.json or scores.json under {tmp_path}" in result.output
    missing = tmp_path / "nothing-here"
    result = runner.invoke(app, ["report", str(missing), "--output", str(tmp_path / "report")])
    assert result.exit_code == 2 and f"no such directory: {missing}" in result.output


@pytest.mark.timeout(120)
def test_report_reads_and_writes_an_object_store(s3_server, tmp_path):
    # `amr run` with an s3:// output: distill and eval outputs in the bucket, the students on a local disk
    root = f"s3://{s3_server['bucket']}/report-{tmp_path.name}/run"
    students = tmp_path / "students"
    method_dirs(root, "amr", 0.6, (0.45, 0.40), (0.5, 0.425), waves=[2, 0, 1], students=students)
    method_dirs(root, "direct", 0.5, (0.40, 0.35), (0.5, 0.45), students=students)
    for dataset in ("humaneval", "mbpp"):
        write(f"{root}/base/eval/{dataset}/scores.json", scores("smollm2-135m-instruct", dataset, 0.1, 0.05))
    out = f"s3://{s3_server['bucket']}/report-{tmp_path.name}/report/"
    result = runner.invoke(app, ["report", f"{root}/", "--output", out])
    assert result.exit_code == 0, result.output
    out = out.rstrip("/")
    assert f"report: {out}/report.html" in result.output
    md = storage.read_text(f"{out}/report.md")
    assert "| AMR-Evol | 45.0 (+5.0) | 40.0 (+5.0) | 50.0 (+0.0) | 42.5 (-2.5) |" in md  # linked through train.json
    assert "| smollm2-135m-instruct (not fine-tuned) | 10.0 | 5.0 | 10.0 | 5.0 |" in md
    assert "| AMR-Evol | teacher | 10 | 10 | 60.0% of 10 | 0% (0 of 10) | 19 | 155 | 407 | 6 | 12.0 |" in md
    assert "<td>45.0 (+5.0)</td>" in storage.read_text(f"{out}/report.html")
    for plot in ("pass_at_1.png", "module_growth.png"):
        with storage.open_input(f"{out}/{plot}") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # one run in the bucket, one on a local disk: labels say which, from where their paths differ
    method_dirs(tmp_path / "local", "amr", 0.7, (0.5, 0.5), (0.5, 0.5))
    labels = [m.label for m in collect([root, tmp_path / "local"])]
    assert f"AMR-Evol ({root}/amr/distill)" in labels and f"AMR-Evol ({tmp_path}/local/amr/distill)" in labels
    missing = f"s3://{s3_server['bucket']}/report-{tmp_path.name}/nothing"
    result = runner.invoke(app, ["report", missing, "--output", str(tmp_path / "report")])
    assert result.exit_code == 2 and f"no such directory: {missing}" in result.output


def test_a_run_per_level_is_laid_out_as_the_papers_table_1():
    from amr.report.collect import Row
    from amr.report.tables import level_of, level_table

    def row(method: str, level: int | None, he: float) -> Row:
        where = f"/runs/t1/level{level}/{method}" if level else f"/runs/t1/{method}"
        found = Row(method, method, run_dir=f"{where}/distill" if level else None)
        found.scores = {"humaneval": {"base_pass@1": he, "plus_pass@1": he / 2}}
        found.evals = {"humaneval": f"{where}/eval/humaneval"}
        return found

    rows = [
        row("direct", 1, 0.4),
        row("amr", 1, 0.5),
        row("direct", 2, 0.3),
        row("amr", 3, 0.6),
        row("base", None, 0.1),
    ]
    assert [level_of(r) for r in rows] == [1, 1, 2, 3, None]
    header, cells = level_table(rows)
    assert header == ["Method", *(f"L{n} {b}" for n in (1, 2, 3) for b in ("HumanEval", "HumanEval+", "MBPP", "MBPP+"))]
    assert cells == [
        ["direct", "40.0", "20.0", "-", "-", "30.0", "15.0", "-", "-", "-", "-", "-", "-"],
        ["AMR-Evol", "50.0", "25.0", "-", "-", "-", "-", "-", "-", "60.0", "30.0", "-", "-"],
    ]
    assert level_table(rows[-1:]) == (["Method"], [])  # no levels: no table
