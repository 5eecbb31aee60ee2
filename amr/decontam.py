"""Decontamination of instructions against the evaluation benchmarks (HumanEval(+), MBPP test/validation, MBPP+).

Three checks that need no LLM, strongest first; a row is flagged by the first that fires:

- ``exact``: a benchmark prompt or solution is contained in the instruction, after normalisation (lower
  case, words only): every one of its word n-grams occurs, or, for a text shorter than n words, the whole text.
- ``ngram``: the instruction shares at least ``min_ngram_matches`` word n-grams with one benchmark text (the
  n-gram overlap of the bigcode and GPT-3 decontaminations; n = decontam.ngram, 13 by default).
- ``embedding``: the cosine of the instruction's problem statement to a benchmark's is at least
  ``embedding_threshold`` (a reworded problem keeps its meaning, not its words). Statements are compared
  without their tests and examples (assert lines, doctests): they pull unrelated problems together.

The paper's own method, an LLM judging the top-5 embedding neighbours of each benchmark item, is an
option on top (``jobs/instructions.py``). Pure functions and one index; Ray and models live in the job.
"""

from __future__ import annotations

import ast
import gzip
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from amr.data import HUMANEVAL_PLUS, MBPP, MBPP_PLUS_V010, MBPP_PLUS_V020

BENCHMARKS = ("humaneval", "mbpp", "mbpp-plus")
MBPP_EVAL_IDS = range(1, 601)  # prompt (1-10), test (11-510) and validation (511-600); train is 601-974
WORD = re.compile(r"[a-z0-9_]+")


def words(text: str) -> list[str]:
    """The normalised word sequence: lower case, letters, digits and underscores only."""
    return WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> set[str]:
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def problem_statement(text: str) -> str:
    """The natural-language problem: without assert lines, MBPP's test header, doctest examples."""
    text = re.split(r"\n\s*(?:>>>|For example|Example)", text, maxsplit=1)[0]
    lines = [
        line
        for line in text.splitlines()
        if not line.strip().startswith("assert ") and line.strip() != "Your code should pass this test:"
    ]
    return "\n".join(lines).strip()


def _docstring(prompt: str, entry_point: str) -> str:
    """HumanEval's problem statement: the entry point's docstring (the prompt is code)."""
    for node in ast.walk(ast.parse(prompt)):
        if isinstance(node, ast.FunctionDef) and node.name == entry_point:
            return ast.get_docstring(node) or prompt
    return prompt


def benchmark_items(names: Iterable[str] = BENCHMARKS) -> list[dict[str, str]]:
    """Benchmark problems as ``{id, prompt, solution, problem}`` (``problem``: the statement alone): HumanEval+ v0.1.10, MBPP ids 1-600 (prompt, test and
    validation splits), MBPP+ v0.1.0 and v0.2.0 (drawn from every MBPP split, train included)."""
    items: dict[str, dict[str, str]] = {}
    names = set(names)
    if unknown := names - set(BENCHMARKS):
        raise ValueError(f"unknown benchmark(s) {sorted(unknown)}; known: {', '.join(BENCHMARKS)}")
    if "humaneval" in names:
        for task in _jsonl_gz(HUMANEVAL_PLUS):
            items[task["task_id"]] = {
                "id": task["task_id"],
                "prompt": task["prompt"],
                "solution": task["canonical_solution"],
                "problem": problem_statement(_docstring(task["prompt"], task["entry_point"])),
            }
    if "mbpp" in names:
        for row in map(json.loads, MBPP.read_text().splitlines()):
            if row["task_id"] in MBPP_EVAL_IDS:
                items[f"mbpp/{row['task_id']}"] = {
                    "id": f"mbpp/{row['task_id']}",
                    "prompt": row["text"],
                    "solution": row["code"],
                    "problem": row["text"],
                }
    if "mbpp-plus" in names:
        for path in (MBPP_PLUS_V010, MBPP_PLUS_V020):
            for task in _jsonl_gz(path):
                prompt = problem_statement(task["prompt"].strip().strip('"'))
                items[f"{task['task_id']}+"] = {
                    "id": task["task_id"],
                    "prompt": prompt,
                    "solution": task["canonical_solution"],
                    "problem": prompt,
                }
    return list(items.values())


