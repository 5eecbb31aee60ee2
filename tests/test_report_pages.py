"""The report's answer to "did AMR help?": its statistics and tables with literal values, then a report from a
run laid out as `amr run` writes it (stage files, evalplus results, TensorBoard events), rendered in a real
headless Chromium: the page, its images and a screenshot."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from amr.report.collect import Row, row_verdicts, task_verdicts, training_curves
from amr.report.stats import Paired, paired, sign_test, verdict, wilson
from amr.report.tables import (
    DATASETS,
    compare,
    examples,
    funnel,
    response_table,
    stage_times,
    student_table,
    teacher_name,
    verdicts,
    without_specs,
)
from jobs.cli import app

runner = CliRunner()
N = 10
AMR_PASSES = {0, 1, 2, 3, 4, 7}  # row 9 is left out of AMR's dataset (no answer): a failure
DIRECT_PASSES = {0, 1, 2, 8}
HE_TASKS = {  # task: (amr base, amr plus, direct base, direct plus)
    "HumanEval/0": (True, True, True, True),
    "HumanEval/1": (True, False, False, False),
    "HumanEval/2": (True, True, False, False),
    "HumanEval/3": (False, False, True, True),
    "HumanEval/4": (False, False, False, False),
}


@pytest.mark.timeout(30)
def test_sign_test_and_wilson_intervals():
    assert sign_test(3, 0) == 0.25
    assert sign_test(0, 3) == 0.25
    assert sign_test(3, 1) == 0.625
    assert sign_test(9, 1) == 22 / 1024
    assert sign_test(1, 1) == 1.0 and sign_test(0, 0) == 1.0
    assert wilson(5, 20) == pytest.approx((0.1119, 0.4687), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


@pytest.mark.timeout(30)
def test_paired_counts_and_the_verdict_in_words():
    a = {"1": True, "2": True, "3": True, "4": False, "5": False, "6": True}
    b = {"1": True, "2": False, "3": False, "4": True, "5": False, "7": True}  # 6 and 7: not in both
    pair = paired(a, b)
    assert pair == Paired(only_a=2, only_b=1, both=1, neither=1)
    assert (pair.n, pair.a, pair.b, pair.p) == (5, 3, 2, 1.0)
    assert verdict("AMR-Evol", "direct", Paired(3, 0, 10, 27), "answered", "instructions correctly") == (
        "AMR-Evol answered 3 more of 40 instructions correctly than direct (13 vs 10; p=0.25): within noise"
    )
    assert verdict("AMR-Evol", "direct", Paired(0, 9, 1, 0), "answered", "instructions correctly") == (
        "direct answered 9 more of 10 instructions correctly than AMR-Evol (10 vs 1; p<0.01): beyond noise"
    )
    assert verdict("A", "B", Paired(2, 2, 1, 5), "solved", "MBPP tasks") == (
        "A and B solved the same number of the 10 MBPP tasks (3 each; p=1.00): no difference"
    )


def manifest(method: str, passed: int) -> dict:
    stages = {"direct": {"wall_time_s": 30.0, "rows": N, "errors": 0, "input_tokens": 900, "output_tokens": 1500}}
    modules = {}
    if method == "amr":
        stages |= {
            "decompose": {"wall_time_s": 20.0, "rows": N, "errors": 1, "without_specs": 3, "retried": 3},
            "embed": {"wall_time_s": 4.0, "rows": N, "queries": 12},
            "bootstrap": {"rows": 2, "errors": 0, "inserted": 2, "wall_time_s": 10.0},
            "waves": {"wall_time_s": 25.0},  # the waves overlap: their step's wall, not the sum of theirs
            "evolve": {"rows": N, "errors": 1, "input_tokens": 2000, "output_tokens": 1800},
        }
        modules = {"rows": 5, "waves": [{"wave": 0, "inserted": 2, "wall_time_s": 20.0}, {"wave": 1, "inserted": 1}]}
    return {
        "method": method,
        "config": {"teacher": {"model": "smollm2-135m-instruct"}},
        "teacher_model": "/root/.cache/amr/models/smollm2-135m-instruct",
        "stages": stages,
        "modules": modules,
        "dataset": {
            "rows": N - (method == "amr"),
            "dropped": int(method == "amr"),
            "with_tests": N - (method == "amr"),
            "response_accuracy": passed / (N - (method == "amr")),
        },
        "wall_time_s": 120.0,
    }


def stage(folder: Path, rows: list[dict]) -> None:
    """A finished stage directory as the distill job writes one."""
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "00000.parquet")
    (folder / "_SUCCESS").touch()


def distill_run(root: Path, method: str, passes: set[int]) -> None:
    run = root / method / "distill"
    ids = [f"mbpp/{600 + i}" for i in range(N)]
    stage(
        run / "input.parquet",
        [{"id": ids[i], "instruction": f"Task {i}", "tests": [f"assert f{i}() == {i}"], "index": i} for i in range(N)],
    )
    kept = range(N - 1) if method == "amr" else range(N)
    stage(
        run / "dataset.parquet",
        [{"id": ids[i], "response": f"def f{i}():\n    return {i}", "tests_passed": i in passes} for i in kept],
    )
    if method == "amr":
        (run / "waves").mkdir()
        wave = [
            {
                "id": ids[i],
                "index": i,
                "instruction": f"Task {i}: return {i}.",
                "direct_response": f"```python\ndef f{i}():\n    return -{i}\n```",
                "specs": json.dumps(
                    [{"name": f"f{i}", "signature": f"def f{i}() -> int", "description": "The number."}]
                    if i % 2
                    else []
                ),
                "md_reason": None if i % 2 else "no function in R_d",
                "retrieved": json.dumps([{"name": "ident", "code": "def ident(x):\n    return x", "similarity": 0.8}])
                if i == 3
                else "[]",
                "are_response": f"```python\ndef f{i}():\n    return {i}\n```",
            }
            for i in range(N)
        ]
        pq.write_table(pa.Table.from_pylist(wave), run / "waves" / "00000.parquet")
        (run / "waves" / "00000.json").write_text("{}")
    (run / "manifest.json").write_text(json.dumps(manifest(method, len(passes & set(kept)))))


def trained_and_scored(root: Path, method: str, column: int) -> None:
    from torch.utils.tensorboard import SummaryWriter

    student = root / method / "student"
    (student / "model").mkdir(parents=True)
    (student / "train.json").write_text(
        json.dumps(
            {
                "model": "smollm2-135m-instruct",
                "examples": N,
                "steps": 3,
                "final_loss": 1.5,
                "tokens_per_s": 30.0,
                "wall_time_s": 90.0,
                "dataset": str(root / method / "distill" / "dataset.parquet"),
            }
        )
    )
    with SummaryWriter(str(student / "tensorboard")) as writer:
        for step, loss in enumerate([2.5, 2.0, 1.5], start=1):
            writer.add_scalar("train/loss", loss + column / 10, step)
            writer.add_scalar("train/learning_rate", 1e-5, step)
    for dataset, tasks in (("humaneval", HE_TASKS), ("mbpp", {"Mbpp/2": (True, True, False, False)})):
        folder = root / method / "eval" / dataset
        folder.mkdir(parents=True)
        status = {t: ("pass" if v[column] else "fail", "pass" if v[column + 1] else "fail") for t, v in tasks.items()}
        (folder / "samples_eval_results.json").write_text(
            json.dumps({"eval": {t: [{"base_status": b, "plus_status": p}] for t, (b, p) in status.items()}})
        )
        n = len(tasks)
        scores = {
            "model": str(student / "model"),
            "dataset": dataset,
            "version": "v0.1.10" if dataset == "humaneval" else "v0.2.0",
            "n_tasks": n,
            "limit": n,
            "base_pass@1": sum(b == "pass" for b, _ in status.values()) / n,
            "plus_pass@1": sum(p == "pass" for _, p in status.values()) / n,
            "generation_s": 10.0,
            "scoring_s": 2.0,
        }
        (folder / "scores.json").write_text(json.dumps(scores))


@pytest.fixture
def run_output(tmp_path) -> Path:
    """`amr run`'s output for direct and AMR-Evol on the same 10 instructions."""
    root = tmp_path / "run"
    distill_run(root, "direct", DIRECT_PASSES)
    distill_run(root, "amr", AMR_PASSES)
    trained_and_scored(root, "amr", 0)
    trained_and_scored(root, "direct", 2)
    return root


