"""Instruction construction: the seed set from the real MBPP file, decontamination against the vendored
benchmarks (exact, n-gram, embedding; the LLM judge with a scripted teacher), lineage kept, resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from amr import embeddings
from amr.config import DecontamConfig, EmbeddingConfig, InstructionsConfig, RunConfig
from amr.decontam import NgramIndex, benchmark_items, nearest, problem_statement
from amr.pipelines import instructions
from amr.prompts import instruction_evolution, judge, selfinstruct
from amr.stages import decontaminate as decontaminate_stage
from jobs import run as run_job
from jobs.cli import app
from tests.support.scripted_teacher import ScriptedTeacher

runner = CliRunner()
MBPP_11 = "Write a python function to remove first and last occurrence of a given character from the string."
REWORDED_HE_0 = (
    "In a given list of numbers, check if any two of the numbers are closer to each other than a given threshold."
)
LOOSE_HE_0 = "Given floats and a limit, tell whether some pair of values lies nearer together than that limit."
CLEAN = "Write a function that formats a duration in seconds as hours, minutes and seconds, like 1h 2m 3s."


@pytest.fixture(scope="module")
def checks_embedders(ray_local):
    """The embedding actors of the default decontamination, started once for the module's steps, which share them
    (``amr.stages.decontaminate.embedders``) instead of each starting its own: ~9 s a step."""
    with decontaminate_stage.embedders(DecontamConfig(), EmbeddingConfig(), None) as actors:
        yield actors


def test_ngram_index_exact_and_overlap():
    items = [
        {
            "id": "b/1",
            "prompt": "Write a function to find the shared elements from the given two lists.",
            "solution": "def similar(a, b):\n    return set(a) & set(b)\n",
        },
        {"id": "b/2", "prompt": "Sum a list.", "solution": ""},
    ]
    index = NgramIndex.build(items, 5)
    assert index.match("Please: write a FUNCTION to find the shared elements from the given two lists!", 1) == {
        "check": "exact",
        "benchmark_id": "b/1",
        "score": 1.0,
    }
    assert index.match("Now sum a list, then sort it.", 1)["check"] == "exact"  # shorter than n: the whole text
    overlap = index.match("We want to find the shared elements from the given lists of numbers", 1)
    assert overlap["check"] == "ngram" and overlap["benchmark_id"] == "b/1" and 0 < overlap["score"] < 1
    assert index.match("We want to find the shared elements from the given lists of numbers", 5) is None
    assert index.match("Reverse a string.", 1) is None


def test_problem_statements_and_judge_verdicts():
    assert (
        problem_statement(f"{MBPP_11}\nYour code should pass this test:\nassert remove_Occ('hello','l') == 'heo'")
        == MBPP_11
    )
    he = {i["id"]: i for i in benchmark_items(["humaneval"])}
    assert he["HumanEval/0"]["problem"] == (
        "Check if in given list of numbers, are any two numbers closer to each other than\ngiven threshold."
    )  # the docstring without its doctests
    plus = {i["id"]: i for i in benchmark_items(["mbpp-plus"])}
    assert plus["Mbpp/2"]["problem"] == "Write a function to find the shared elements from the given two lists."
    assert [judge.verdict(t) for t in ("Yes. Same task.", "**No** - different", "Maybe", None)] == [
        True,
        False,
        None,
        None,
    ]
    top, cosines = nearest(np.eye(3, dtype=np.float32)[[2, 0]], np.eye(3, dtype=np.float32)[[0, 1, 2]], 2)
    assert top[:, 0].tolist() == [2, 0] and cosines[:, 0].tolist() == [1.0, 1.0]


def test_the_steps_of_a_build_share_one_start_of_the_checks_embedders(monkeypatch, tmp_path):
    """``build`` opens the checks' embedding actors once for its steps that are not done (each start loads the model
    in a new process); with every step done, none."""
    events, used = [], []

    class Started:  # EmbedderActors without Ray
        def __init__(self, config: EmbeddingConfig, model_store: str | None):
            events.append(("start", config.dtype))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            events.append("stop")

    def step(source: str, config: InstructionsConfig, output: str) -> None:
        with decontaminate_stage.embedders(config.decontam, config.embedding, config.model_store) as embedder:
            used.append(embedder)
        Path(output).write_text("")
        Path(instructions.report_path(output)).write_text("{}")

    monkeypatch.setattr(embeddings, "EmbedderActors", Started)
    monkeypatch.setattr(instructions, "init_ray", lambda config: None)
    monkeypatch.setattr(instructions, "BUILD_STEPS", [(name, src, step) for name, src, _ in instructions.BUILD_STEPS])
    config = InstructionsConfig(embedding={"dtype": "bfloat16"})  # the checks' actors compute in float32 anyway
    assert instructions.build(config, tmp_path) == str(tmp_path / "all.jsonl")
    assert len(used) == 3 and used[0] is used[1] is used[2] and events == [("start", "float32"), "stop"]
    instructions.build(config, tmp_path)
    assert len(used) == 3 and len(events) == 2  # done already: nothing started


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_seed_set_is_mbpp_train_decontaminated_and_explained(checks_embedders, tmp_path):
    folder = tmp_path / "run" / "instructions"  # where `amr run` keeps them: it builds on this seed set below
    out = folder / "seeds.jsonl"
    result = runner.invoke(app, ["instructions", "seed", "--output", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((folder / "seeds.jsonl.report.json").read_text())
    kept, removed = _jsonl(out), _jsonl(report["removed_rows"])
    assert (
        report["removed_rows"] == str(folder / "seeds.jsonl.removed.jsonl")
        and not (folder / "seeds.jsonl.stages").exists()
    )
    ids = sorted(int(r["id"].split("/")[1]) for r in [*kept, *removed])
    assert ids == list(range(601, 975)) and report["input_rows"] == 374
    # MBPP+ draws 111 of its 399 tasks from MBPP's train split: those seeds are the evaluation's own problems
    same = [r for r in removed if r["check"] == "same-task"]
    assert len(same) == 111 and all(r["benchmark_id"] == "Mbpp/" + r["id"].split("/")[1] for r in same)
    assert report["by_check"]["exact"] >= 1 and report["by_check"]["ngram"] >= 1
    assert sum(report["by_check"].values()) == report["removed"] == 374 - len(kept)
    assert all(k["tests"] and set(k) == {"id", "instruction", "tests"} for k in kept)  # ready for amr distill
    print(json.dumps({k: report[k] for k in ("kept", "removed", "by_check", "by_benchmark", "near_kept")}))
    again = runner.invoke(app, ["instructions", "seed", "--output", str(out)])
    assert again.exit_code == 0 and "done already" in again.output

    # `amr run` with an instructions section: seeds (done above) -> self-instruct -> evolution -> all.jsonl
    with ScriptedTeacher(_generation_script) as teacher:
        config = RunConfig(
            output=str(tmp_path / "run"),
            instructions={
                "teacher": teacher.config().model_dump(),
                "self_instruct": {"count": 2},
                "evolve": {"rounds": 1},
            },
        )
        source = run_job._instructions(config, config.output)  # built under OUTPUT/instructions
        calls = len(teacher.requests)
        assert run_job._instructions(config, config.output) == source and len(teacher.requests) == calls  # resumed
    built = [json.loads(line) for line in (folder / "all.jsonl").read_text().splitlines()]
    si = [json.loads(line) for line in (folder / "self-instruct.jsonl").read_text().splitlines()]
    evolved = [json.loads(line) for line in (folder / "evolved.jsonl").read_text().splitlines()]
    assert (
        source == str(folder / "all.jsonl") and len(si) == 2 and calls == 3 + len(si)
    )  # 2 x oversample 1.5, then one rewrite each
    assert {r["parent_id"] for r in evolved} <= {r["id"] for r in si} and all(r["round"] == 1 for r in evolved)
    assert [r["id"] for r in built] == [r["id"] for r in [*kept, *si, *evolved]]
    assert all(set(r) == {"id", "instruction", "tests"} for r in built)  # what `amr distill` reads


def _jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _judge_script(messages: list[dict[str, str]]) -> str:
    assert messages[0]["content"] == judge.SYSTEM
    benchmark = re.search(r"### Benchmark Problem:\n(.*?)\n\n### Training", messages[1]["content"], re.S).group(1)
    return "Yes, the same task." if "closer to each other" in benchmark else "No, a different task."


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_planted_contamination_is_removed_and_lineage_kept(checks_embedders, monkeypatch, tmp_path):
    rows = [
        {"id": "e/1", "instruction": MBPP_11, "parent_id": "s/1", "round": 1, "heuristic": "constraints"},
        {"id": "e/2", "instruction": REWORDED_HE_0, "parent_id": "s/2", "round": 1, "heuristic": "rarer"},
        {"id": "e/3", "instruction": LOOSE_HE_0, "parent_id": "s/3", "round": 2, "heuristic": "reasoning"},
        {"id": "e/4", "instruction": CLEAN, "parent_id": "s/4", "round": 2, "heuristic": "complexity"},
    ]
    source = tmp_path / "level.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = InstructionsConfig()
    config.decontam.judge_floor = 0.0  # every pair is near: the judge sees them all
    out = tmp_path / "clean.parquet"
    started = []  # the steps embed with the enclosing block's actors (the fixture's), starting none
    monkeypatch.setattr(embeddings.EmbedderActors, "__init__", lambda self, *args: started.append(args))
    report = instructions.decontaminate(str(source), config, str(out))
    assert {r["id"]: (r["check"], r["benchmark_id"]) for r in _jsonl(report["removed_rows"])} == {
        "e/1": ("exact", "mbpp/11"),
        "e/2": ("embedding", "HumanEval/0"),
    }
    assert report["judge"] is None and [r["id"] for r in _jsonl(report["near_rows"])] == ["e/3", "e/4"]
    assert report["by_check_and_benchmark"] == {"exact": {"MBPP": 1}, "embedding": {"HumanEval+": 1}}

    with ScriptedTeacher(_judge_script) as teacher:
        config.teacher = teacher.config()
        config.decontam.judge, config.decontam.judge_top_k = True, 2
        judged = instructions.decontaminate(str(source), config, str(tmp_path / "judged.parquet"))
    assert judged["judge"] == {"pairs": 4, "same": 1, "different": 3, "unparsed": 0, "errors": 0} and not started
    assert [(r["id"], r["check"]) for r in _jsonl(judged["removed_rows"])] == [
        ("e/1", "exact"),
        ("e/2", "embedding"),
        ("e/3", "judge"),
    ]
    assert [r["id"] for r in _jsonl(judged["near_rows"])] == ["e/4"]
    import pyarrow.parquet as pq

    clean = pq.read_table(tmp_path / "judged.parquet").to_pylist()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[3]) + "\n" + json.dumps({**rows[0], "id": "e/5", "near": []}) + "\n")
    result = runner.invoke(
        app, ["instructions", "decontaminate", "--input", str(bad), "--output", str(tmp_path / "x.jsonl")]
    )
    assert result.exit_code == 2 and f"{bad}:2: field 'near' is reserved" in result.output
    assert clean == [
        {"id": "e/4", "instruction": CLEAN, "parent_id": "s/4", "round": 2, "heuristic": "complexity", "tests": []}
    ]


SEEDS = [
    {"id": f"s/{i}", "instruction": text}
    for i, text in enumerate(
        [
            "Write a function to count the vowels in a string.",
            "Write a function to merge two sorted lists into one sorted list.",
            "Write a function to find the longest word in a sentence.",
            "Write a function to rotate a list to the right by k places. EMPTY",
            "Write a function to compute the running sum of a list. CHAT",
            "Write a function to flatten a nested list of integers. LEAK",
        ]
    )
]
TAILS = {
    "constraints": "The input may hold up to 10000 items and must not be modified.",
    "rarer": "Use only integer arithmetic and no imports.",
    "reasoning": "First validate the input, then compute the result, then format it as a string.",
    "misdirection": "This code is wrong:\n```python\ndef f(x):\n    return x[0]\n```",
    "complexity": "It must run in O(n) time and O(1) extra space.",
}


def _generation_script(messages: list[dict[str, str]]) -> str:
    user = messages[1]["content"]
    if messages[0]["content"] == selfinstruct.SYSTEM:
        # a marked example decides (LEAK before CHAT before EMPTY); with none, a variant of the first example
        examples = " ".join(re.findall(r"^\d+\. (.*)$", user, re.M))
        if "LEAK" in examples:
            return f"### New Problem:\n{REWORDED_HE_0}"
        if "CHAT" in examples:
            return "### New Problem:\nHello there, how are you doing today, my dear friend?"
        if "EMPTY" in examples:
            return "### New Problem:\n"
        first = re.search(r"1\. (.*)", user).group(1)
        return f"### New Problem:\nWrite a function to {first.split(' to ', 1)[1].rstrip('.')} and report how many items it saw."
    method = re.search(r"### Method:\n(.*)\n\n### Problem", user).group(1)
    heuristic = next(h for h, text in instruction_evolution.HEURISTICS.items() if text == method)
    parent = re.search(r"### Problem:\n(.*)\n\n### Rewritten", user, re.S).group(1)
    if "vowels" in parent and heuristic == "rarer":
        return f"### Rewritten Problem:\n{parent}"  # a copy of its parent
    return f"### Rewritten Problem:\n{parent} {TAILS[heuristic]}"


@pytest.mark.slow
@pytest.mark.timeout(540)
def test_self_instruct_and_evolution_rounds_with_lineage_and_resume(checks_embedders, tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps(s) + "\n" for s in SEEDS))
    with ScriptedTeacher(_generation_script) as teacher:
        overrides = [
            "--set",
            f"teacher={json.dumps(teacher.config().model_dump(mode='json'))}",
            "--set",
            "self_instruct.count=3",
            "--set",
            "self_instruct.examples=2",
            "--set",
            "evolve.rounds=2",
        ]
        si = tmp_path / "si.jsonl"
        result = runner.invoke(
            app, ["instructions", "self-instruct", "--input", str(seeds), "--output", str(si), *overrides]
        )
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / "si.jsonl.report.json").read_text())
        assert report["requested"] == 5 and len(teacher.requests) == 5  # 3 x oversample 1.5, rounded up
        rows = [json.loads(line) for line in si.read_text().splitlines()]
        # the 5 requests' examples (seed 0): si/0 LEAK+EMPTY, si/1 vowels+longest, si/2 CHAT+EMPTY, si/3 and si/4
        # EMPTY+longest: 2 empty, 1 not a task; of the 2 checked, si/0 (a reworded HumanEval/0) is removed
        assert report["dropped"] == {"empty": 2, "not a task": 1}
        checked = report["decontamination"]
        assert (checked["input_rows"], checked["kept"]) == (2, 1)
        assert [(r["id"], r["check"], r["benchmark_id"]) for r in _jsonl(checked["removed_rows"])] == [
            ("si/0", "embedding", "HumanEval/0")
        ]
        assert [r["id"] for r in rows] == ["si/1"] and report["kept"] == 1
        assert rows[0]["instruction"] == (
            "Write a function to count the vowels in a string and report how many items it saw."
        )
        assert all(
            r["round"] == 0
            and r["heuristic"] == "self-instruct"
            and r["parent_id"] is None
            and set(r["examples"]) <= {s["id"] for s in SEEDS}
            and len(r["examples"]) == 2
            for r in rows
        )
        assert all("report how many items" in r["instruction"] for r in rows)

        evolved = tmp_path / "evol.jsonl"
        args = ["instructions", "evolve", "--input", str(seeds), "--output", str(evolved), *overrides]
        assert runner.invoke(app, args).exit_code == 0
        levels = [
            [json.loads(line) for line in (tmp_path / f"evol.round{n}.jsonl").read_text().splitlines()] for n in (1, 2)
        ]
        summary = json.loads((tmp_path / "evol.jsonl.report.json").read_text())
        r1 = summary["rounds"][0]
        assert r1["requested"] == 6 and r1["dropped"].get("empty", 0) == 0
        ids = {s["id"] for s in SEEDS}
        assert all(r["round"] == 1 and r["parent_id"] in ids and r["id"] == f"{r['parent_id']}.e1" for r in levels[0])
        assert all(r["round"] == 2 and r["parent_id"] in {p["id"] for p in levels[0]} for r in levels[1])
        for level in levels:
            for r in level:
                assert TAILS[r["heuristic"]] in r["instruction"]  # the heuristic named is the one applied
        assert summary["rounds"][1]["requested"] == len(levels[0])
        # s/0 is rewritten with "constraints" in round 1, and its rewrite with "rarer" in round 2, where the script
        # returns a copy of its parent: dropped as a copy. s/2.e1 (misdirection) gets misdirection again: the same
        # tail twice adds too few new trigrams, a copy too; s/3.e1.e2 is a near-duplicate of the kept ones
        assert summary["rounds"][0]["dropped"] == {} and [r["id"] for r in levels[0]] == [f"s/{i}.e1" for i in range(6)]
        assert summary["rounds"][1]["dropped"] == {"copy of parent": 2, "near-duplicate": 1}
        assert [r["id"] for r in levels[1]] == ["s/1.e1.e2", "s/4.e1.e2", "s/5.e1.e2"]
        everything = [json.loads(line) for line in evolved.read_text().splitlines()]
        assert everything == levels[0] + levels[1]

        # resume: round 2 and the union are gone; round 1 is read back, only round 2 asks the teacher again
        for path in ("evol.round2.jsonl", "evol.round2.jsonl.report.json", "evol.jsonl", "evol.jsonl.report.json"):
            (tmp_path / path).unlink()
        calls = len(teacher.requests)
        assert runner.invoke(app, args).exit_code == 0
        assert len(teacher.requests) - calls == len(levels[0])
        assert [json.loads(line) for line in evolved.read_text().splitlines()] == everything
        again = runner.invoke(app, args)
        assert "done already" in again.output and len(teacher.requests) - calls == len(levels[0])


@pytest.mark.timeout(300)
def test_decontamination_reads_and_writes_an_object_store(ray_local, s3_server, tmp_path):
    # the n-gram checks only (no LLM, no embedding model): input, output, report, removed rows and the stages
    # directory all in the bucket
    from amr import storage
    from amr.data import load_instructions

    folder = f"s3://{s3_server['bucket']}/instructions-{tmp_path.name}"
    rows = [{"id": "e/1", "instruction": MBPP_11, "round": 1}, {"id": "e/4", "instruction": CLEAN, "round": 2}]
    storage.write_text(f"{folder}/level.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    out = f"{folder}/clean.parquet"
    args = [
        "instructions",
        "decontaminate",
        "--input",
        f"{folder}/level.jsonl",
        "--output",
        out,
        "--set",
        "decontam.embedding_threshold=null",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = storage.read_json(f"{out}.report.json")
    assert report["by_check"] == {"exact": 1} and report["removed_rows"] == f"{out}.removed.jsonl"
    assert [(r["id"], r["check"]) for r in map(json.loads, storage.read_lines(report["removed_rows"]))] == [
        ("e/1", "exact")
    ]
    assert load_instructions(out, keep_fields=True) == [{"id": "e/4", "instruction": CLEAN, "round": 2, "tests": []}]
    assert not storage.exists(f"{out}.stages")  # removed once the report is written
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and f"{out}: done already" in again.output
