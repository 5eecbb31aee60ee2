from pathlib import Path

import pytest

from amr.config import ConfigError, DistillConfig, TeacherJobConfig, load_config

CONFIGS = sorted(
    p
    for p in Path(__file__).parents[1].joinpath("jobs", "configs").glob("*.yaml")
    if not p.name.startswith(("train_", "run_", "paper_"))
)  # TrainConfig and RunConfig files (the paper's recipes among them): their own tests (test_plan for paper_*)


def test_defaults_follow_the_paper():
    cfg = load_config(DistillConfig, None)
    assert cfg.teacher.sampling.temperature == 0.0
    assert cfg.teacher.sampling.max_tokens == 3000
    assert cfg.teacher.vllm.enable_prefix_caching


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_configs_validate(path):
    assert load_config(DistillConfig, path).run_dir


def test_wrong_type_names_file_line_and_key(write):
    path = write("bad.yaml", "method: direct\nteacher:\n  sampling:\n    temperature: hot\n")
    with pytest.raises(ConfigError) as err:
        load_config(DistillConfig, path)
    assert f"{path}:4: teacher.sampling.temperature:" in str(err.value)


def test_unknown_key_is_an_error_not_ignored(write):
    path = write("typo.yaml", "teacher:\n  vllm:\n    tensor_paralel_size: 2\n")
    with pytest.raises(ConfigError, match=r"typo.yaml:3: teacher.vllm.tensor_paralel_size: unknown key"):
        load_config(DistillConfig, path)


def test_invalid_value_and_literal(write):
    path = write("v.yaml", "teacher:\n  backend: tgi\n  sampling:\n    max_tokens: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(DistillConfig, path)
    assert "v.yaml:2: teacher.backend" in str(err.value)
    assert "v.yaml:4: teacher.sampling.max_tokens" in str(err.value)


def test_overrides_apply_and_their_errors_name_the_flag(write):
    path = write("ok.yaml", "teacher:\n  model: smollm2-135m-instruct\n")
    cfg = load_config(DistillConfig, path, ["teacher.sampling.max_tokens=64", "input.limit=3"])
    assert (cfg.teacher.model, cfg.teacher.sampling.max_tokens, cfg.input.limit) == ("smollm2-135m-instruct", 64, 3)
    with pytest.raises(ConfigError, match=r"--set: input.limit"):
        load_config(DistillConfig, path, ["input.limit=-1"])
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        load_config(DistillConfig, path, ["input.limit"])


def test_yaml_syntax_error_and_missing_file(write, tmp_path):
    path = write("broken.yaml", "teacher:\n  model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+: invalid YAML"):
        load_config(TeacherJobConfig, path)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(TeacherJobConfig, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(TeacherJobConfig, write("list.yaml", "- a\n- b\n"))


def test_includes_work_for_every_section_at_any_depth(write, tmp_path):
    from amr.config import RunConfig

    (tmp_path / "parts").mkdir()
    write("parts/teacher.yaml", "model: smollm2-135m-instruct\nsampling:\n  max_tokens: 77\n")
    write("parts/distill.yaml", "method: direct\nrun_dir: elsewhere\nwave_size: 3\nteacher: teacher.yaml\n")
    write("parts/instructions.yaml", "self_instruct:\n  count: 5\n")
    run = write(
        "run.yaml",
        "distill:\n  include: parts/distill.yaml\n  input:\n    limit: 2\ninstructions: parts/instructions.yaml\n",
    )
    cfg = load_config(RunConfig, run)
    # an optional section (instructions) and a section of an included file (distill's teacher, relative to it)
    assert cfg.instructions is not None and cfg.instructions.self_instruct.count == 5
    assert (cfg.distill.teacher.model, cfg.distill.teacher.sampling.max_tokens) == ("smollm2-135m-instruct", 77)
    assert (cfg.distill.wave_size, cfg.distill.input.limit) == (3, 2)
    # the included distill job's own method and run directory are the run's to set, per method
    assert "method" not in cfg.distill.model_fields_set and "run_dir" not in cfg.distill.model_fields_set
    write("parts/bad_teacher.yaml", "sampling:\n  max_tokens: many\n")
    write("parts/bad.yaml", "teacher: bad_teacher.yaml\n")
    with pytest.raises(ConfigError, match=r"bad_teacher.yaml:2: distill.teacher.sampling.max_tokens"):
        load_config(RunConfig, write("run2.yaml", "distill: parts/bad.yaml\n"))


def test_the_gpu_run_includes_the_gpu_distill_config():
    from amr.config import RunConfig

    root = Path(__file__).parents[1] / "jobs" / "configs"
    run, distill = (
        load_config(RunConfig, root / "run_gpu_cluster.yaml"),
        load_config(DistillConfig, root / "gpu_cluster.yaml"),
    )
    assert run.distill.teacher == distill.teacher and run.distill.wave_size == distill.wave_size
    assert "include: gpu_cluster.yaml" in (root / "run_gpu_cluster.yaml").read_text()


def test_a_renamed_key_names_its_new_name(write):
    path = write("old.yaml", "modules:\n  seed_limit: 3\n")
    with pytest.raises(
        ConfigError, match=r"old.yaml:2: modules.seed_limit: unknown key: renamed to modules.bootstrap_limit"
    ):
        load_config(DistillConfig, path)
