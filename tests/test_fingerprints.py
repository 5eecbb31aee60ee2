"""What each stage of a run was made from (amr/pipelines/fingerprints.py), on run directories made here: which
settings each stage depends on, a changed setting stops the rerun at the first stage made from it, --restart-from
removes that stage and every later one (the run's own module table with the waves). End to end:
tests/test_distill.py."""

from __future__ import annotations

import json
from hashlib import sha256

import pytest

from amr.config import ConfigError, DistillConfig
from amr.methods import method
from amr.pipelines import fingerprints
from amr.serving import engine_dtype
from amr.storage import RunDir

pytestmark = pytest.mark.timeout(60)
AMR = method("amr")


def made(tmp_path, name: str = "run", method_name: str = "amr", **changes) -> tuple[DistillConfig, RunDir]:
    """A config and a run directory in which every stage of the method is finished (a file each, and its record)."""
    cfg = DistillConfig(run_dir=str(tmp_path / name), method=method_name).model_copy(update=changes)
    run_dir, chosen = RunDir(cfg.run_dir), method(method_name)
    for stage in fingerprints.stages(chosen):
        for output in fingerprints.OUTPUTS[stage]:
            run_dir.write_text(output if "." in output else f"{output}/00000.json", stage)
        fingerprints.record(run_dir, cfg, chosen, stage)
    run_dir.write_text("modules/modules.lance", "the run's own table")
    return cfg, run_dir


def test_each_stage_depends_on_its_own_settings_only():
    cfg = DistillConfig(method="amr-checked")
    own = fingerprints.inputs(cfg, method("amr-checked"))
    assert list(own) == ["input", "direct", "decompose", "embed", "waves", "anstest", "check", "resample", "dataset"]
    assert set(own["embed"]) == {"embedding.model", "embedding.dtype", "method"}
    assert "modules.novelty_threshold" in own["waves"] and "wave_size" in own["waves"]
    assert "modules.lease_ttl_s" not in own["waves"] and "modules.index_min_rows" not in own["waves"]
    assert own["check"]["format"] == 2 and "format" not in own["anstest"]
    assert own["resample"]["check.resamples"] == cfg.check.resamples
    assert "sandbox.timeout_s" in own["anstest"] and "sandbox.timeout_s" not in own["direct"]
    assert "teacher.sampling" in own["decompose"] and "teacher.sampling" not in own["embed"]
    assert own["dataset"] == {
        "method": "amr-checked",
        **{k: own["check"][k] for k in ("sandbox.timeout_s", "sandbox.memory_mb")},
    }
    assert own["direct"]["teacher.openai.base_url"] is None  # a vllm teacher: the URL is no setting of it
    api = cfg.model_copy(deep=True)
    api.teacher.backend, api.teacher.openai.base_url = "openai", "http://127.0.0.1:9/v1"
    assert fingerprints.inputs(api, method("direct"))["direct"]["teacher.openai.base_url"] == "http://127.0.0.1:9/v1"
    assert set(own["waves"]) >= {"prompt response_evolution", "prompt testgen", "prompt bootstrap"}


