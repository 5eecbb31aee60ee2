"""The distillation job end to end with a scripted teacher over HTTP: waves, table versions, growth,
the dataset, response accuracy, and resume after a kill."""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import lancedb
import pyarrow.parquet as pq
import pytest
import yaml

from amr import storage
from amr.config import ConfigError, DistillConfig
from amr.cost import teacher_cost
from amr.lease import LeaseError
from amr.modules import ModuleDB
from amr.pipelines import distill, fingerprints
from amr.prompts import bootstrap, cot, decompose, direct, repair, response_evolution, testgen
from amr.storage import RunDir
from tests.support.scripted_teacher import ScriptedTeacher

# the module's jobs (of the default embedding and this module's sandbox settings) share one embedding actor and one
# sandbox actor instead of starting theirs each
pytestmark = pytest.mark.usefixtures("shared_embedders", "shared_sandbox")

FUNCTIONS = {  # name: (signature, description, body, test)
    "clamp": (
        "def clamp(x: int, low: int, high: int) -> int",
        "Limit x to the range from low to high.",
        "return max(low, min(x, high))",
        "assert clamp(5, 0, 3) == 3",
    ),
    "reverse_text": (
        "def reverse_text(s: str) -> str",
        "Reverse the characters of a string.",
        "return s[::-1]",
        "assert reverse_text('ab') == 'ba'",
    ),
    "add": (
        "def add(a: int, b: int) -> int",
        "Return the sum of a and b.",
        "return a + b",
        "assert add(2, 3) == 5\n    assert add(-1, 1) == 0",
    ),
    "is_even": (
        "def is_even(n: int) -> bool",
        "Return True when n is even.",
        "return n % 2 == 0",
        "assert is_even(4)\n    assert not is_even(3)",
    ),
    "add_three": (
        "def add_three(a: int, b: int, c: int) -> int",
        "Return the sum of three integers.",
        "return add(add(a, b), c)",
        "assert add_three(1, 2, 3) == 6",
    ),
    "count_evens": (
        "def count_evens(xs: list[int]) -> int",
        "Count the even numbers in a list.",
        "return sum(1 for x in xs if is_even(x))",
        "assert count_evens([1, 2, 4]) == 2",
    ),
}
ANSWERS = {
    "add": ["add"],
    "is_even": ["is_even"],
    "add_three": ["add", "add_three"],
    "count_evens": ["is_even", "count_evens"],
}
INSTRUCTIONS = [
    {"id": "t/add", "instruction": "Task: add. Write a function add(a, b).", "tests": ["assert add(1, 2) == 3"]},
    {"id": "t/is_even", "instruction": "Task: is_even. Write is_even(n).", "tests": ["assert is_even(2)"]},
    {
        "id": "t/add_three",
        "instruction": "Task: add_three. Sum three numbers.",
        "tests": ["assert add_three(1, 1, 1) == 3"],
    },
    {
        "id": "t/count_evens",
        "instruction": "Task: count_evens. Count evens.",
        "tests": ["assert count_evens([2]) == 2"],
    },
]

SELF_TESTS = {  # the teacher's tests for each task (is_even: none)
    "add": "assert add(1, 1) == 2",
    "is_even": None,
    "add_three": "assert add_three(1, 2, 3) == 6",
    "count_evens": "assert count_evens([1, 2]) == 1",
}
EVOLVED = "# evolved\n"
"""The first line of every ARE answer's code: a final answer that is the ARE answer shows it, R_d never does."""


def function(name: str, body: bool = True) -> str:
    signature, description, code, _ = FUNCTIONS[name]
    return f'{signature}:\n    """{description}"""\n    {code if body else "..."}\n'


def carried(user: str, name: str) -> str | None:
    """The code of function ``name`` as the ARE prompt's Relevant Functions carry it (a retrieved function, not a
    spec, whose body is ``...``), or None."""
    block = re.search(r"### Relevant Functions:\n```python\n(.*?)```", user, re.DOTALL)
    source = block.group(1) if block else ""
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            last = node.body[-1]
            stub = isinstance(last, ast.Expr) and getattr(last.value, "value", None) is Ellipsis
            return None if stub else ast.get_source_segment(source, node) + "\n"
    return None


def evolved(task: str, user: str) -> str:
    """The paper's ARE answer: the code of each helper the task calls that the prompt carries (copied from it), then
    the task's function. A helper not carried stays called and undefined, as in R_d: only retrieval adds it."""
    helpers = [carried(user, name) for name in ANSWERS[task][:-1]]
    code = "\n\n".join([*[h for h in helpers if h], function(task)])
    return f"A more refined solution.\n\n{response_evolution.HEADING}\n```python\n{EVOLVED}{code}```"


def repaired(task: str, user: str) -> str:
    """A repair that fixes only what the failure names: the definition of each function it reports as not defined
    put before the wrong solution's code; a solution whose failure names none comes back unchanged."""
    solution, failure = user.split("### Wrong Solution:")[1].split("### Failure:")
    assert f"def {task}(" in solution and "Error" in failure, user
    code = re.search(r"```python\n(.*?)```", solution, re.DOTALL).group(1)
    named = re.findall(r"NameError: name '(\w+)' is not defined", failure)
    return "```python\n" + "\n\n".join([*(function(n) for n in named if n in FUNCTIONS), code]) + "```"


