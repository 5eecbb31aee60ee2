"""``amr run --dry-run``: the plan from the config alone, with literal expected steps and teacher-call ranges;
nothing started, nothing written."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from amr.config import RunConfig
from amr.pipelines.plan import Step, plan
from jobs.cli import app

pytestmark = pytest.mark.timeout(120)


def _config(tmp_path, **update) -> RunConfig:
    source = tmp_path / "instructions.jsonl"
    source.write_text("".join(json.dumps({"id": f"i{i}", "instruction": f"Write f{i}()."}) + "\n" for i in range(5)))
    settings = {
        "output": str(tmp_path / "run"),
        "methods": ["direct", "ansrepair", "amr", "amr-no-are"],
        "eval": {"datasets": ["humaneval", "mbpp"], "limit": 10, "base": False},
    }
    config = RunConfig(**{**settings, **update})
    config.distill.input.source, config.distill.input.limit = str(source), 4
    config.distill.modules.bootstrap_limit = 2
    return config


def test_the_plan_counts_rows_and_teacher_calls_per_step(tmp_path):
    steps = plan(_config(tmp_path))
    assert steps[:4] == [
        Step("direct: distill (direct)", 4, (4, 4), "direct/distill"),
        Step("ansrepair: distill (direct, anstest, repair)", 4, (4, 8), "ansrepair/distill"),  # R_d shared
        # MD 4 (+4 asked again), ARE 4 (+2 tests per row), bootstrapping 2 (+2 tests each)
        Step("amr: distill (direct, decompose, embed, waves)", 4, (4 + 4 + 2, 8 + 12 + 6), "amr/distill"),
        Step("amr-no-are: distill (direct, decompose, waves)", 4, (8, 12), "amr-no-are/distill"),  # grows nothing
    ]
    # 4 rows on 2 workers: the global batch derived from them, 2 rows a step, 6 steps = the 3 epochs
    assert [s.name for s in steps[4:8]] == [
        f"{m}: train (6 steps x 2: 3 of 3 epochs)" for m in ("direct", "ansrepair", "amr", "amr-no-are")
    ]
    assert steps[8] == Step("direct: eval humaneval", 10, (10, 10), "direct/eval/humaneval")
    assert len(steps) == 8 + 4 * 2 + 1 and steps[-1].name == "report"


def test_built_instructions_are_planned_too(tmp_path):
    config = _config(tmp_path, instructions={"self_instruct": {"count": 100}, "evolve": {"rounds": 3}})
    config.distill.input.limit = None
    steps = plan(config)
    assert [(s.name, s.rows, s.calls) for s in steps[:3]] == [
        ("instructions: seeds (MBPP train, decontaminated)", 0, (0, 0)),
        ("instructions: self-instruct", 100, (150, 150)),  # oversample 1.5
        ("instructions: evolution, 3 rounds", 300, (100, 300)),
    ]
    assert steps[3] == Step("direct: distill (direct)", 400, (400, 400), "direct/distill")


def test_dry_run_starts_nothing_and_writes_nothing(tmp_path, monkeypatch):
    import yaml

    import jobs.run

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run started something")

    for name in ("init_ray", "open_teacher", "evaluate"):
        monkeypatch.setattr(jobs.run, name, refuse)

    config = _config(tmp_path)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_unset=True)))
    result = CliRunner().invoke(app, ["run", "--config", str(tmp_path / "run.yaml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "amr: distill" in result.output and "teacher calls: " in result.output
    assert not (tmp_path / "run").exists()


def test_the_papers_table_1_recipe_plans_three_levels_of_four_methods():
    from amr.config import load_config

    config = load_config(RunConfig, "jobs/configs/paper_table1.yaml")
    steps = plan(config)
    distills = [s for s in steps if ": distill" in s.name]
    assert [s.name.split(":")[0] for s in distills] == [
        f"level{level}/{m}" for level in (1, 2, 3) for m in ("direct", "cot", "ansrepair", "amr")
    ]
    assert all(s.rows == 10_000 for s in distills) and distills[-1].output == "level3/amr/distill"
    assert sum(": train" in s.name for s in steps) == 12 and sum(": eval" in s.name for s in steps) == 12 * 2 + 2
    assert config.distill.embedding.model == "Alibaba-NLP/gte-large-en-v1.5" and config.instructions.decontam.judge
    # 10,000 instructions a level: the paper's 3 epochs in 188 of its 200 steps, the global batch derived (160)
    assert "level1/amr: train (188 steps x 160: 3 of 3 epochs)" in [s.name for s in steps]


def test_the_papers_table_3_reuses_table_1s_instructions_and_amr_runs():
    from amr.config import load_config

    table1 = {s.output: s for s in plan(load_config(RunConfig, "jobs/configs/paper_table1.yaml"))}
    ablations = load_config(RunConfig, "jobs/configs/paper_table3.yaml")
    assert ablations.methods == ["amr", "amr-no-md", "amr-no-are"] and ablations.levels == [1, 2, 3]
    steps = plan(ablations)
    reused = [s for s in steps if s.output.startswith("/mnt/shared/runs/paper-table1/")]
    # the instructions and every amr step (distill, train, eval per level), read where Table 1 writes them
    assert reused[0] == Step("instructions: reused", 0, (0, 0), "/mnt/shared/runs/paper-table1/instructions")
    assert [s.output.removeprefix("/mnt/shared/runs/paper-table1/") for s in reused[1:]] == [
        *(f"level{level}/amr/distill" for level in (1, 2, 3)),
        *(f"level{level}/amr/student" for level in (1, 2, 3)),
        *(f"level{level}/amr/eval/{d}" for level in (1, 2, 3) for d in ("humaneval", "mbpp")),
    ]
    assert all(s.calls == (0, 0) and s.name.endswith("(reused)") for s in reused[1:])
    assert all(s.output.removeprefix("/mnt/shared/runs/paper-table1/") in table1 for s in reused[1:])
    own = [s for s in steps if ": distill" in s.name and s not in reused]
    assert [s.name.split(":")[0] for s in own] == [
        f"level{n}/{m}" for n in (1, 2, 3) for m in ("amr-no-md", "amr-no-are")
    ]
    # R_d comes from Table 1's amr run: the ablations' calls leave it out (MD, ARE, growth tests, the seed)
    assert own[0].calls == (1_000 + 10_000, 1_000 * 3 + 10_000 * 3)


def test_a_run_that_reuses_another_stops_before_any_work_until_that_one_is_done(tmp_path):
    from amr.config import ConfigError, load_config
    from jobs.run import run

    table1 = load_config(RunConfig, "jobs/configs/paper_table1.yaml", [f"output={tmp_path / 't1'}"])
    config = load_config(RunConfig, "jobs/configs/paper_table3.yaml", [f"output={tmp_path / 't3'}"])
    config = config.model_copy(update={"reuse": table1})
    with pytest.raises(
        ConfigError, match=rf"reuse: {tmp_path / 't1'}: .* not done there: 16 files missing .*: run it first"
    ):
        run(config)
    assert not (tmp_path / "t3").exists()
    with pytest.raises(ConfigError, match=r"reuse: .*: its distill differ from this run's"):
        load_config(RunConfig, "jobs/configs/paper_table3.yaml", ["distill.wave_size=7"])


def test_a_matched_baseline_runs_after_the_method_it_is_matched_to(tmp_path):
    config = _config(tmp_path, methods=["direct-checked", "amr-checked"])
    distills = [s for s in plan(config) if ": distill" in s.name]
    assert [s.name for s in distills] == [
        "amr-checked: distill (direct, decompose, embed, waves, anstest, check, resample)",
        "direct-checked: distill (direct, anstest, check, resample; resampling to amr-checked's teacher tokens, "
        "at most 32 rounds)",
    ]
    assert distills[1].calls == (4, 4 + 4 * 32)  # R_d shared; the asserts, up to 32 rounds of 4 rows


def test_levels_are_rounds_of_the_instructions_the_run_builds(tmp_path):
    from amr.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"levels: \[1\]: .*set `instructions`"):
        load_config(RunConfig, None, ["levels=[1]"])
    with pytest.raises(ConfigError, match=r"levels: \[4\]: .*\(1 to 3\)"):
        load_config(RunConfig, None, ["levels=[4]", "instructions={}"])


def test_each_level_reads_its_evolution_round_and_writes_under_its_folder(tmp_path):
    from amr.config import load_config
    from amr.pipelines.plan import groups
    from jobs.run import _reading, _student

    config = load_config(RunConfig, None, ["levels=[1, 3]", "instructions={}", f"output={tmp_path}"])
    built = str(tmp_path / "instructions" / "all.jsonl")
    found = groups(config, str(tmp_path))
    assert [(g.name, g.out, g.source(built)) for g in found] == [
        ("level1", str(tmp_path / "level1"), str(tmp_path / "instructions" / "evolved.round1.jsonl")),
        ("level3", str(tmp_path / "level3"), str(tmp_path / "instructions" / "evolved.round3.jsonl")),
    ]
    assert _reading(config, found[1].source(built)).distill.input.source.endswith("evolved.round3.jsonl")
    assert _student(config, "amr", found[0]) == str(tmp_path / "level1" / "amr" / "student")
    shared = config.model_copy(update={"students": "/shared/students"})
    assert _student(shared, "amr", found[1]) == "/shared/students/level3/amr"
    assert [(g.name, g.source(built)) for g in groups(load_config(RunConfig, None, []), "out")] == [("", built)]


def test_amr_run_gives_a_matched_baseline_the_teacher_tokens_of_its_method(tmp_path, monkeypatch):
    import jobs.run
    from amr import storage
    from amr.pipelines.plan import groups

    config = _config(tmp_path, methods=["direct-checked", "amr-checked"])
    [group] = groups(config, str(tmp_path / "run"))
    stages = {"direct": {"rows": 4, "input_tokens": 10, "output_tokens": 20}, "grow": {"test_input_tokens": 3}}
    storage.write_json(str(tmp_path / "run" / "amr-checked" / "distill" / "manifest.json"), {"stages": stages})
    made = {}
    monkeypatch.setattr(jobs.run.distill, "run", lambda cfg: made.setdefault(cfg.method, cfg))
    monkeypatch.setattr(jobs.run, "print_distill", lambda *args, **kwargs: None)
    jobs.run._distill(config, "direct-checked", group)
    assert made["direct-checked"].check.token_budget == 10 + 20 + 3  # amr-checked's tokens, every stage
    jobs.run._distill(config, "amr-checked", group)
    assert made["amr-checked"].check.token_budget is None and config.distill.check.token_budget is None


def test_dry_run_gives_the_training_schedule_the_students_size_and_where_weights_are_read(tiny_model):
    """Issues 32 and 35: the paper's 3 epochs in its 200 steps for Table 1's 10,000 rows a level, the bytes of each
    student and of the 12, where the weights are read. (A hub model pulled is counted from its config as the tiny
    model here; offline, a hub id's size is unknown and said so.)"""
    from transformers import AutoModelForCausalLM

    sets = ["train.model=" + tiny_model, "distill.teacher.vllm.stage_dir=/local/models", "eval.vllm.stage_dir=/local/m"]
    args = ["run", "--config", "jobs/configs/paper_table1.yaml", "--dry-run", *(a for s in sets for a in ("--set", s))]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert (
        "train, each of the 12 students: 10000 rows, global batch 160 (derived from the data) = 8 workers x micro "
        "batch 2 x 10 accumulation: 62.50 steps per epoch, 188 steps = 3.00 epochs" in out
    )
    count = AutoModelForCausalLM.from_pretrained(tiny_model).num_parameters()
    each = 2 * count / 1e9  # saved in bfloat16 (train_gpu.yaml: bf16 on GPU)
    assert (
        f"{count / 1e9:.2f}B parameters (its config): {each:.2f} GB each in bfloat16, {12 * each:.1f} GB for the 12 under /mnt/shared/runs/paper-table1"
        in out
    )
    assert f"student weights: read once, by training rank 0, from {tiny_model}" in out
    assert "teacher weights: Qwen/Qwen2.5-Coder-32B-Instruct, copied once per node to /local/models (node-local)" in out
    assert "evaluated models' weights: copied once per node to /local/m (node-local)" in out
    offline = CliRunner().invoke(app, ["run", "--config", "jobs/configs/run_gpu_cluster.yaml", "--dry-run"])
    assert "students: deepseek-ai/deepseek-coder-6.7b-base: size unknown here" in " ".join(offline.output.split())