def test_the_settings_of_each_stage_by_name(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "1", "instruction": "x"}\n')
    cfg = DistillConfig(method="amr-checked", input={"source": str(source), "limit": 7})
    api = cfg.model_copy(deep=True)
    api.teacher.backend, api.teacher.openai.base_url = "openai", "http://127.0.0.1:9/v1"
    teacher, sandbox = (
        cfg.teacher,
        {"sandbox.timeout_s": cfg.sandbox.timeout_s, "sandbox.memory_mb": cfg.sandbox.memory_mb},
    )
    answers = {
        "teacher.model": teacher.model,
        "teacher.backend": "vllm",
        "teacher.sampling": teacher.sampling.model_dump(mode="json"),
        "teacher.vllm.dtype": engine_dtype(teacher.vllm),
        "teacher.vllm.max_model_len": teacher.vllm.max_model_len,
        "teacher.openai.base_url": None,
    }
    sampled = lambda *names: {f"teacher.stages.{n}": getattr(teacher.stages, n).model_dump(mode="json") for n in names}  # noqa: E731
    prompts = lambda *names: {f"prompt {n}": fingerprints._prompt(n) for n in names}  # noqa: E731
    modules = {f"modules.{k}": v for k, v in cfg.modules.model_dump(mode="json").items()}
    del modules["modules.index_min_rows"], modules["modules.upkeep_every"], modules["modules.lease_ttl_s"]
    embedding = {
        "embedding.model": cfg.embedding.model,
        "embedding.dtype": cfg.embedding.actor_dtype,
        "method": "amr-checked",
    }
    checks = {f"check.{k}": v for k, v in cfg.check.model_dump(mode="json").items()}
    assert fingerprints.inputs(cfg, method("amr-checked")) == {
        "input": {"input.source": fingerprints._source(str(source)), "input.limit": 7},
        "direct": {**prompts("direct"), **answers, **sampled("direct")},
        "decompose": {**prompts("decompose"), **answers, **sampled("decompose")},
        "embed": embedding,
        "waves": {
            **prompts("response_evolution", "testgen", "bootstrap"),
            **answers,
            **sampled("response_evolution", "tests", "bootstrap"),
            **sandbox,
            **embedding,
            **modules,
            "wave_size": cfg.wave_size,
            "format": 2,
        },
        "anstest": {**prompts("repair"), **answers, **sampled("tests"), **sandbox},
        "check": {**prompts("repair"), "format": 2, **answers, **sandbox},
        "resample": {**prompts("direct"), **answers, **sampled("direct"), **sandbox, **checks},
        "dataset": {"method": "amr-checked", **sandbox},
    }
    baselines = {**fingerprints.inputs(cfg, method("cot")), **fingerprints.inputs(api, method("ansrepair"))}
    assert baselines["cot"] == {**prompts("cot"), **answers, **sampled("cot")}
    api_answers = {
        **answers,
        "teacher.backend": "openai",
        "teacher.vllm.dtype": None,
        "teacher.openai.base_url": "http://127.0.0.1:9/v1",
    }
    assert baselines["repair"] == {**prompts("repair"), **api_answers, **sampled("repair")}


def test_a_changed_key_is_named_also_where_one_side_lacks_it(tmp_path):
    cfg, run_dir = made(tmp_path)
    recorded = json.loads(run_dir.read_text(fingerprints.FILE))
    recorded["embed"]["fingerprint"] = "0" * 16
    recorded["embed"]["inputs"] = {  # "method" is new since
        "embedding.model": cfg.embedding.model,
        "embedding.dtype": cfg.embedding.actor_dtype,
        "retired": 1,
    }
    run_dir.write_json(fingerprints.FILE, recorded)
    with pytest.raises(ConfigError, match=r"its embed stage .*\(method: None -> 'amr'; retired: 1 -> None\)"):
        fingerprints.check(run_dir, cfg, AMR)


def test_a_fingerprint_chains_the_stages_before_it():
    cfg = DistillConfig()
    before = fingerprints.current(cfg, AMR)
    changed = cfg.model_copy(deep=True)
    changed.embedding.model = "other-embedder"
    after = fingerprints.current(changed, AMR)
    same = [s for s in before if before[s]["fingerprint"] == after[s]["fingerprint"]]
    assert same == ["input", "direct", "decompose"]  # embed and everything after it depend on the embedder
    assert len(before["waves"]["fingerprint"]) == 16


def test_a_rerun_with_a_changed_setting_stops_at_the_first_stage_made_from_it(tmp_path):
    cfg, run_dir = made(tmp_path)
    fingerprints.check(run_dir, cfg, AMR)  # the same settings
    changed = cfg.model_copy(deep=True)
    changed.modules.top_k = 3
    with pytest.raises(
        ConfigError,
        match=r"run: its waves stage was made with other settings \(modules.top_k: 1 -> 3\)\. Rerun with "
        r"--restart-from waves to recompute it",
    ):
        fingerprints.check(run_dir, changed, AMR)
    changed.teacher.sampling.max_tokens = 99
    with pytest.raises(ConfigError, match=r"its direct stage .*\(teacher.sampling: .*'max_tokens': 99"):
        fingerprints.check(run_dir, changed, AMR)


