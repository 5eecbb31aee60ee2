"""`amr compare` / `amr run` end to end on a real Ray: a scripted teacher over HTTP distils with two methods,
a tiny student is trained on each dataset by Ray Train, EvalPlus scores the students and the untrained one,
and the report holds the paper's table; a rerun does nothing again. The scripted teacher's answers depend on its
prompts (tests/test_distill.py's script): the accuracies follow from what the method retrieves and adapts."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from typer.testing import CliRunner

from amr.config import ConfigError, RunConfig, load_config
from amr.data import iter_instructions
from amr.decontam import eval_overlaps
from amr.pipelines import distill
from amr.prompts import direct, response_evolution
from jobs.cli import app
from jobs.run import run
from tests.conftest import logged_engine_starts
from tests.support.scripted_teacher import ScriptedTeacher
from tests.test_distill import config as distill_config
from tests.test_distill import script

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def scripted():
    with ScriptedTeacher(script) as server:
        yield server


def run_config(tmp_path, scripted, tiny_model) -> dict:
    distill = distill_config(tmp_path / "instructions", scripted).model_dump(mode="json", exclude={"run_dir", "method"})
    return {
        "output": str(tmp_path / "out"),
        "distill": distill,
        "train": {
            "model": tiny_model,
            "seq_len": 128,
            "max_steps": 2,
            "global_batch_size": 2,
            "micro_batch_size": 1,
            "save_steps": 2,
            "scaling": {"workers": 1},
            "gradient_checkpointing": False,
        },
        "eval": {
            "datasets": ["humaneval", "mbpp"],
            "limit": 2,
            "base": False,
            "sampling": {"max_tokens": 16},
            "vllm": {"max_model_len": 512, "cpu_reserved_cores": 0},
            "scoring": {"min_time_limit": 10.0, "gt_time_limit_factor": 50.0},
        },
    }


def replica_lives() -> dict[str, tuple[int, int]]:
    """The Ray session's Serve replica actors, alive or dead, by id: when each started and ended (ms; now while it
    lives), from Ray's actor table."""
    import time

    import ray

    now, actors = time.time() * 1000, ray._private.state.actors().values()
    return {
        a["ActorID"]: (a["StartTime"], a["EndTime"] or now) for a in actors if a["Name"].startswith("SERVE_REPLICA::")
    }


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compare_distills_trains_evaluates_and_reports(ray_local, shared_embedders, scripted, tiny_model, tmp_path):
    """The scripted teacher's direct answers call the helpers of add_three and count_evens without defining them;
    its ARE answers define a helper only where the ARE prompt carries the helper's code, which only retrieval from
    the module table puts there (tests/test_distill.py's script). So AMR-Evol's 3 of 4 against direct's 2 of 4
    (count_evens's instruction test is wrong on purpose) holds only if wave 1's answers grow the table, wave 2
    retrieves add and is_even from it, and ARE carries their code into the answers; the students, evaluations and
    the report's table follow from each method's dataset."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run_config(tmp_path, scripted, tiny_model)))
    engines, replicas = logged_engine_starts(), replica_lives()
    result = runner.invoke(app, ["compare", "--methods", "direct,amr", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert logged_engine_starts() - engines == 2  # one engine per student for both datasets (the teacher is an API)
    started, ended = zip(*[life for actor, life in replica_lives().items() if actor not in replicas])
    assert len(started) == 2 and max(started) < min(ended)  # the students' engines started together (room for both)
    out = tmp_path / "out"
    assert f"report: {out / 'report' / 'report.html'}" in result.output

    # amr reused direct's R_d: 4 direct answers in all, then 4 decompositions and 4 evolutions (+ growth tests): every
    # row is evolved, the first wave's too (it retrieves nothing from the empty table)
    systems = [messages[0]["content"] for messages in scripted.requests]
    assert sum(s == direct.SYSTEM for s in systems) == 4 and sum(s == response_evolution.SYSTEM for s in systems) == 4
    amr = json.loads((out / "amr" / "distill" / "manifest.json").read_text())
    assert amr["stages"]["direct"]["resumed"] is True and amr["dataset"]["response_accuracy"] == 0.75
    for method in ("direct", "amr"):
        train = json.loads((out / method / "student" / "train.json").read_text())
        assert train["steps"] == 2 and train["dataset"] == str(out / method / "distill" / "dataset.parquet")
    assert not (out / "base").exists()  # eval.base: false

    report = (out / "report" / "report.md").read_text()
    table = report.split("## Student pass@1 (%)")[1].split("##")[0]
    labels = [
        line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "Method" not in line
    ]
    assert labels == ["direct", "AMR-Evol"]
    amr_row = next(line for line in table.splitlines() if line.startswith("| AMR-Evol |"))
    assert len(re.findall(r"\d \([+-]\d+\.\d\)", amr_row)) == 4  # HumanEval(+) and MBPP(+) against direct
    assert "HumanEval(+) v0.1.10: 2 tasks (--limit)" in report
    assert (  # direct's answers lack the helpers that retrieval gives ARE's
        "| direct | scripted | 4 | 4 | 50.0% of 4 |" in report
        and "| AMR-Evol | scripted | 4 | 4 | 75.0% of 4 | 0% (0 of 4) |" in report
        and "## Stages: AMR-Evol" in report
    )
    assert report.index("## Did AMR-Evol help? Against direct") < report.index("## Student pass@1")  # it leads
    assert "AMR-Evol answered 1 more of 4 instructions correctly than direct (3 vs 2; p=1.00)" in result.output
    html = (out / "report" / "report.html").read_text()
    assert "<table>" in html and 'src="pass_at_1.png"' in html and 'src="module_growth.png"' in html
    for plot in ("pass_at_1.png", "module_growth.png"):
        assert (out / "report" / plot).read_bytes().startswith(PNG)

    calls = len(scripted.requests)
    again = runner.invoke(app, ["compare", "--methods", "direct,amr", "--config", str(path)])
    assert again.exit_code == 0, again.output
    assert again.output.count("done already") == 8 and len(scripted.requests) == calls  # 2 x (distill, train, 2 evals)
    assert logged_engine_starts() - engines == 2  # nothing left to serve: no engine started


@pytest.mark.timeout(300)
def test_a_run_refuses_to_share_the_r_d_of_another_teacher(ray_local, scripted, tiny_model, tmp_path):
    out = tmp_path / "out"
    made = distill_config(tmp_path / "instructions", scripted, method="direct", run_dir=str(out / "direct" / "distill"))
    distill.run(made)  # direct's R_d, by the teacher "scripted"
    config = RunConfig.model_validate(
        {**run_config(tmp_path, scripted, tiny_model), "methods": ["amr"], "allow_eval_overlap": True}
    )
    config.distill.teacher.model = "another-teacher"  # amr would share direct's R_d: not another teacher's
    asked = len(scripted.requests)
    with pytest.raises(
        ConfigError,
        match=r"amr/distill: its direct stage was made with other settings \(teacher.model: 'scripted' -> "
        r"'another-teacher'\)",
    ):
        run(config)
    assert len(scripted.requests) == asked and not (out / "amr" / "distill" / "manifest.json").exists()


@pytest.mark.timeout(60)
def test_run_config_owns_its_paths_and_includes_sections(write):
    cfg = load_config(RunConfig, "jobs/configs/run_local_cpu.yaml")
    assert (cfg.methods, cfg.distill.teacher.model, cfg.distill.input.limit) == (
        ["direct", "amr-checked"],
        "qwen2.5-coder-0.5b-instruct",
        20,
    )  # make run: the best method against direct on the same instructions, with a teacher that can code
    assert (
        cfg.distill.teacher.sampling.max_tokens == 384 and cfg.distill.teacher.stages.decompose.max_tokens == 384
    )  # local_cpu.yaml, read in
    assert cfg.train.max_steps == 3 and cfg.train.epochs == 3 and cfg.eval.limit == 20  # train_local_cpu.yaml, changed
    bad = write("run.yaml", "distill:\n  run_dir: x\n")
    result = runner.invoke(app, ["run", "--config", str(bad)])
    assert result.exit_code == 2 and "distill.run_dir: set by the run for each method" in result.output
    missing = write("missing.yaml", "methods: [amr]\ntrain: nowhere.yaml\n")
    result = runner.invoke(app, ["run", "--config", str(missing)])
    assert result.exit_code == 2 and f"{missing}:2: train: no such config file" in result.output
    result = runner.invoke(app, ["compare", "--methods", "direct,amr2", "--config", "jobs/configs/run_local_cpu.yaml"])
    assert result.exit_code == 2 and "methods.1: Input should be" in result.output
    result = runner.invoke(app, ["run", "--config", "jobs/configs/run_local_cpu.yaml", "--output", "s3://bucket/run"])
    assert result.exit_code == 2 and "students: required when output is an object-store URI" in result.output
    result = runner.invoke(
        app,
        [
            "run",
            "--config",
            "jobs/configs/run_local_cpu.yaml",
            "--output",
            "s3://bucket/run",
            "--set",
            "students=s3://bucket/students",
        ],
    )
    assert (
        result.exit_code == 2 and "students: s3://bucket/students: a local or shared-filesystem path" in result.output
    )


@pytest.mark.timeout(300)
def test_run_on_an_object_store_keeps_the_students_on_a_local_disk(
    ray_local, scripted, tiny_model, s3_server, tmp_path
):
    # the distillation runs into the bucket; training and evaluation are done already (the student on the local
    # disk, its scores in the bucket: what a first run left), so the run skips them, then links them by
    # provenance and writes the report into the bucket
    from amr import storage

    out, students = f"s3://{s3_server['bucket']}/run-{tmp_path.name}", tmp_path / "students"
    config = {**run_config(tmp_path, scripted, tiny_model), "output": f"{out}/", "students": str(students)}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    storage.write_json(
        f"{students}/direct/train.json",
        {
            "model": tiny_model,
            "examples": 4,
            "steps": 2,
            "final_loss": 1.0,
            "tokens_per_s": 1.0,
            "wall_time_s": 1.0,
            "dataset": f"{out}/direct/distill/dataset.parquet",
        },
    )
    for dataset in ("humaneval", "mbpp"):
        storage.write_json(
            f"{out}/direct/eval/{dataset}/scores.json",
            {
                "model": f"{students}/direct/model",
                "dataset": dataset,
                "version": "v0",
                "n_tasks": 2,
                "limit": 2,
                "base_pass@1": 0.5,
                "plus_pass@1": 0.25,
            },
        )
    result = runner.invoke(app, ["run", "--config", str(path), "--set", "methods=[direct]"])
    assert result.exit_code == 0, result.output
    assert result.output.count("done already") == 3  # train and two evaluations
    assert f"report: {out}/report/report.html" in result.output
    assert (
        storage.read_json(f"{out}/direct/distill/manifest.json")["dataset"]["path"]
        == f"{out}/direct/distill/dataset.parquet"
    )
    report = storage.read_text(f"{out}/report/report.md")
    assert "| direct | 50.0 | 25.0 | 50.0 | 25.0 |" in report  # scores linked to the distillation by train.json
    assert "| direct | scripted | 4 | 4 | 50.0% of 4 |" in report and "## Student training" in report
    calls = len(scripted.requests)
    again = runner.invoke(app, ["run", "--config", str(path), "--set", "methods=[direct]"])
    assert again.exit_code == 0 and again.output.count("done already") == 4 and len(scripted.requests) == calls


@pytest.mark.timeout(120)
def test_a_run_refuses_to_distil_tasks_of_its_evaluation_datasets(tmp_path):
    source = tmp_path / "mixed.jsonl"
    rows = [
        {"id": "mbpp/602", "instruction": "Write a python function to find the first repeated character."},
        {
            "id": "mine/1",
            "instruction": "Check if in given list of numbers, are any two numbers closer to each other than given "
            "threshold. Write it in Python.",
        },
        {"id": "mine/2", "instruction": "Reverse the order of the words in a sentence."},
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = RunConfig(output=str(tmp_path / "run"))
    config.distill.input.source = str(source)
    with pytest.raises(
        ConfigError,
        match=r"distill.input.source: 2 of its instructions are tasks of the evaluated datasets \(mbpp/602 ~ "
        r"Mbpp/602 \(task id\), mine/1 ~ HumanEval/0 \(ngram\)\).*allow_eval_overlap: true",
    ):
        run(config)
    assert not (tmp_path / "run").exists()  # stopped before any work
    config.eval.datasets = ["mbpp"]  # HumanEval is not evaluated: only the MBPP+ task is refused
    with pytest.raises(ConfigError, match=r"1 of its instructions .*\(mbpp/602 ~ Mbpp/602 \(task id\)\)"):
        run(config)
    config.distill.input.source = "mbpp-train-raw"
    with pytest.raises(ConfigError, match=r"distill.input.source: 119 of its instructions"):
        run(config)
    config.distill.input.source = "mbpp-train"  # the default: decontaminated
    assert eval_overlaps(iter_instructions("mbpp-train"), ["humaneval", "mbpp"]) == []


@pytest.mark.timeout(120)
def test_a_level_trains_while_the_next_one_distils_when_the_cluster_has_room(ray_local, tmp_path, monkeypatch):
    """The run's order with two levels (its steps recorded, not run): level 1's training starts as a Ray task as soon
    as level 1 is distilled, and runs while level 2 distils; without room, every training waits for the teacher."""
    import time

    import ray

    import jobs.run as job

    events = tmp_path / "events"
    events.mkdir()

    def note(name: str) -> None:
        (events / f"{time.monotonic():.6f} {name}").touch()

    @ray.remote(num_cpus=0)
    def train_task(configs, after):
        note(f"train {configs[0].name} begins")
        time.sleep(2)
        note(f"train {configs[0].name} ends")
        return [{}]

    def distill(config, method, group):
        note(f"distill {group.name} begins")
        time.sleep(2 if group.name == "level2" else 0)
        note(f"distill {group.name} ends")

    monkeypatch.setattr(job, "_train_task", train_task)
    monkeypatch.setattr(job, "_distill", distill)
    monkeypatch.setattr(job, "_train", lambda config, method, group: note(f"train {group.name} (after the teacher)"))
    monkeypatch.setattr(job, "_instructions", lambda config, folder: "built")
    monkeypatch.setattr(job, "_teacher_needed", lambda *args: False)
    monkeypatch.setattr(job, "_evaluate", lambda *args: None)
    monkeypatch.setattr(job, "print_train", lambda summary, console: None)
    monkeypatch.setattr(job.report, "write", lambda *args: None)
    config = load_config(
        RunConfig, None, ["levels=[1, 2]", "instructions={}", f"output={tmp_path / 'run'}", "methods=[direct]"]
    )
    monkeypatch.setattr(job.ray, "available_resources", lambda: {"CPU": 2.0})  # 2 workers x 1 CPU: room
    run(config)
    order = [p.name.partition(" ")[2] for p in sorted(events.iterdir(), key=lambda p: float(p.name.split()[0]))]
    at = {event: i for i, event in enumerate(order)}
    assert at["distill level1 ends"] < at["train train-level1-direct begins"] < at["distill level2 ends"]
    assert at["distill level2 begins"] < at["train train-level1-direct ends"]  # the two overlapped
    # the trainings left wait for the teacher (level 1's is skipped there: the real one writes train.json)
    assert order[-2:] == ["train level1 (after the teacher)", "train level2 (after the teacher)"]
    for name in events.iterdir():
        name.unlink()
    monkeypatch.setattr(job.ray, "available_resources", lambda: {"CPU": 1.0})  # no room: in turn
    run(config)
    order = [p.name.partition(" ")[2] for p in sorted(events.iterdir(), key=lambda p: float(p.name.split()[0]))]
    assert [o for o in order if o.startswith("train")] == [
        "train level1 (after the teacher)",
        "train level2 (after the teacher)",
    ]


@pytest.mark.timeout(60)
def test_the_evaluated_models_engines_start_together_when_the_cluster_has_room(tmp_path, monkeypatch):
    """The run's evaluations (engines and evaluations recorded, not run): the engines of the models left to score
    open together where the cluster has a CPU for each, else one model's after the other's; a model scored on every
    dataset opens none."""
    from contextlib import contextmanager

    import jobs.run as job
    from amr.config import TeacherConfig

    events = []

    @contextmanager
    def open_teachers(configs, model_store):
        events.append(f"open {' '.join(c.model for c in configs)}")
        yield [None] * len(configs)
        events.append("close")

    monkeypatch.setattr(job, "open_teachers", open_teachers)
    monkeypatch.setattr(job, "student", lambda cfg: TeacherConfig(model=cfg.model))
    monkeypatch.setattr(job, "evaluate", lambda cfg: events.append(f"eval {cfg.model} {cfg.dataset}"))
    monkeypatch.setattr(job, "print_scores", lambda scores, console: None)
    config = load_config(RunConfig, None, [f"output={tmp_path}"])
    models = [(name, str(tmp_path / name), name) for name in ("direct", "amr", "base")]
    for dataset in config.eval.datasets:  # amr's student is scored already
        (tmp_path / "amr" / dataset).mkdir(parents=True)
        (tmp_path / "amr" / dataset / "scores.json").write_text("{}")
    evals = [f"eval {m} {d}" for m in ("direct", "base") for d in ("humaneval", "mbpp")]
    monkeypatch.setattr(job.ray, "available_resources", lambda: {"CPU": 2.0})
    job._evaluate(config, models)
    assert events == ["open direct base", *evals, "close"]
    events.clear()
    monkeypatch.setattr(job.ray, "available_resources", lambda: {"CPU": 1.0})  # no room: in turn
    job._evaluate(config, models)
    assert events == ["open direct", *evals[:2], "close", "open base", *evals[2:], "close"]