def script(messages: list[dict[str, str]]) -> str:
    """The scripted teacher: its direct answers call the helpers of add_three and count_evens without defining them,
    its ARE answers define a helper only when the prompt carries its code, its repairs fix only what the failure
    names; its CoT answers write the helpers themselves."""
    system, user = messages[0]["content"], messages[1]["content"]
    if system == testgen.SYSTEM:
        name = re.search(r"### Function Under Test: (\w+)", user).group(1)
        return f"```python\ndef test_{name}():\n    {FUNCTIONS[name][3]}\n```"
    task = re.search(r"Task: (\w+)", user).group(1)
    if system == bootstrap.SYSTEM:
        return f"```python\n{function({'add': 'clamp', 'is_even': 'reverse_text'}[task])}```"
    if system == decompose.SYSTEM:
        return "```python\n" + "\n".join(function(n, body=False) for n in ANSWERS[task]) + "```"
    if system == response_evolution.SYSTEM:  # the paper's: the answer under its heading
        return evolved(task, user)
    if system == response_evolution.GATED_SYSTEM:  # the task's function: the job links the retrieved ones it calls
        return f"```python\n{function(task)}```"
    if system == repair.REPAIR_SYSTEM:  # the repair sees the wrong solution and the failure
        return repaired(task, user)
    if system == cot.SYSTEM:
        return "Reasoning: reuse small helpers.\n```python\n" + "\n\n".join(function(n) for n in ANSWERS[task]) + "```"
    if system == repair.TESTS_SYSTEM:  # AnsRepair's test function, from the question and R_d
        assert f"### Solution:\n```python\n{function(task).strip()}\n```" in user, user
        tests = SELF_TESTS[task]
        return f"```python\ndef test_solution():\n    {tests}\n```" if tests else "I cannot write tests for this."
    if system == repair.ASSERTS_SYSTEM:  # the checked methods' asserts, from the question alone
        tests = SELF_TESTS[task]
        return f"```python\n{tests}\n```" if tests else "I cannot write tests for this."
    return f"```python\n{function(task)}```"  # direct


@pytest.fixture(scope="module")
def scripted():
    with ScriptedTeacher(script) as server:
        yield server


def config(tmp_path: Path, scripted: ScriptedTeacher, **changes) -> DistillConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    source = tmp_path / "instructions.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in INSTRUCTIONS))
    base = DistillConfig(run_dir=str(tmp_path / "run"), wave_size=2, teacher=scripted.config())
    base.modules.bootstrap_limit = 0
    base.modules.staleness = 0  # the strict order: each wave reads what the one before it inserted (one test: 1)
    base.input.source = str(source)
    base.sandbox.require, base.sandbox.workers = "bwrap", 1
    return base.model_copy(update=changes)


@pytest.fixture(scope="module")
def uninterrupted(ray_local, scripted, tmp_path_factory) -> tuple[DistillConfig, dict, list]:
    """The amr method over INSTRUCTIONS in one run: its config, manifest and the chats the teacher received. The
    driver reads the 4 instructions 1 at a time, into files of 3 rows."""
    cfg = config(tmp_path_factory.mktemp("whole"), scripted)
    before = len(scripted.requests)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(storage, "PYTHON_ROWS", 1)
        patch.setattr(storage, "ROWS_PER_FILE", 3)
        return cfg, distill.run(cfg), scripted.requests[before:]


def test_amr_is_the_papers_every_answer_is_its_are_answer(uninterrupted):
    cfg, manifest, requests = uninterrupted
    evolve = [m for m in requests if m[0]["content"] == response_evolution.SYSTEM]
    # every row is evolved, the first wave's too (it retrieved nothing from the empty table), with the paper's prompt
    assert sorted(re.search(r"Task: (\w+)", m[1]["content"]).group(1) for m in evolve) == sorted(ANSWERS)
    for words in (
        "a more refined and accurate solution",
        "pretend that you have never seen the Relevant Functions",
        '"### Correct Solution:"',
    ):
        assert words in evolve[0][0]["content"], words
    users = {re.search(r"Task: (\w+)", m[1]["content"]).group(1): m[1]["content"] for m in evolve}
    assert all(
        u.count("### Relevant Functions:") == 1 and u.endswith("### Correct Solution:\n") for u in users.values()
    )
    # one slot: the retrieved function's code, then the specs of MD
    slot = users["add_three"].split("### Relevant Functions:\n")[1]
    assert slot.index(function("add")) < slot.index(function("add_three", body=False))
    assert "Draft" not in users["add_three"] and "### Functions To Write" not in users["add_three"]
    # the final answer is the ARE answer, as under its heading, never R_d; nothing spliced into it
    dataset = pq.read_table(Path(cfg.run_dir) / "dataset.parquet").to_pylist()
    assert [r["source"] for r in dataset] == ["are"] * 4
    assert [r["response"] for r in dataset] == [
        f"```python\n{EVOLVED}" + "\n\n".join(function(n) for n in ANSWERS[r["id"][2:]]) + "```" for r in dataset
    ]
    assert manifest["dataset"]["sources"] == {"are": 4} and manifest["dataset"]["from_direct"] == 0
    assert manifest["stages"]["evolve"]["kept_direct"] == {} and manifest["stages"]["evolve"]["without_heading"] == 0


def test_each_stage_samples_with_its_own_budget(uninterrupted, scripted):
    """teacher.stages over teacher.sampling, per call, streamed stages and waves alike; the project's own key
    (stop_runaway) is not sent to an OpenAI endpoint."""
    budgets = {direct.SYSTEM: 3000, decompose.SYSTEM: 1024, testgen.SYSTEM: 384, response_evolution.SYSTEM: 3000}
    seen = {}
    for chat, body in zip(scripted.requests, scripted.parameters):
        if chat[0]["content"] in budgets:
            seen.setdefault(chat[0]["content"], set()).add(body["max_tokens"])
            assert "stop_runaway" not in body and body["temperature"] == 0.0
    assert seen == {system: {tokens} for system, tokens in budgets.items()}


