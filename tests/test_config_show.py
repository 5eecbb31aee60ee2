"""`amr config show`: a job's resolved config (includes at any depth, overrides, defaults) as YAML that loads back
as the same config, each value with the file and line it came from."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from amr.config import RunConfig, load_config
from amr.config_show import JOBS, guess_job
from jobs.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def _show(args: list[str]) -> str:
    result = runner.invoke(app, ["config", "show", *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.timeout(60)
def test_sources_of_included_overridden_and_default_values(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "distill.yaml").write_text("teacher:\n  sampling:\n    max_tokens: 128\nwave_size: 8\n")
    (tmp_path / "instr.yaml").write_text("self_instruct:\n  count: 12\n")
    (tmp_path / "run.yaml").write_text(
        "methods: [direct, amr]\n"
        "distill:\n"
        "  include: sub/distill.yaml\n"
        "  input:\n"
        "    limit: 3\n"
        "instructions: instr.yaml\n"  # an optional section, included from a file
    )
    out = _show(["--config", str(tmp_path / "run.yaml"), "--set", "distill.wave_size=2", "--set", "eval.limit=5"])
    run, sub, instr = tmp_path / "run.yaml", tmp_path / "sub" / "distill.yaml", tmp_path / "instr.yaml"
    for line in (
        f"methods: [direct, amr]  # {run}:1",
        f"    limit: 3  # {run}:5",
        f"      max_tokens: 128  # {sub}:3",  # two levels down in the included file
        "  wave_size: 2  # --set",  # overrides the included file's 8
        f"    count: 12  # {instr}:2",
        "  limit: 5  # --set",
        "    top_p: 1.0  # default",
        "allow_eval_overlap: false  # default",
    ):
        assert f"\n{line}\n" in out, line
    assert "run_dir" not in out and "\n  method:" not in out  # the run sets them for each method
    shown = tmp_path / "shown.yaml"
    shown.write_text(out)
    expected = load_config(RunConfig, run, ["distill.wave_size=2", "eval.limit=5"])
    assert load_config(RunConfig, shown) == expected  # it loads back as the same config
    assert expected.distill.teacher.sampling.max_tokens == 128 and expected.instructions.self_instruct.count == 12


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", sorted((ROOT / "jobs" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_round_trips(path, tmp_path):
    job = guess_job(path)
    shown = tmp_path / "shown.yaml"
    shown.write_text(_show(["--config", str(path)]))
    assert load_config(JOBS[job], shown) == load_config(JOBS[job], path)


@pytest.mark.timeout(60)
def test_the_job_is_guessed_or_named(tmp_path):
    assert guess_job(ROOT / "jobs" / "configs" / "run_local_cpu.yaml") == "run"
    assert guess_job(ROOT / "jobs" / "configs" / "train_local_cpu.yaml") == "train"
    assert guess_job(None) == "distill"
    (tmp_path / "odd.yaml").write_text("no_such_key: 1\n")
    result = runner.invoke(app, ["config", "show", "--config", str(tmp_path / "odd.yaml")])
    assert result.exit_code == 2 and "fit no job's config; name one with --job" in result.output
    result = runner.invoke(app, ["config", "show", "--job", "nope"])
    assert result.exit_code == 2 and "'nope': one of distill, run" in result.output
    out = _show(["--job", "teacher", "--set", "teacher.model=smollm2-135m-instruct"])
    assert out.startswith("# amr config show: the teacher job's config from <defaults> --set teacher.model=")
    assert "  model: smollm2-135m-instruct  # --set\n" in out
