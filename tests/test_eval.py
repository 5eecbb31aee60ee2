"""EvalPlus evaluation (eval/, `amr eval`): offline datasets and subsets, scoring through evalplus, and a real
SmolLM2 generation scored end to end."""

import gzip
import json

import pytest
from typer.testing import CliRunner

from amr.config import EVALPLUS_VERSIONS
from eval.data import DATASETS, dataset_file, load_tasks
from eval.evalplus_runner import EvalPlusDownload, _offline
from eval.generate import messages
from eval.score import score
from jobs.cli import app

runner = CliRunner()
CANONICAL_TASKS = 10
"""Canonical solutions are scored on the first 10 tasks of each set (and two of HumanEval's, ``_subset``): the full
sets take longer than a test should on 2 cores (HumanEval+ ~3 min, MBPP+ v0.1.0 ~10 min, most of it computing
evalplus's expected outputs, cold in a test session)."""
PATIENT = {"min_time_limit": 10.0, "gt_time_limit_factor": 50.0}
"""Time limits for a loaded 2-core machine: with evalplus's defaults (1 s, 4x) canonical solutions time out."""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("evalplus-cache")


def _subset(dataset, cache):
    """The tasks whose canonical solutions are scored: the first CANONICAL_TASKS and, of HumanEval, also /15 (inputs of
    megabytes) and /32 (which none can pass). One file per dataset, so evalplus computes its expected outputs once."""
    path = cache / f"{dataset}-canonical.jsonl"
    if not path.exists():
        tasks = load_tasks(dataset_file(dataset, cache_dir=cache))
        extra = [t for t in tasks[CANONICAL_TASKS:] if t["task_id"] in ("HumanEval/15", "HumanEval/32")]
        _write_samples(path, tasks[:CANONICAL_TASKS] + extra)
    return path