def test_a_record_made_after_other_stages_names_the_stage_before_it(tmp_path):
    cfg, run_dir = made(tmp_path)
    recorded = json.loads(run_dir.read_text(fingerprints.FILE))
    recorded["input"]["fingerprint"] = "0" * 16  # its own inputs the same, the chain before it not
    run_dir.write_json(fingerprints.FILE, recorded)
    with pytest.raises(ConfigError, match=r"its input stage was made with other settings \(a stage before it\)"):
        fingerprints.check(run_dir, cfg, AMR)


def test_a_changed_prompt_is_named_without_its_text(tmp_path, monkeypatch):
    cfg, run_dir = made(tmp_path)
    digest = fingerprints._prompt
    monkeypatch.setattr(fingerprints, "_prompt", lambda name: "changed" if name == "decompose" else digest(name))
    with pytest.raises(
        ConfigError, match=r"its decompose stage was made with other settings \(prompt decompose changed\)"
    ):
        fingerprints.check(run_dir, cfg, AMR)


def test_restart_from_removes_that_stage_and_every_later_one(tmp_path):
    cfg, run_dir = made(tmp_path)
    removed = fingerprints.restart(run_dir, cfg, AMR, "embed")
    assert removed == [
        "embed.parquet",
        "bootstrap.parquet",
        "waves",
        "growth",
        "modules",
        *fingerprints.OUTPUTS["dataset"],
    ]
    assert list(json.loads(run_dir.read_text(fingerprints.FILE))) == ["input", "direct", "decompose"]
    assert run_dir.exists("decompose.parquet") and not run_dir.exists("modules")
    assert fingerprints.restart(run_dir, cfg, AMR, "embed") == []  # nothing left to remove
    cfg, run_dir = made(tmp_path, "kept")
    assert fingerprints.restart(run_dir, cfg, AMR, "dataset") == list(fingerprints.OUTPUTS["dataset"])
    assert run_dir.exists("modules") and run_dir.exists("waves")  # after the waves: the table stays
    with pytest.raises(ConfigError, match=r"--restart-from check: not a stage of method amr: one of input, direct, "):
        fingerprints.restart(run_dir, cfg, AMR, "check")


def test_restart_from_the_waves_or_before_refuses_a_shared_table(tmp_path):
    cfg, run_dir = made(tmp_path)
    shared = cfg.model_copy(update={"modules": cfg.modules.model_copy(update={"uri": "s3://b/table"})})
    for stage in ("input", "waves"):
        with pytest.raises(ConfigError, match=rf"--restart-from {stage}: .*shared module table s3://b/table; "):
            fingerprints.restart(run_dir, shared, AMR, stage)
    assert run_dir.exists("waves") and run_dir.exists("modules")  # nothing removed
    assert fingerprints.restart(run_dir, shared, AMR, "dataset") == list(fingerprints.OUTPUTS["dataset"])


def test_copy_carries_a_stages_record_and_only_that(tmp_path):
    cfg, source = made(tmp_path, "direct", method_name="direct")
    target = RunDir(str(tmp_path / "amr"))
    fingerprints.copy(target, source, "decompose")  # not a stage of the source: nothing
    assert not target.exists(fingerprints.FILE)
    fingerprints.copy(target, source, "direct")
    fingerprints.copy(target, source, "input")
    recorded = json.loads(target.read_text(fingerprints.FILE))
    assert (
        list(recorded) == ["direct", "input"]
        and recorded["direct"] == json.loads(source.read_text(fingerprints.FILE))["direct"]
    )


def test_a_source_file_is_known_by_its_content_and_a_builtin_by_its_name(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"id": "1", "instruction": "x"}\n')
    b.write_text('{"id": "1", "instruction": "x"}\n')
    assert (
        fingerprints._source(str(a))
        == fingerprints._source(str(b))
        == f"sha256:{sha256(a.read_bytes()).hexdigest()[:16]}"
    )
    b.write_text('{"id": "1", "instruction": "y"}\n')
    assert fingerprints._source(str(a)) != fingerprints._source(str(b))
    assert fingerprints._source("mbpp-train") == "mbpp-train"
    assert fingerprints._source(str(tmp_path / "missing.jsonl")) == str(tmp_path / "missing.jsonl")
    assert fingerprints._prompt("direct") != fingerprints._prompt("cot") and len(fingerprints._prompt("cot")) == 16