def test_amr_waves_grow_the_table_and_build_the_dataset(uninterrupted):
    cfg, manifest, _ = uninterrupted
    first, second = manifest["modules"]["waves"]
    assert (first["rows"], second["rows"]) == (2, 2)
    assert first["inserted"] == 2 and second["version_read"] == first["version_after"] > first["version_read"]
    assert second["inserted"] == 2 and manifest["modules"]["rows"] == 4
    # wave 2 retrieved what wave 1 inserted, and did not insert it again
    waves = sorted(pq.read_table(Path(cfg.run_dir) / "waves" / "00001.parquet").to_pylist(), key=lambda r: r["index"])
    assert [h["name"] for h in json.loads(waves[0]["retrieved"])] == ["add"]
    assert [h["name"] for h in json.loads(waves[1]["retrieved"])] == ["is_even"]
    growth = pq.read_table(Path(cfg.run_dir) / "growth" / "00001.parquet").to_pylist()
    # the table grows from the ARE answers: add_three's R_d does not define add, its ARE answer does
    assert sorted((g["name"], g["outcome"]) for g in growth) == [
        ("add", "known"),
        ("add_three", "verified"),
        ("count_evens", "verified"),
        ("is_even", "known"),
    ]
    dataset = pq.read_table(Path(cfg.run_dir) / "dataset.parquet").to_pylist()
    assert [r["id"] for r in dataset] == [r["id"] for r in INSTRUCTIONS]
    assert dataset[2]["messages"] == [
        {"role": "user", "content": INSTRUCTIONS[2]["instruction"]},
        {"role": "assistant", "content": dataset[2]["response"]},
    ]
    # count_evens's test is wrong on purpose ([2] has one even number): accuracy 3/4
    assert [r["tests_passed"] for r in dataset] == [True, True, True, False]
    assert manifest["dataset"]["response_accuracy"] == 0.75
    assert manifest["stages"]["decompose"]["without_specs"] == 0
    assert manifest["stages"]["grow"]["test_calls"] == 4 and manifest["stages"]["grow"]["test_output_tokens"] > 0
    assert json.loads((Path(cfg.run_dir) / "manifest.json").read_text())["modules"]["rows"] == 4
    lines = (Path(cfg.run_dir) / "dataset.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["messages"][0]["role"] == "user"


def test_direct_decompose_and_embed_overlap_and_write_the_uninterrupted_stages(ray_local, uninterrupted, tmp_path):
    """direct, MD and embed as one pipeline (``Job.chain``): count_evens's direct answer comes late (a 504 after 2 s,
    then its retry), and MD is asked for the rows answered meanwhile; is_even's first MD answer has no spec, so it
    reaches embed after the retry. Each stage's rows and the dataset are the uninterrupted run's."""

    def no_spec_first(messages: list[dict[str, str]]) -> str:
        first_md = messages[0]["content"] == decompose.SYSTEM and len(messages) == 2
        return "I would rather not." if first_md and "Task: is_even" in messages[1]["content"] else script(messages)

    def late(messages: list[dict[str, str]], attempt: int) -> str | None:
        asked = messages[0]["content"] == direct.SYSTEM and "Task: count_evens" in messages[1]["content"]
        return "slow" if asked and not attempt else None

    with ScriptedTeacher(no_spec_first, faults=late, slow_s=2.0) as teacher:
        cfg = config(tmp_path, teacher)
        cfg.teacher = teacher.config(batch_size=1, concurrency=4, max_retries=1, base_retry_wait_s=0.05)
        manifest = distill.run(cfg)
        order = [(m[0]["content"], m[1]["content"]) for m in teacher.requests]
    answered = next(i for i, (system, user) in enumerate(order) if system == direct.SYSTEM and "count_evens" in user)
    assert min(i for i, (system, _) in enumerate(order) if system == decompose.SYSTEM) < answered
    stages = manifest["stages"]
    assert [stages[s]["rows"] for s in ("direct", "decompose", "embed")] == [4, 4, 4]
    assert stages["decompose"]["retried"] == stages["decompose-retry"]["rows"] == 1
    assert all(stages[s]["chained"] and stages[s]["wall_time_s"] >= 0 for s in ("direct", "decompose", "embed"))

    def rows(run_dir: str, stage: str, columns: list[str]) -> list[dict]:
        read = pq.read_table(Path(run_dir) / stage, columns=columns).to_pylist()
        for r in read:  # the embedder's batches differ between the runs
            r.update(
                {"query_vectors": [[round(x, 4) for x in v] for v in r["query_vectors"]]}
                if "query_vectors" in r
                else {}
            )
        return sorted(read, key=lambda r: r["id"])

    whole = uninterrupted[0].run_dir  # no retry there: its decompose.parquet is its specs
    for stage, theirs, columns in (
        ("direct.parquet", "direct.parquet", ["id", "index", "direct_response"]),
        ("specs.parquet", "decompose.parquet", ["id", "direct_response", "md_response", "specs", "md_retried"]),
        ("embed.parquet", "embed.parquet", ["id", "specs", "query_vectors"]),
    ):
        names = [RunDir(run).open_stage(s).schema.names for run, s in ((cfg.run_dir, stage), (whole, theirs))]
        assert names[0] == names[1], stage
        mine, expected = rows(cfg.run_dir, stage, columns), rows(whole, theirs, columns)
        if "md_retried" in columns:  # is_even's specs came from the retry here
            assert [r["md_retried"] for r in mine] == [r["id"] == "t/is_even" for r in mine]
            mine, expected = ([{**r, "md_response": None, "md_retried": None} for r in x] for x in (mine, expected))
        assert mine == expected, stage
    assert rows(cfg.run_dir, "dataset.parquet", ["id", "response"]) == rows(
        whole, "dataset.parquet", ["id", "response"]
    )


def test_waves_overlap_as_staleness_allows_and_insert_once(ray_local, tmp_path):
    """Staleness 1, a wave per instruction: wave k retrieves from wave k-2's commit, so its rewrite goes to the
    teacher before wave k-1 has tested its functions; novelty still reads wave k-1's commit, and every function is
    inserted once."""
    with ScriptedTeacher(script, latency_s=0.3) as teacher:
        cfg = config(tmp_path, teacher, method="amr-checked", wave_size=1)
        cfg.modules.staleness = 1
        manifest = distill.run(cfg)
        order = [(m[0]["content"], m[1]["content"]) for m in teacher.requests]
    pins = manifest["modules"]["waves"]
    start = pins[0]["version_read"]
    assert [p["version_read"] for p in pins] == [start, start, pins[0]["version_after"], pins[1]["version_after"]]
    assert [p["version_novelty"] for p in pins] == [start] + [p["version_after"] for p in pins[:3]]
    evolved = [i for i, (system, user) in enumerate(order) if system == response_evolution.SYSTEM]
    tested = [i for i, (system, _) in enumerate(order) if system == testgen.SYSTEM]
    second = next(i for i in evolved if "Task: is_even." in order[i][1])
    assert second < tested[0]  # wave 2's rewrite was asked for before wave 1's first test
    table = lancedb.connect(manifest["modules"]["uri"]).open_table("modules").to_arrow()
    assert table.num_rows == len(set(table.column("key").to_pylist())) == manifest["modules"]["rows"]
    assert sum(p["inserted"] for p in pins) == manifest["modules"]["rows"] and manifest["dataset"]["rows"] == 4


def test_a_waves_tests_run_beside_its_predecessors_and_a_function_both_propose_is_inserted_once(ray_local, tmp_path):
    """Staleness 1, a wave per instruction, both answers define add: wave 1's tests are asked while wave 0's clamp
    test is still out (its first attempt answered late with a 504), so before wave 0 inserts; add, novel to both at
    the version they retrieved from, is tested by both and inserted by wave 0 only: wave 1 finds it at its turn to
    insert."""

    def both_define_add(messages: list[dict[str, str]]) -> str:
        system, user = messages[0]["content"], messages[1]["content"]
        if system == testgen.SYSTEM:
            return script(messages)
        task = re.search(r"Task: (\w+)", user).group(1)
        if system == decompose.SYSTEM:
            return f"```python\n{function('add', body=False)}\n{function(task, body=False)}```"
        code = f"{function('add')}\n\n{function(task)}"
        heading = f"Refined.\n\n{response_evolution.HEADING}\n" if system == response_evolution.SYSTEM else ""
        return f"{heading}```python\n{code}```"

    def late(messages: list[dict[str, str]], attempt: int) -> str | None:
        tests_clamp = (
            messages[0]["content"] == testgen.SYSTEM and "Function Under Test: clamp" in messages[1]["content"]
        )
        return "slow" if tests_clamp and not attempt else None

    with ScriptedTeacher(both_define_add, faults=late, slow_s=2.0) as teacher:
        cfg = config(tmp_path, teacher, wave_size=1)
        cfg.teacher = teacher.config(max_retries=1, base_retry_wait_s=0.05)
        cfg.modules.staleness = 1
        source = tmp_path / "shared.jsonl"
        tasks = [("clamp", "assert clamp(9, 0, 3) == 3"), ("reverse_text", "assert reverse_text('xy') == 'yx'")]
        source.write_text(
            "".join(json.dumps({"id": f"t/{t}", "instruction": f"Task: {t}.", "tests": [a]}) + "\n" for t, a in tasks)
        )
        cfg.input.source = str(source)
        manifest = distill.run(cfg)
        tested = [
            re.search(r"Under Test: (\w+)", m[1]["content"]).group(1)
            for m in teacher.requests
            if m[0]["content"] == testgen.SYSTEM
        ]
    assert tested.index("reverse_text") < tested.index("clamp")  # wave 1 tested before wave 0's tests were done
    assert sorted(tested) == ["add", "add", "clamp", "reverse_text"]
    pins = manifest["modules"]["waves"]
    assert pins[1]["version_read"] == pins[0]["version_read"] < pins[1]["version_novelty"] == pins[0]["version_after"]
    growth = [pq.read_table(Path(cfg.run_dir) / "growth" / f"0000{n}.parquet").to_pylist() for n in (0, 1)]
    assert sorted((g["name"], g["outcome"]) for g in growth[0]) == [("add", "verified"), ("clamp", "verified")]
    assert sorted((g["name"], g["outcome"]) for g in growth[1]) == [("add", "known"), ("reverse_text", "verified")]
    again = next(g for g in growth[1] if g["name"] == "add")
    assert again["similarity"] == 1.0 and again["test_output_tokens"] and "earlier wave" in again["reason"]
    table = lancedb.connect(manifest["modules"]["uri"]).open_table("modules").to_arrow().to_pylist()
    assert sorted((r["name"], r["instruction_id"]) for r in table) == [
        ("add", "t/clamp"),
        ("clamp", "t/clamp"),
        ("reverse_text", "t/reverse_text"),
    ]
    assert [p["inserted"] for p in pins] == [2, 1]


@pytest.mark.timeout(300)
def test_retrieval_floor_top_k_and_novelty_threshold_reach_the_waves(ray_local, scripted, tmp_path, caplog):
    """The module settings of a run, end to end. Cosines of the specs (all-minilm-l6-v2): add~is_even 0.342,
    add_three~add 0.782, add_three~is_even 0.315, count_evens~is_even 0.650, count_evens~add 0.361. In wave 2 the
    table holds add and is_even: with 2 hits per spec and a floor of 0.35, add_three's specs keep add only and
    count_evens's keep is_even and add; add_three (0.782 to add) is no longer novel at 0.7."""
    cfg = config(tmp_path, scripted)
    cfg.modules.top_k, cfg.modules.min_similarity, cfg.modules.novelty_threshold = 2, 0.35, 0.7
    asked = len(scripted.requests)
    caplog.set_level(logging.INFO, logger="amr")
    manifest = distill.run(cfg)
    run = Path(cfg.run_dir)
    waves = pq.read_table(run / "waves" / "00001.parquet").to_pylist()
    hits = {r["id"]: [(h["name"], h["similarity"]) for h in json.loads(r["retrieved"])] for r in waves}
    assert {k: [n for n, _ in v] for k, v in hits.items()} == {
        "t/add_three": ["add"],  # is_even at 0.342 and 0.315: under the floor
        "t/count_evens": ["is_even", "add"],  # the second hit of a spec: top_k 2
    }
    assert all(similarity >= 0.35 for found in hits.values() for _, similarity in found)
    # the retrieved functions are the ones the teacher was shown
    evolve = {
        re.search(r"Task: (\w+)", m[1]["content"]).group(1): m[1]["content"].split("### Relevant Functions:")[1]
        for m in scripted.requests[asked:]
        if m[0]["content"] == response_evolution.SYSTEM
    }
    assert "return a + b" in evolve["count_evens"] and "return n % 2 == 0" not in evolve["add_three"]
    growth = pq.read_table(run / "growth" / "00001.parquet").to_pylist()
    assert sorted((g["name"], g["outcome"]) for g in growth) == [
        ("add", "known"),
        ("add_three", "known"),  # 0.782 >= 0.7
        ("count_evens", "verified"),  # 0.650 < 0.7
        ("is_even", "known"),
    ]
    assert [w["inserted"] for w in manifest["modules"]["waves"]] == [2, 1] and manifest["modules"]["rows"] == 3
    # each wave's line in the job's log says what it retrieved and grew
    log = caplog.text
    assert re.search(
        r"wave 1/2: 2 rows, 0 retrieved a function from version \d+.*; 2 new functions \(2 verified\), 2 inserted; ",
        log,
    )
    assert re.search(
        r"wave 2/2: 2 rows, 2 retrieved a function from version \d+; 4 new functions \(3 known, 1 verified\), 1 inserted; "
        r"table version \d+ \(\d+ s\)",
        log,
    )


@pytest.mark.timeout(300)
def test_restart_from_waves_removes_the_runs_own_table_and_refuses_a_shared_one(
    ray_local, scripted, uninterrupted, tmp_path
):
    cfg = config(tmp_path, scripted)
    shutil.copytree(uninterrupted[0].run_dir, cfg.run_dir)
    manifest = distill.run(cfg, restart_from="waves")
    # a fresh table: the first wave finds add and is_even novel again and inserts them (a table kept would know them)
    assert [w["inserted"] for w in manifest["modules"]["waves"]] == [2, 2] and manifest["modules"]["rows"] == 4
    assert manifest["modules"]["waves"][0]["version_read"] == uninterrupted[1]["modules"]["waves"][0]["version_read"]
    assert manifest["stages"]["direct"]["resumed"] and "resumed" not in manifest["stages"]["evolve"]
    shared = config(tmp_path / "shared", scripted)
    shared.modules.uri = str(tmp_path / "shared-table")
    for stage in ("decompose", "waves"):  # the waves and what feeds them: the shared table holds their inserts
        with pytest.raises(ConfigError, match=rf"--restart-from {stage}: .* the shared module table .*shared-table"):
            distill.run(shared, restart_from=stage)
    assert not Path(shared.run_dir).exists() and not (tmp_path / "shared-table").exists()  # refused before any work


def test_rerun_recomputes_nothing_and_duplicates_nothing(ray_local, scripted, uninterrupted, tmp_path):
    cfg = config(tmp_path, scripted)
    run = Path(cfg.run_dir)
    shutil.copytree(uninterrupted[0].run_dir, run)  # the same run, moved
    assert sorted(p.name for p in (run / "input.parquet").iterdir()) == [
        "_SUCCESS",
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    assert all(
        (run / f"{stage}.parquet" / "_SUCCESS").exists() for stage in ("direct", "decompose", "embed", "dataset")
    )
    before = pq.read_table(run / "dataset.parquet").to_pylist()
    calls = len(scripted.requests)
    (run / "waves" / "00001.parquet").unlink()  # cut off after its inserts were committed
    (run / "dataset.parquet" / "_SUCCESS").unlink()  # and the dataset cut off while being written
    manifest = distill.run(cfg)
    # only the cut-off wave again: 2 evolutions, 2 tests (novelty is judged against the pinned version)
    assert len(scripted.requests) - calls == 4
    assert manifest["modules"]["rows"] == 4 and manifest["stages"]["direct"]["resumed"]
    assert pq.read_table(Path(cfg.run_dir) / "dataset.parquet").to_pylist() == before


def test_the_ablation_without_are_reads_no_table(ray_local, scripted, tmp_path):
    # amr-no-md: tests/test_ablations.py
    no_are = distill.run(config(tmp_path / "no-are", scripted, method="amr-no-are"))
    waves = pq.read_table(Path(no_are["config"]["run_dir"]) / "waves" / "00001.parquet").to_pylist()
    assert all(json.loads(r["retrieved"]) == [] for r in waves)
    # it never reads the module table, so it neither bootstraps nor grows one
    assert no_are["modules"] == {} and "grow" not in no_are["stages"] and no_are["stages"]["evolve"]["rows"] == 4
    assert not (Path(no_are["config"]["run_dir"]) / "modules").exists()
    # with nothing retrieved, the evolved answers of add_three and count_evens call helpers they do not define, as
    # R_d does: 2 of 4 (amr, which retrieves add and is_even for them: 3 of 4)
    assert no_are["dataset"]["rows"] == 4 and no_are["dataset"]["response_accuracy"] == 0.5


def test_baselines_cot_and_ansrepair(ray_local, scripted, tmp_path):
    chain = distill.run(config(tmp_path / "cot", scripted, method="cot"))
    assert set(chain["stages"]) == {"cot"} and chain["dataset"]["response_accuracy"] == 0.75
    dataset = pq.read_table(Path(chain["config"]["run_dir"]) / "dataset.parquet").to_pylist()
    assert all(r["response"].startswith("Reasoning:") for r in dataset)
    fixed = distill.run(config(tmp_path / "ansrepair", scripted, method="ansrepair"))
    # add passes its own test, is_even gets none, add_three and count_evens fail (no helpers) and are repaired
    assert fixed["stages"]["anstest"]["verdicts"] == {"passed": 1, "no tests": 1, "failed": 2}
    assert fixed["stages"]["repair"]["rows"] == 2 and fixed["dataset"]["response_accuracy"] == 0.75
    run_dir = Path(fixed["config"]["run_dir"])
    assert sorted(pq.read_table(run_dir / "repair.parquet", columns=["id"]).column("id").to_pylist()) == [
        "t/add_three",
        "t/count_evens",
    ]
    calls = len(scripted.requests)
    assert distill.run(config(tmp_path / "ansrepair", scripted, method="ansrepair"))["dataset"] == fixed["dataset"]
    assert len(scripted.requests) == calls  # resumed: no teacher call


EVOLUTION = (response_evolution.SYSTEM, response_evolution.GATED_SYSTEM)


def _breaks_add(messages: list[dict[str, str]]) -> str:
    """The module's teacher, except that its evolved answer to the add task is wrong (R_d stays right)."""
    answer = script(messages)
    if messages[0]["content"] in EVOLUTION and "Task: add." in messages[1]["content"]:
        return answer.replace("return a + b", "return a - b")
    return answer


def test_amr_checked_keeps_r_d_where_the_evolved_answer_breaks_it(ray_local, tmp_path):
    with ScriptedTeacher(_breaks_add) as teacher:
        gated = distill.run(config(tmp_path / "gated", teacher, method="amr-gated"))
        evolved = [m for m in teacher.requests if m[0]["content"] in EVOLUTION]
        checked = distill.run(config(tmp_path / "checked", teacher, method="amr-checked"))
    # amr-gated: add and is_even, the first wave, retrieve nothing from the empty table, so they keep R_d and ARE is
    # not asked for them (with the gated prompt); add's R_d stays right
    assert gated["stages"]["evolve"]["kept_direct"] == {"nothing retrieved": 2}
    assert [m[0]["content"] for m in evolved] == [response_evolution.GATED_SYSTEM] * 2
    assert not any("Task: add." in m[1]["content"] for m in evolved)
    assert gated["dataset"]["response_accuracy"] == 0.75
    assert gated["dataset"]["sources"] == {"are": 2, "direct": 2} and gated["dataset"]["from_direct"] == 0.5
    # amr-checked evolves every row and breaks add, whose evolved answer then fails its growth test: the table gets
    # is_even only, so add_three retrieves no add and its evolved answer calls add undefined, as R_d does. The check
    # runs both answers against the teacher's own tests (SELF_TESTS): add's R_d passes and its evolved answer fails,
    # add_three's both fail, is_even has none, count_evens's R_d fails and its evolved answer passes
    assert checked["stages"]["evolve"]["kept_direct"] == {}
    assert checked["stages"]["check"]["checked_source"] == {"are": 1, "direct": 3}
    assert checked["stages"]["check"]["are_self_test_status"] == {"failed": 2, "passed": 1, "no tests": 1}
    assert checked["dataset"]["sources"] == {"are": 1, "direct": 3}
    rows = pq.read_table(Path(checked["config"]["run_dir"]) / "check.parquet").to_pylist()
    assert {r["id"]: r["checked_source"] for r in rows} == {
        "t/add": "direct",
        "t/is_even": "direct",
        "t/add_three": "direct",
        "t/count_evens": "are",
    }
    assert checked["dataset"]["response_accuracy"] == 0.5  # add_three fails; count_evens's own test is wrong on purpose


def test_amr_checked_resamples_the_direct_answer_where_no_answer_passes(ray_local, tmp_path):
    answered = []

    def wrong_twice(messages: list[dict[str, str]]) -> str:
        """add's evolved answer is wrong (``_breaks_add``), and so are its first two direct answers: R_d and the
        first resample."""
        answer = _breaks_add(messages)
        if messages[0]["content"] == direct.SYSTEM and "Task: add." in messages[1]["content"]:
            answered.append(answer)
            return answer.replace("return a + b", "return a * b") if len(answered) < 3 else answer
        return answer

    with ScriptedTeacher(wrong_twice) as teacher:
        cfg = config(tmp_path, teacher, method="amr-checked")
        cfg.check.resamples = 3
        manifest = distill.run(cfg)
        add_asked = [
            p
            for m, p in zip(teacher.requests, teacher.parameters)
            if m[0]["content"] == direct.SYSTEM and "Task: add." in m[1]["content"]
        ]
        calls = len(teacher.requests)
        assert distill.run(cfg)["dataset"] == manifest["dataset"] and len(teacher.requests) == calls  # resumed
    # add and add_three fail the teacher's tests with both answers (add_three's evolved answer had no add to retrieve:
    # the broken one failed its growth test); add's round-1 sample fails, its round-2 sample passes; add_three's
    # samples, without their helper, never do
    assert manifest["stages"]["check"]["checked_source"] == {"are": 1, "direct": 3}
    assert manifest["stages"]["resample"] == {
        "rounds": [{"asked": 2, "passed": 0}, {"asked": 2, "passed": 1}, {"asked": 1, "passed": 0}],
        "resolved": 1,
        "stopped": "rounds",
    }
    assert [(p["temperature"], p["top_p"], p.get("seed")) for p in add_asked] == [
        (0.0, 1.0, None),  # R_d, greedy
        (0.8, 0.95, 1),
        (0.8, 0.95, 2),
    ]
    run_dir = Path(manifest["config"]["run_dir"])
    final = {r["id"]: r for r in pq.read_table(run_dir / "dataset.parquet").to_pylist()}
    assert "return a + b" in final["t/add"]["response"] and final["t/add"]["tests_passed"]
    assert manifest["dataset"]["rows"] == 4 and manifest["dataset"]["response_accuracy"] == 0.5


def test_direct_checked_resamples_r_d_to_a_teacher_token_budget(ray_local, scripted, tmp_path):
    cfg = config(tmp_path, scripted, method="direct-checked")
    cfg.check.resamples = 0
    tested = distill.run(cfg)  # R_d against the teacher's asserts, nothing resampled
    # add passes its asserts, is_even has none, add_three and count_evens fail theirs (R_d lacks its helper) and
    # fail them again in every sample: resampling goes on until the budget stops it
    assert tested["stages"]["check"]["checked_source"] == {"direct": 4}
    assert "are_self_test_status" not in tested["stages"]["check"]
    assert tested["stages"]["resample"] == {"rounds": [], "resolved": 0, "stopped": "rounds"}
    spent = teacher_cost(tested["stages"])["tokens"]
    asked = [m[1]["content"] for m in scripted.requests if m[0]["content"] == repair.ASSERTS_SYSTEM]
    assert "### Solution" not in asked[-1]  # asserts from the question alone
    for budget, rounds in ((spent, 0), (spent + 1, 1)):
        cfg.check.token_budget = budget
        manifest = distill.run(cfg, restart_from="resample")
        resample = manifest["stages"]["resample"]
        assert resample["rounds"] == [{"asked": 2, "passed": 0}] * rounds
        assert (resample["stopped"], resample["token_budget"]) == ("token budget", budget)
        assert teacher_cost(manifest["stages"])["tokens"] >= budget
    assert manifest["dataset"]["sources"] == {"direct": 4} and manifest["dataset"]["from_direct"] == 1.0


def test_amr_modules_bootstrap_fills_a_table_once(ray_local, scripted, tmp_path):
    from typer.testing import CliRunner

    from jobs.cli import app

    path = tmp_path / "seed.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path, scripted).model_dump(mode="json")))
    result = CliRunner().invoke(app, ["modules", "bootstrap", "--config", str(path), "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert "bootstrap: 2 verified; 2 inserted (100% of the new ones verified)" in result.output
    assert "teacher: 4 calls (2 helpers, 2 tests)" in result.output and ": 2 modules" in result.output
    calls = len(scripted.requests)
    again = CliRunner().invoke(app, ["modules", "bootstrap", "--config", str(path), "--limit", "2"])
    assert ": 2 modules" in again.output and len(scripted.requests) == calls  # resumed
    assert (
        "bootstrap_limit is 0"
        in CliRunner()
        .invoke(app, ["modules", "bootstrap", "--config", str(path), "--set", "modules.bootstrap_limit=0"])
        .output
    )


def test_the_lease_is_checked_before_each_insert(ray_local, tmp_path):
    taken = []

    def taken_over_at_the_first_test(messages):  # another job takes the table's lease while wave 1 grows
        if messages[0]["content"] == testgen.SYSTEM and not taken:
            lease = Path(cfg.run_dir) / "modules" / "modules.lease.json"
            lease.write_text(json.dumps({**json.loads(lease.read_text()), "holder": "runs/other"}))
            taken.append(lease)
            time.sleep(1.0)  # 20 of the job's heartbeats: it notices the lease is no longer its own
        return script(messages)

    with ScriptedTeacher(taken_over_at_the_first_test) as teacher:
        cfg = config(tmp_path, teacher)
        cfg.modules.lease_ttl_s = 0.2
        with pytest.raises(LeaseError, match="this job's lease was taken over by another job"):
            distill.run(cfg)
    assert taken and lancedb.connect(str(Path(cfg.run_dir) / "modules")).open_table("modules").count_rows() == 0
    assert not (Path(cfg.run_dir) / "waves" / "00000.parquet").exists()


def test_the_run_directory_and_table_on_an_object_store(ray_local, scripted, s3_server, tmp_path):
    uri = f"s3://{s3_server['bucket']}/runs/{tmp_path.name}"
    cfg = config(tmp_path, scripted, run_dir=uri)
    manifest = distill.run(cfg)
    assert manifest["modules"]["uri"] == f"{uri}/modules" and manifest["modules"]["rows"] == 4
    assert manifest["dataset"]["response_accuracy"] == 0.75 and manifest["dataset"]["path"] == f"{uri}/dataset.parquet"
    run = RunDir(uri)
    assert run.read_json("manifest.json")["dataset"] == manifest["dataset"] and run.exists("waves/00001.json")
    assert len(run.read_text("dataset.jsonl").splitlines()) == 4
    calls = len(scripted.requests)
    assert distill.run(cfg)["dataset"] == manifest["dataset"] and len(scripted.requests) == calls  # resumed


def start_job(cfg: DistillConfig, path: Path) -> subprocess.Popen:
    """``cfg`` written to ``path`` and run as `python -m jobs.distill` in a session of its own, with a Ray of its own
    (``os.killpg`` of its pid kills both)."""
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.distill", "--config", str(path)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RAY_ADDRESS": ""},
    )


def test_killed_job_resumes_to_the_uninterrupted_result(ray_local, scripted, uninterrupted, tmp_path):
    killed = config(tmp_path / "killed", scripted)
    killed.modules.upkeep_every = 1  # the table's upkeep after every wave: the cut-off wave's pinned version stays
    job = start_job(killed, tmp_path / "killed.yaml")
    done = Path(killed.run_dir) / "waves" / "00000.parquet"
    deadline = time.monotonic() + 300
    while not done.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)  # the job and the Ray it started, mid-run
    job.wait()
    assert done.exists() and not (Path(killed.run_dir) / "dataset.parquet").exists()
    resumed = distill.run(killed)
    whole = uninterrupted[1]
    read = lambda m: pq.read_table(Path(m["config"]["run_dir"]) / "dataset.parquet").to_pylist()  # noqa: E731
    assert read(resumed) == read(whole)
    assert resumed["modules"]["rows"] == whole["modules"]["rows"] == 4
    assert [w["inserted"] for w in resumed["modules"]["waves"]] == [w["inserted"] for w in whole["modules"]["waves"]]


def test_an_empty_table_is_bootstrapped_first_from_bootstrap_from(ray_local, scripted, tmp_path):
    seeds = tmp_path / "seeds.jsonl"  # other instructions than the input's: modules.bootstrap_from
    tasks = ("Task: add. A seed from elsewhere.", "Task: is_even. Another seed.", "Task: add. Past the limit.")
    seeds.write_text("".join(json.dumps({"id": f"s/{i}", "instruction": t}) + "\n" for i, t in enumerate(tasks)))
    cfg = config(tmp_path, scripted)
    cfg.modules.bootstrap_from, cfg.modules.bootstrap_limit = str(seeds), 2
    asked = len(scripted.requests)
    manifest = distill.run(cfg)
    seeded = [m[1]["content"] for m in scripted.requests[asked:] if m[0]["content"] == bootstrap.SYSTEM]
    assert [t for t in tasks if any(t in m for m in seeded)] == list(tasks[:2]) and len(seeded) == 2
    assert manifest["stages"]["bootstrap"]["inserted"] == 2  # clamp and reverse_text, the script's helpers
    assert manifest["stages"]["bootstrap"]["candidates"] == {"verified": 2}
    assert manifest["modules"]["waves"][0]["version_read"] > 1 and manifest["modules"]["rows"] == 6
    assert [w["inserted"] for w in manifest["modules"]["waves"]] == [2, 2]  # the bootstrap rows are not the waves'
    again = distill.run(cfg)  # resumed: bootstrapping is not repeated
    assert again["stages"]["bootstrap"]["resumed"] and again["modules"]["rows"] == 6


@pytest.mark.timeout(300)
def test_a_rerun_with_other_settings_stops_and_restart_from_recomputes(ray_local, scripted, tmp_path):
    cfg = config(tmp_path, scripted, method="direct")
    distill.run(cfg)
    calls = len(scripted.requests)
    changed = cfg.model_copy(deep=True)
    changed.teacher.sampling.temperature = 0.7
    with pytest.raises(
        ConfigError,
        match=r"its direct stage was made with other settings \(teacher.sampling: .*"
        r"'temperature': 0.0.* -> .*'temperature': 0.7.*--restart-from direct",
    ):
        distill.run(changed)
    assert len(scripted.requests) == calls  # stopped before any work
    other_teacher = cfg.model_copy(deep=True)
    other_teacher.teacher.model = "qwen2.5-coder-0.5b-instruct"
    with pytest.raises(
        ConfigError, match=r"its direct stage .*teacher.model: 'scripted' -> 'qwen2.5-coder-0.5b-instruct'"
    ):
        distill.run(other_teacher)
    other_method = cfg.model_copy(update={"method": "cot"})  # the dataset is direct's: not silently replaced
    with pytest.raises(
        ConfigError, match=r"its dataset stage was made with other settings \(method: 'direct' -> 'cot'"
    ):
        distill.run(other_method)
    with pytest.raises(
        ConfigError, match=r"--restart-from decompose: not a stage of method direct: one of input, direct, dataset"
    ):
        distill.run(changed, restart_from="decompose")
    again = distill.run(changed, restart_from="direct")
    assert len(scripted.requests) == calls + 4 and again["config"]["teacher"]["sampling"]["temperature"] == 0.7
    assert again["stages"]["direct"]["rows"] == 4 and "resumed" not in again["stages"]["direct"]
    recorded = json.loads((Path(cfg.run_dir) / "fingerprints.json").read_text())
    assert list(recorded) == ["input", "direct", "dataset"]
    assert recorded["direct"]["inputs"]["teacher.sampling"]["temperature"] == 0.7
    distill.run(changed)  # the same settings: resumed, nothing asked again
    assert len(scripted.requests) == calls + 4


def test_a_stage_made_in_an_older_row_format_is_not_read_back(tmp_path, monkeypatch):
    cfg = DistillConfig(run_dir=str(tmp_path / "run"), method="amr-checked")
    chosen, run_dir = distill.method(cfg.method), RunDir(cfg.run_dir)
    for stage in fingerprints.stages(chosen):
        fingerprints.record(run_dir, cfg, chosen, stage)
    fingerprints.check(run_dir, cfg, chosen)
    monkeypatch.setitem(fingerprints.FORMATS, "check", fingerprints.FORMATS["check"] + 1)
    with pytest.raises(ConfigError, match=r"its check stage was made with other settings \(format: 2 -> 3\)"):
        fingerprints.check(run_dir, cfg, chosen)


@pytest.mark.timeout(400)
def test_a_second_job_on_a_table_in_use_stops_and_the_table_keeps_no_duplicates(ray_local, tmp_path):
    evolving, release = threading.Event(), threading.Event()

    def held_at_are(messages):  # the first job holds its lease in its first wave until released
        if messages[0]["content"] == response_evolution.SYSTEM:
            evolving.set()
            release.wait(300)
        return script(messages)

    table = str(tmp_path / "shared-table")
    with ScriptedTeacher(held_at_are) as teacher:
        first, second = (config(tmp_path / name, teacher) for name in ("a", "b"))
        first.modules.uri = second.modules.uri = table
        done: dict = {}
        job = threading.Thread(target=lambda: done.update(distill.run(first)))
        job.start()
        assert evolving.wait(240)
        asked = len(teacher.requests)
        with pytest.raises(LeaseError, match=rf"the module table is in use by {re.escape(first.run_dir)} \(host"):
            distill.run(second)
        assert len(teacher.requests) == asked  # stopped before asking the teacher anything
        release.set()
        job.join(300)
        assert done["modules"]["rows"] == 4
        distill.run(second)  # the table free again: the same functions are known, none added twice
    keys = lancedb.connect(table).open_table("modules").to_arrow()["key"].to_pylist()
    assert len(keys) == len(set(keys)) == 4


@pytest.mark.timeout(400)
def test_a_rerun_after_an_outage_asks_again_for_the_failed_rows_only(ray_local, uninterrupted, tmp_path):
    outage = {"on": True}

    def down_for_some(messages, attempt):  # direct fails for add_three, ARE for count_evens, while the outage lasts
        user, system = messages[-1]["content"], messages[0]["content"]
        if outage["on"] and (
            ("Task: add_three" in user and system not in (decompose.SYSTEM, response_evolution.SYSTEM))
            or ("Task: count_evens" in user and system == response_evolution.SYSTEM)
        ):
            return "503"
        return None

    with ScriptedTeacher(script, faults=down_for_some) as teacher:
        cfg = config(tmp_path, teacher)
        cfg.teacher = teacher.config(max_retries=1, base_retry_wait_s=0.05)
        # every wave removes old versions, but not one a wave with failed rows pinned; strict order: wave 1 reads
        # the version wave 0 committed
        cfg.modules.upkeep_every, cfg.modules.staleness = 1, 0
        first = distill.run(cfg)
        pinned = [w["version_read"] for w in first["modules"]["waves"]]
        novelty = first["modules"]["waves"][1]["version_novelty"]
        assert _versions(cfg) >= {pinned[1], novelty} and pinned[0] not in _versions(cfg)  # wave 0: never again
        assert sum(w["upkeep"]["removed_versions"] for w in first["modules"]["waves"]) >= 1  # in the waves' pins
        assert first["stages"]["direct"]["errors"] == 1 and first["stages"]["evolve"]["errors"] == 1
        for stage in ("direct", "evolve"):  # two attempts each: one retried, the last the row's error
            assert first["stages"][stage]["retries"] == first["stages"][stage]["errors_by_kind"] == {"HTTP 503": 1}
        assert first["dataset"]["rows"] == 3  # count_evens (no final answer) dropped
        outage["on"] = False
        asked = len(teacher.requests)
        again = distill.run(cfg)
        tasks = [re.search(r"Task: (\w+)", m[-1]["content"]) for m in teacher.requests[asked:]]
        # direct, MD and ARE once for add_three, ARE once for count_evens; plus tests for their new functions
        assert sorted(t.group(1) for t in tasks if t) == ["add_three", "add_three", "add_three", "count_evens"]
    db = ModuleDB.open(str(Path(cfg.run_dir) / "modules"))
    assert not {pinned[1], novelty} & {t["version"] for t in db.table.tags.list().values()}
    db.upkeep(keep_from=db.version, force=True)  # the next job's upkeep
    assert not {pinned[1], novelty} & _versions(cfg)  # wave 1 has no failed row left: unpinned, its versions go
    direct, evolve = again["stages"]["direct"], again["stages"]["evolve"]
    assert (direct["asked_again"], direct["recovered"], direct["errors"]) == (1, 1, 0)
    assert again["stages"]["decompose"]["rows"] == 4 and evolve["errors"] == 0
    assert [w.get("asked_again") for w in again["modules"]["waves"]] == [None, 2]
    whole = pq.read_table(Path(uninterrupted[0].run_dir) / "dataset.parquet").to_pylist()
    resumed = pq.read_table(Path(cfg.run_dir) / "dataset.parquet").to_pylist()
    assert [(r["id"], r["response"]) for r in resumed] == [(r["id"], r["response"]) for r in whole]


def _versions(cfg: DistillConfig) -> set[int]:
    """The versions of a run's module table that can still be read."""
    return {v["version"] for v in ModuleDB.open(str(Path(cfg.run_dir) / "modules")).table.list_versions()}