@pytest.mark.timeout(60)
def test_the_comparison_from_the_runs_files(run_output):
    amr_rows, direct_rows = (
        row_verdicts(str(run_output / "amr/distill")),
        row_verdicts(str(run_output / "direct/distill")),
    )
    assert sorted(i for i, v in amr_rows.items() if v) == [f"mbpp/60{i}" for i in sorted(AMR_PASSES)]
    assert amr_rows["mbpp/609"] is False  # left out of the dataset
    tasks = task_verdicts(str(run_output / "amr/eval/humaneval"))
    assert tasks["HumanEval/1"] == {"base": True, "plus": False}
    assert training_curves(str(run_output / "amr/student")) == {
        "train/loss": [(1, 2.5), (2, 2.0), (3, 1.5)],
        "train/learning_rate": [(1, pytest.approx(1e-5)), (2, pytest.approx(1e-5)), (3, pytest.approx(1e-5))],
    }
    a, b = (
        Row(
            m,
            label,
            scores={d: json.loads((run_output / m / "eval" / d / "scores.json").read_text()) for d in DATASETS},
        )
        for m, label in (("amr", "AMR-Evol"), ("direct", "direct"))
    )
    direct_tasks = task_verdicts(str(run_output / "direct/eval/humaneval"))
    c = compare(a, b, amr_rows, direct_rows, {"humaneval": tasks}, {"humaneval": direct_tasks})
    assert c.responses == Paired(only_a=3, only_b=1, both=3, neither=3)
    assert [(x.name, x.n, x.solved_a, x.solved_b, x.pair) for x in c.benchmarks] == [
        ("HumanEval", 5, 3, 2, Paired(2, 1, 1, 1)),
        ("HumanEval+", 5, 2, 2, Paired(1, 1, 1, 2)),
        ("MBPP", 1, 1, 0, None),  # no per-task results given: the counts from the scores, no pairs
        ("MBPP+", 1, 1, 0, None),
    ]
    assert verdicts(c)[:3] == [
        "AMR-Evol answered 2 more of 10 instructions correctly than direct (6 vs 4; p=0.62): within noise",
        "AMR-Evol's student solved 1 more of 5 HumanEval tasks than direct's student (3 vs 2; p=1.00): within noise",
        "AMR-Evol's student and direct's student solved the same number of the 5 HumanEval+ tasks (2 each; p=1.00): "
        "no difference",
    ]
    assert verdicts(c)[3] == (
        "MBPP: AMR-Evol's student solved 1 of 1 tasks, direct's 0 (the 95% intervals overlap: within noise)"
    )
    assert response_table(c) == (
        [
            "Instructions with tests",
            "direct correct",
            "AMR-Evol correct",
            "only AMR-Evol",
            "only direct",
            "both",
            "neither",
            "sign test",
        ],
        [["10", "4 (40.0%, 17-69)", "6 (60.0%, 31-83)", "3", "1", "3", "3", "p=0.62"]],
    )
    assert student_table(c)[1][:2] == [
        ["HumanEval", "5", "2 (40.0%, 12-77)", "3 (60.0%, 23-88)", "2", "1", "p=1.00"],
        ["HumanEval+", "5", "2 (40.0%, 12-77)", "2 (40.0%, 12-77)", "1", "1", "p=1.00"],
    ]