def _write_samples(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _canonical(task):
    return {"task_id": task["task_id"], "solution": task["prompt"] + task["canonical_solution"]}


def _broken(task):
    return {
        "task_id": task["task_id"],
        "solution": f"def {task['entry_point']}(*args):\n    raise NotImplementedError\n",
    }


@pytest.mark.timeout(300)
def test_datasets_are_the_vendored_releases_and_limit_takes_the_first_tasks(cache):
    sizes = {("humaneval", "v0.1.10"): 164, ("mbpp", "v0.1.0"): 399, ("mbpp", "v0.2.0"): 378}
    assert {(d, v) for d in DATASETS for v in DATASETS[d]} == set(sizes)
    assert {d: EVALPLUS_VERSIONS[d][0] for d in DATASETS} == {"humaneval": "v0.1.10", "mbpp": "v0.1.0"}
    for (dataset, version), size in sizes.items():
        full = dataset_file(dataset, version, cache_dir=cache)
        with gzip.open(DATASETS[dataset][version], "rt") as f:
            assert full.read_text() == f.read()  # evalplus reads these bytes: its md5 keys the expected outputs
        tasks = load_tasks(full)
        assert len(tasks) == size
        subset = dataset_file(dataset, version, limit=3, cache_dir=cache)
        assert subset != full and load_tasks(subset) == tasks[:3]
    assert dataset_file("mbpp", cache_dir=cache).name == "MbppPlus-v0.1.0.jsonl"


@pytest.mark.timeout(500)
@pytest.mark.parametrize("dataset", ["humaneval", "mbpp"])
def test_canonical_solutions_score_100_percent(dataset, cache, tmp_path):
    data = _subset(dataset, cache)
    chosen = load_tasks(data)
    samples = _write_samples(tmp_path / "samples.jsonl", map(_canonical, load_tasks(data)))
    scores = score(dataset, data, samples, cache_dir=cache, log=tmp_path / "evalplus.log", **PATIENT)
    results = json.loads(open(scores["results"]).read())["eval"]
    failing = {
        t: (r[0]["base_status"], r[0]["plus_status"])
        for t, r in results.items()
        if (r[0]["base_status"], r[0]["plus_status"]) != ("pass", "pass")
    }
    if dataset == "humaneval":
        # evalplus 0.3.1 bug: find_zero's oracle skips recording the pass (`continue` before `details[i] = True`),
        # so every solution of HumanEval/32 fails (fixed in evalplus's repository since the release)
        assert failing == {"HumanEval/32": ("fail", "fail")}
        expected = round((len(chosen) - 1) / len(chosen), 4)
    else:
        assert failing == {}
        expected = 1.0
    assert scores["n_tasks"] == len(chosen) == CANONICAL_TASKS + 2 * (dataset == "humaneval")
    assert scores["base_pass@1"] == scores["plus_pass@1"] == expected


@pytest.mark.timeout(300)
def test_a_broken_sample_scores_0_on_its_task_and_pass_at_k_counts_samples(cache, tmp_path):
    data = dataset_file("mbpp", limit=3, cache_dir=cache)
    tasks = load_tasks(data)
    samples = _write_samples(
        tmp_path / "samples.jsonl", [_canonical(tasks[0]), _broken(tasks[1]), _canonical(tasks[2])]
    )
    scores = score("mbpp", data, samples, cache_dir=cache, **PATIENT)
    results = json.loads(open(scores["results"]).read())["eval"]
    status = {task_id: (r[0]["base_status"], r[0]["plus_status"]) for task_id, r in results.items()}
    assert [status[t["task_id"]] for t in tasks] == [("pass", "pass"), ("fail", "fail"), ("pass", "pass")]
    assert scores["base_pass@1"] == scores["plus_pass@1"] == round(2 / 3, 4)

    # two samples per task, one of them broken: pass@1 is 1/2
    samples = _write_samples(tmp_path / "two.jsonl", [s for t in tasks for s in (_canonical(t), _broken(t))])
    scores = score("mbpp", data, samples, cache_dir=cache, **PATIENT)
    assert (scores["n_tasks"], scores["n_samples"]) == (3, 6)
    assert scores["base_pass@1"] == scores["plus_pass@1"] == 0.5
    assert "base_pass@10" not in scores


@pytest.mark.timeout(300)
def test_pass_at_10_from_12_samples_per_task(cache, tmp_path):
    """samples > 1: evalplus's unbiased estimator over 12 samples per task, of which 12, 0 and 1 are right."""
    from eval.generate import requests

    data = dataset_file("mbpp", limit=3, cache_dir=cache)
    tasks = load_tasks(data)
    asked = requests(tasks, 12, seed=7)  # what `amr eval --set samples=12` sends: 12 per task, each its own seed
    assert [(r["task_id"], r["sample"], r["sampling"]["seed"]) for r in asked[:2]] == [
        (tasks[0]["task_id"], 0, 7),
        (tasks[0]["task_id"], 1, 8),
    ]
    assert len(asked) == 36 and len({r["id"] for r in asked}) == 36 and asked[-1]["sampling"]["seed"] == 18
    right = {tasks[0]["task_id"]: 12, tasks[1]["task_id"]: 0, tasks[2]["task_id"]: 1}
    rows = [_canonical(t) if i < right[t["task_id"]] else _broken(t) for t in tasks for i in range(12)]
    scores = score("mbpp", data, _write_samples(tmp_path / "samples.jsonl", rows), cache_dir=cache, **PATIENT)
    assert (scores["n_tasks"], scores["n_samples"]) == (3, 36)
    # pass@1: (1 + 0 + 1/12) / 3; pass@10: (1 + 0 + (1 - C(11,10)/C(12,10))) / 3 = (1 + 0 + 5/6) / 3
    assert scores["base_pass@1"] == scores["plus_pass@1"] == 0.3611
    assert scores["base_pass@10"] == scores["plus_pass@10"] == 0.6111
    assert "base_pass@100" not in scores


@pytest.mark.timeout(300)
def test_scoring_works_from_a_process_with_a_large_address_space(cache, tmp_path):
    # a Ray driver maps ~9 GiB; evalplus's checkers cap theirs at 4 GiB, so they must not fork from this process.
    # HumanEval/15's plus inputs build strings of megabytes: under the cap inherited from here they fail.
    import mmap

    data = _subset("humaneval", cache)  # the canonical test's tasks: their expected outputs once
    tasks = load_tasks(data)
    samples = _write_samples(
        tmp_path / "samples.jsonl", [_canonical(t) if t["task_id"] == "HumanEval/15" else _broken(t) for t in tasks]
    )
    with mmap.mmap(-1, 6 << 30, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=mmap.PROT_READ):
        scores = score("humaneval", data, samples, cache_dir=cache, **PATIENT)
    assert scores["base_pass@1"] == scores["plus_pass@1"] == round(1 / len(tasks), 4)


@pytest.mark.timeout(300)
def test_evalplus_is_never_let_download(tmp_path):
    import evalplus.data.mbpp as mbpp

    with _offline("humaneval", tmp_path / "he.jsonl", tmp_path), pytest.raises(EvalPlusDownload, match="MbppPlus"):
        mbpp.get_mbpp_plus()  # no override for MBPP in this scope: evalplus would fetch it from GitHub


@pytest.mark.timeout(300)
def test_bad_input_is_a_clear_error(tmp_path):
    out = str(tmp_path / "out")
    result = runner.invoke(app, ["eval", "--model", "smollm2-135m-instruct", "--dataset", "apps", "--output", out])
    assert result.exit_code == 2 and "dataset: Input should be 'humaneval' or 'mbpp'" in result.output
    result = runner.invoke(
        app, ["eval", "--model", "smollm2-135m-instruct", "--dataset", "mbpp", "--version", "v0.1.10", "--output", out]
    )
    assert result.exit_code == 2 and "unknown mbpp version 'v0.1.10'; known: v0.1.0, v0.2.0" in result.output
    missing = tmp_path / "no-student"
    result = runner.invoke(app, ["eval", "--model", str(missing), "--dataset", "humaneval", "--output", out])
    assert result.exit_code == 2 and f"model '{missing}': no such model directory" in result.output
    result = runner.invoke(
        app, ["eval", "--model", "smollm2-135m-instruct", "--dataset", "mbpp", "--output", out, "--set", "samples=4"]
    )
    assert result.exit_code == 2 and "samples: Value error, more than one sample per task needs" in result.output
    assert runner.invoke(app, ["eval", "--help"]).exit_code == 0


@pytest.mark.timeout(300)
def test_prompt_is_evalplus_own_chat_prompt(smollm2):
    from evalplus.provider.utility import make_raw_chat_prompt
    from transformers import AutoTokenizer

    from eval.generate import INSTRUCTION_PREFIX, RESPONSE_PREFIX

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    prompt = load_tasks(dataset_file("humaneval", limit=1))[0]["prompt"]
    ours = tokenizer.apply_chat_template(messages(prompt), tokenize=False, continue_final_message=True)
    assert ours == make_raw_chat_prompt(prompt, INSTRUCTION_PREFIX, RESPONSE_PREFIX, tokenizer)


@pytest.mark.slow
@pytest.mark.timeout(580)
def test_amr_eval_scores_smollm2_on_three_humaneval_tasks(ray_local, smollm2, cache, tmp_path):
    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        [
            "eval",
            "--model",
            "smollm2-135m-instruct",
            "--dataset",
            "humaneval",
            "--limit",
            "3",
            "--output",
            str(out),
            "--set",
            f"cache_dir={cache}",
            "--set",
            "sampling.max_tokens=64",
            "--set",
            "vllm.max_model_len=1024",
            "--set",
            "vllm.cpu_reserved_cores=0",
            "--set",
            "scoring.min_time_limit=10",
        ],
    )
    assert result.exit_code == 0, result.output
    scores = json.loads((out / "scores.json").read_text())
    assert (scores["dataset"], scores["version"], scores["model"], scores["n_tasks"]) == (
        "humaneval",
        "v0.1.10",
        "smollm2-135m-instruct",
        3,
    )
    assert scores["generation_errors"] == 0 and scores["output_tokens"] > 0
    assert 0 <= scores["plus_pass@1"] <= scores["base_pass@1"] <= 1
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["task_id"] for s in samples] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert all(s["raw"] and isinstance(s["solution"], str) for s in samples)
    assert any("def " in s["solution"] for s in samples)  # the real model writes Python through vLLM
    results = json.loads((out / "samples_eval_results.json").read_text())
    assert sorted(results["eval"]) == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert f"pass@1 HumanEval {scores['base_pass@1']:.1%}, HumanEval+ {scores['plus_pass@1']:.1%}" in result.output
    print(
        json.dumps({k: scores[k] for k in ("base_pass@1", "plus_pass@1", "output_tokens", "generation_s", "scoring_s")})
    )


