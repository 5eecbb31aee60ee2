"""The benchmarks' scripted teacher content and instructions: answers that make the pipeline do its real work (specs
that parse, functions the sandbox verifies, tests that pass), for ``bench/pipeline.py``, ``bench/scale.py`` and the
simulated cluster's modelled engine (``bench/simcluster``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from amr.prompts import decompose, response_evolution, testgen


def script(messages: list[dict[str, str]]) -> str:
    """Per instruction (its number in the text), two small functions: a helper and the answer, in the direct and the
    evolved answer alike, so that bootstrapping fills the module table and every wave retrieves, evolves and grows
    it."""
    system, user = messages[0]["content"], messages[1]["content"]
    if system == testgen.SYSTEM:
        name = re.search(r"### Function Under Test: (\w+)", user).group(1)
        return f"```python\ndef test_{name}():\n    assert {name}(3) == {name}(3)\n```"
    n = re.search(r"Task (\d+)", user).group(1)
    helper = f'def scale_{n}(x: int) -> int:\n    """Multiply x by {n}."""\n    return x * {n}\n'
    answer = (
        f'def solve_{n}(x: int) -> int:\n    """Task {n}: scale x by {n} and add one."""\n    return scale_{n}(x) + 1\n'
    )
    if system == decompose.SYSTEM:
        return (
            "```python\n"
            + helper.replace(f"return x * {n}", "...")
            + "\n"
            + answer.split("    return")[0]
            + "    ...\n```"
        )
    if system == response_evolution.SYSTEM:
        return f"```python\n{helper}\n\n{answer}```"
    return f"```python\n{helper}\n\n{answer}```"  # the direct answer: bootstrapping verifies both functions


def instructions(count: int, prefix: str = "b", mbpp: bool = True) -> Iterator[dict]:
    """``count`` instruction records the script answers: task ``i`` (id ``prefix/i``) is an MBPP train problem's text
    (cycled; ``mbpp=False``: a one-line task) under ``Task i.``, with the test its scripted answer passes."""
    from amr.data import mbpp_train

    texts = [r["instruction"] for r in mbpp_train()] if mbpp else ["Scale a number."]
    for i in range(count):
        yield {
            "id": f"{prefix}/{i}",
            "instruction": f"Task {i}. {texts[i % len(texts)]}",
            "tests": [f"assert solve_{i}(1) == {i + 1}"],
        }


def write_instructions(path: Path, count: int, prefix: str = "b", mbpp: bool = True) -> Path:
    """``instructions`` as a JSONL file (streamed: any count)."""
    with path.open("w") as f:
        for record in instructions(count, prefix, mbpp):
            f.write(json.dumps(record) + "\n")
    return path