def _jsonl_gz(path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


@dataclass
class NgramIndex:
    """Word n-grams of benchmark texts (prompts and solutions), for exact and n-gram overlap checks."""

    n: int
    grams: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))  # n-gram -> texts
    short: dict[int, dict[str, set[int]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(set)))
    sizes: list[int] = field(default_factory=list)  # distinct n-grams per text (1 for a short one)
    owners: list[str] = field(default_factory=list)  # text -> benchmark id

    @classmethod
    def build(cls, items: list[dict[str, str]], n: int) -> NgramIndex:
        index = cls(n)
        for item in items:
            for text in (item["prompt"], item["solution"]):
                tokens = words(text)
                if not tokens:
                    continue
                number = len(index.owners)
                index.owners.append(item["id"])
                if len(tokens) < n:
                    index.short[len(tokens)][" ".join(tokens)].add(number)
                    index.sizes.append(1)
                else:
                    grams = ngrams(tokens, n)
                    for gram in grams:
                        index.grams[gram].add(number)
                    index.sizes.append(len(grams))
        return index

    def match(self, text: str, min_matches: int) -> dict[str, Any] | None:
        """The strongest overlap of ``text`` with one benchmark text: ``exact`` when the whole benchmark text
        is contained, ``ngram`` when at least ``min_matches`` n-grams are shared; None when neither."""
        tokens = words(text)
        hits: Counter[int] = Counter()
        for gram in ngrams(tokens, self.n):
            hits.update(self.grams.get(gram, ()))
        for length, table in self.short.items():
            for gram in ngrams(tokens, length):
                hits.update(table.get(gram, ()))
        if not hits:
            return None
        # the most covered benchmark text, then the most shared n-grams; ties go to the earlier benchmark item
        number, count = max(hits.items(), key=lambda kv: (kv[1] / self.sizes[kv[0]], kv[1], -kv[0]))
        if count == self.sizes[number]:
            return {"check": "exact", "benchmark_id": self.owners[number], "score": 1.0}
        number, count = max(hits.items(), key=lambda kv: (kv[1], -kv[0]))
        if count >= min_matches and self.sizes[number] > 1:
            return {"check": "ngram", "benchmark_id": self.owners[number], "score": count / self.sizes[number]}
        return None


def nearest(vectors: np.ndarray, benchmark_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For each instruction vector, the indices and cosines (unit vectors) of its ``k`` most similar benchmark
    statements, most similar first. Brute force: the benchmarks are a few thousand fixed items."""
    similarity = vectors @ benchmark_vectors.T
    k = min(k, similarity.shape[1])
    top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(-similarity, top, axis=1).argsort(axis=1)
    top = np.take_along_axis(top, order, axis=1)
    return top, np.take_along_axis(similarity, top, axis=1)


EVAL_BENCHMARKS = {"humaneval": "humaneval", "mbpp": "mbpp-plus"}
"""An evaluation dataset (``amr eval --dataset``) -> the benchmark items it scores on."""


def eval_overlaps(
    records: Iterable[dict[str, Any]], datasets: Iterable[str], n: int = 13, min_matches: int = 1
) -> list[dict[str, Any]]:
    """The instructions that are tasks of the evaluation ``datasets``: ``{id, check, benchmark_id, score}`` each,
    by task id (``mbpp/602`` is MBPP+'s ``Mbpp/602``), then by the exact and n-gram checks on the instruction."""
    items = benchmark_items({EVAL_BENCHMARKS[d] for d in datasets})
    ids = {item["id"].lower(): item["id"] for item in items}
    index = NgramIndex.build(items, n)
    found = []
    for record in records:
        if (same := ids.get(str(record["id"]).lower())) is not None:
            found.append({"id": record["id"], "check": "task id", "benchmark_id": same, "score": 1.0})
        elif hit := index.match(record["instruction"], min_matches):
            found.append({"id": record["id"], **hit})
    return found