@pytest.mark.timeout(420)
def test_amr_eval_writes_its_results_to_an_object_store(
    ray_local, tiny_teacher, tiny_model, s3_server, cache, tmp_path
):
    # the session's tiny engine answers (same model and engine settings: the job shares its deployment);
    # evalplus scores in a local temporary directory, whose files then go to the bucket
    from amr import storage
    from tests.conftest import logged_engine_starts

    out = f"s3://{s3_server['bucket']}/eval-{tmp_path.name}/humaneval"
    engines = logged_engine_starts()
    result = runner.invoke(
        app,
        [
            "eval",
            "--model",
            tiny_model,
            "--dataset",
            "humaneval",
            "--limit",
            "2",
            "--output",
            out,
            "--set",
            f"cache_dir={cache}",
            "--set",
            "sampling.max_tokens=16",
            "--set",
            "vllm.max_model_len=2048",
            "--set",
            "vllm.batch_size=4",
            "--set",
            "vllm.cpu_reserved_cores=0",
            "--set",
            "scoring.min_time_limit=10",
        ],
    )
    assert result.exit_code == 0, result.output
    assert logged_engine_starts() == engines
    assert f"(results: {out}/)" in result.output
    scores = storage.read_json(f"{out}/scores.json")
    assert (scores["model"], scores["n_tasks"], scores["generation_errors"]) == (tiny_model, 2, 0)
    assert scores["results"] == f"{out}/samples_eval_results.json" and scores["config"]["output"] == out
    samples = [json.loads(line) for line in storage.read_lines(f"{out}/samples.jsonl")]
    assert [s["task_id"] for s in samples] == ["HumanEval/0", "HumanEval/1"]
    assert sorted(storage.read_json(scores["results"])["eval"]) == ["HumanEval/0", "HumanEval/1"]
    assert storage.is_file(f"{out}/evalplus.log")