@pytest.mark.timeout(60)
def test_funnel_times_teacher_and_examples(run_output):
    m = json.loads((run_output / "amr/distill/manifest.json").read_text())
    assert teacher_name(m) == "smollm2-135m-instruct"
    assert teacher_name({"teacher_model": "/m/qwen", "config": {"teacher": {"model": "/m/qwen"}}}) == "qwen"
    assert funnel(m) == [
        ("instructions", 10),
        ("direct", 10),
        ("decompose", 9),
        ("with specs", 7),
        ("evolve", 9),
        ("dataset rows", 9),
        ("passing tests", 6),
    ]
    row = Row("amr", "AMR-Evol", manifest=m, train={"wall_time_s": 90.0}, scores={"mbpp": {"generation_s": 4.0}})
    row.scores["mbpp"]["scoring_s"] = 1.0
    assert stage_times(row) == [
        ("direct", 30.0),
        ("decompose", 20.0),
        ("embed", 4.0),
        ("bootstrap", 10.0),
        ("waves", 25.0),
        ("distill: rest", 31.0),
        ("train", 90.0),
        ("eval MBPP", 5.0),
    ]
    del m["stages"]["waves"]  # a run from before the waves overlapped: the sum of the waves' times
    assert ("waves", 20.0) in stage_times(row)
    rows = [
        {"id": "a", "retrieved": [], "specs": []},
        {"id": "b", "retrieved": [{"name": "f"}], "specs": [{}]},
        {"id": "c", "retrieved": [], "specs": [{}]},
        {"id": "d", "retrieved": [], "specs": []},
    ]
    chosen = examples(
        rows, {"a": False, "b": True, "c": True, "d": True}, {"a": False, "b": True, "c": True, "d": False}
    )
    assert [(e["id"], e["amr_verdict"], e["direct_verdict"]) for e in chosen] == [
        ("d", "passed", "failed"),  # the verdicts differ
        ("b", "passed", "passed"),  # a function was retrieved
        ("c", "passed", "passed"),  # specs
    ]
    assert examples(rows[:1], {}, {})[0]["amr_verdict"] == "not tested"
    assert without_specs([{"id": "a", "specs": [], "md_reason": "no function"}, {"id": "b", "specs": [{}]}]) == (
        ["Instruction", "Why no specs"],
        [["a", "no function"]],
    )