def test_alpaca_evaluation_sends_the_alpaca_prompt_as_the_student_was_trained(ray_local, tiny_teacher, tiny_model):
    """``eval.template: alpaca``: evalplus's instruction inside the Alpaca template, the answer prefilled, and none
    of the model's chat template around it: the engine reads exactly the tokens of that text."""
    from transformers import AutoTokenizer

    from eval.generate import requests

    task = {"task_id": "t/0", "prompt": 'def add(a, b):\n    """Add two numbers."""\n'}
    [alpaca], [chat] = requests([task], template="alpaca"), requests([task])
    text = (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nPlease provide a self-contained Python script that solves the following problem in a "
        'markdown code block:\n```\ndef add(a, b):\n    """Add two numbers."""\n```\n\n### Response:\n'
        "Below is a Python script with a self-contained function that solves the problem and passes corresponding "
        "tests:\n```python\n"
    )
    assert "".join(m["content"] for m in alpaca["messages"]) == text and "chat_template" not in chat
    answered = {r["id"]: r for r in tiny_teacher.complete([alpaca, {**chat, "id": "chat"}], carry=("id",))}
    tokens = AutoTokenizer.from_pretrained(tiny_model)(text, add_special_tokens=False).input_ids
    assert answered[alpaca["id"]]["error"] is None and answered[alpaca["id"]]["num_input_tokens"] == len(tokens)
    assert answered["chat"]["num_input_tokens"] != len(tokens)  # the chat template adds its role markers


def test_amr_run_evaluates_with_the_training_template_unless_told_otherwise():
    from amr.config import RunConfig
    from jobs.run import _eval_configs

    alpaca = RunConfig(train={"template": "alpaca"})
    assert {c.template for c in _eval_configs(alpaca, "m", "out")} == {"alpaca"}
    told = RunConfig(train={"template": "alpaca"}, eval={"template": "chat"})
    assert {c.template for c in _eval_configs(told, "m", "out")} == {"chat"}
    assert {c.template for c in _eval_configs(RunConfig(), "m", "out")} == {"chat"}