def chromium() -> str:
    """The Chromium binary; the test skips where there is none, unless under CI (CI=true), where it fails."""
    found = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if found:
        return found
    reason = "chromium is not installed (`make setup` installs it as root: apt-get install chromium)"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{reason}; CI is set, so the report's render test must run")
    pytest.skip(reason)


@pytest.mark.timeout(30)
def test_without_chromium_the_render_test_skips_except_under_ci(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium is not installed"):
        chromium()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        chromium()


def headless(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
    ]
    flags += ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's own sandbox refuses root
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=90, check=True)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


PROBE = (
    "<script>window.addEventListener('load', () => { document.body.dataset.images = JSON.stringify("
    "[...document.images].map(i => [i.getAttribute('src'), i.naturalWidth, i.naturalHeight])); });</script>"
)


@pytest.mark.timeout(180)
def test_report_renders_in_headless_chromium(run_output, tmp_path):
    binary = chromium()
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(run_output), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "AMR-Evol answered 2 more of 10 instructions correctly than direct" in result.output  # the terminal too
    md = (out / "report.md").read_text()
    assert md.index("## Did AMR-Evol help?") < md.index("## Student pass@1")  # the answer leads
    assert "- AMR-Evol answered 2 more of 10 instructions correctly than direct (6 vs 4; p=0.62): within noise" in md
    assert "Teacher smollm2-135m-instruct; 10 instructions" in md and "/root/.cache" not in md
    assert "| mbpp/600 | no function in R_d |" in md.split("## Rows without specs: AMR-Evol")[1]

    # the page as Chromium loads it: every image decoded (naturalWidth > 0)
    page = (out / "report.html").read_text()
    (out / "probe.html").write_text(page.replace("</body>", PROBE + "</body>"))
    dom = headless(
        binary, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", (out / "probe.html").as_uri()
    ).stdout
    images = json.loads(html.unescape(re.search(r'data-images="([^"]*)"', dom).group(1)))
    assert sorted(src for src, _, _ in images) == [
        "funnel.png",
        "loss.png",
        "module_growth.png",
        "pass_at_1.png",
        "time.png",
    ]
    assert all(width > 100 and height > 100 for _, width, height in images), images
    assert re.search(r"<h2>Did AMR-Evol help\?[^<]*</h2>", dom)
    assert dom.count('class="example"') == 3 and "similarity 0.80" in dom

    # and as a person sees it: a screenshot of the window's size that is not blank
    shot = tmp_path / "report.png"
    headless(
        binary,
        tmp_path / "profile",
        "--virtual-time-budget=10000",
        "--window-size=1280,2400",
        f"--screenshot={shot}",
        (out / "report.html").as_uri(),
    )
    data = shot.read_bytes()
    assert png_size(data) == (1280, 2400) and len(data) > 50_000

    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert len({tuple(p) for p in pixels[::8, ::8].reshape(-1, pixels.shape[-1]).tolist()}) > 50  # not one colour
