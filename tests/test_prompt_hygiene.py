"""The prompts hold no benchmark problem: the project's own decontamination (``amr.decontam``: exact, n-gram and
embedding checks with the default ``DecontamConfig`` thresholds and embedding model, as ``amr instructions
seed`` runs them) finds none of HumanEval+, MBPP (test, validation, prompt and, here, train) or MBPP+ in any text
the teacher or the student is shown: every string of every module in ``amr.prompts`` (system prompts and their
one-shot examples, piece by piece), the user messages the builders add, and evaluation's prefixes.

A one-shot example that is a benchmark problem shows the teacher that problem's answer in every request; MBPP's
train problems are the built-in instructions, so an example copied from one of them is checked too."""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import pkgutil
import re
from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest

import amr.prompts
from amr.config import DecontamConfig, EmbeddingConfig
from amr.data import MBPP, MBPP_TRAIN_IDS
from amr.decontam import NgramIndex, nearest, problem_statement
from amr.embeddings import Embedder
from amr.prompts import instruction_evolution

pytestmark = pytest.mark.timeout(300)

PROMPT_MODULES = sorted(m.name for m in pkgutil.iter_modules(amr.prompts.__path__))

# every builder's placeholder arguments (one call per tuple): the user message it adds around them is prompt text too
CALLS: dict[str, list[tuple]] = {
    "bootstrap.messages": [("{instruction}",)],
    "cot.messages": [("{instruction}",)],
    "decompose.messages": [("{instruction}", "{draft}")],
    "decompose.retry_messages": [("{instruction}", "{draft}", "{previous answer}")],
    "direct.messages": [("{instruction}",)],
    "instruction_evolution.messages": [("{instruction}", h) for h in instruction_evolution.HEURISTICS],
    "judge.messages": [("{benchmark}", "{instruction}")],
    "repair.tests_messages": [("{instruction}", "{solution}")],
    "repair.asserts_messages": [("{instruction}",)],
    "repair.repair_messages": [("{instruction}", "{solution}", "{failure}")],
    "response_evolution.messages": [("{instruction}", ["{spec}"], ["{function}"])],
    "response_evolution.gated_messages": [("{instruction}", ["{spec}"], ["{function}"])],
    "selfinstruct.messages": [(["{example 1}", "{example 2}"],)],
    "testgen.messages": [("{code}", "{name}")],
}


def _m(name: str) -> ModuleType:
    return importlib.import_module(f"amr.prompts.{name}")


def builders() -> dict[str, Callable[..., list[dict[str, str]]]]:
    """The prompt builders: each module's functions whose name ends in ``messages``, as ``module.function``."""
    return {
        f"{name}.{f}": v
        for name in PROMPT_MODULES
        for f, v in vars(_m(name)).items()
        if f.endswith("messages") and inspect.isfunction(v) and v.__module__ == f"amr.prompts.{name}"
    }


def module_texts(module: ModuleType, prefix: str) -> dict[str, str]:
    """The module's string constants (a dict's string values too), named ``prefix.NAME`` (``prefix.NAME[key]``)."""
    texts = {}
    for name, value in vars(module).items():
        if name.startswith("__") or inspect.ismodule(value):
            continue
        if isinstance(value, str):
            texts[f"{prefix}.{name}"] = value
        elif isinstance(value, dict):
            texts.update({f"{prefix}.{name}[{k!r}]": v for k, v in value.items() if isinstance(v, str)})
    return texts


def pieces(text: str) -> list[str]:
    """The text and its parts: what lies between headings (one example's question, draft, answer...), its
    paragraphs, code blocks and numbered list items. The embedding check compares problem statements: a whole
    system prompt is no statement, its example question is."""
    parts = [
        text,
        *re.split(r"^#+ .*$", text, flags=re.M),
        *re.split(r"\n\s*\n", text),
        *re.findall(r"```\w*\n(.*?)```", text, flags=re.S),
        *re.findall(r"^\d+\. (.+)$", text, flags=re.M),
    ]
    return list(dict.fromkeys(p.strip() for p in parts if p.strip()))


def prompt_texts(modules: dict[str, ModuleType] | None = None) -> dict[str, str]:
    """Every prompt text, by name: ``modules`` (default: each of ``amr.prompts``, imported) by their short names,
    the builders' user messages (with the default modules) and evaluation's prompt prefixes."""
    texts = {}
    for short, module in (modules or {name: _m(name) for name in PROMPT_MODULES}).items():
        texts.update(module_texts(module, short))
    if modules is None:
        for name, build in builders().items():
            for args in CALLS.get(name, []):
                texts.update(
                    {f"{name}{args}[{i}]": m["content"] for i, m in enumerate(build(*args)) if m["role"] != "system"}
                )
        from eval import generate

        texts.update({f"eval.generate.{k}": getattr(generate, k) for k in ("INSTRUCTION_PREFIX", "RESPONSE_PREFIX")})
        texts["eval.generate.messages()"] = "\n".join(m["content"] for m in generate.messages("{prompt}"))
    return texts


def reference_items(config: DecontamConfig) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The decontamination's benchmark items (``config.benchmarks``), and MBPP's train problems 601-974."""
    from amr.decontam import benchmark_items

    train = [json.loads(line) for line in MBPP.read_text().splitlines()]
    return benchmark_items(config.benchmarks), [
        {"id": f"mbpp/{r['task_id']}", "prompt": r["text"], "solution": r["code"], "problem": r["text"]}
        for r in train
        if r["task_id"] in MBPP_TRAIN_IDS
    ]


@functools.cache
def checker() -> tuple[DecontamConfig, list[dict[str, str]], NgramIndex, Embedder, np.ndarray]:
    """What the checks compare with, built once for the module's tests: the default ``DecontamConfig``, the reference
    items, their n-gram index, the default embedder and the items' vectors. The benchmark items' vectors are the
    decontamination stage's (``_benchmark_vectors``: its cache entry), MBPP train's are cached apart."""
    from amr.stages.decontaminate import _benchmark_vectors

    config, embedding = DecontamConfig(), EmbeddingConfig()
    parts = reference_items(config)
    embedder = Embedder(embedding.model, None, embedding.batch_size)
    vectors = np.concatenate(
        [_benchmark_vectors(embedder, embedder.path, [item["problem"] for item in part]) for part in parts]
    )
    items = [*parts[0], *parts[1]]
    return config, items, NgramIndex.build(items, config.ngram), embedder, vectors


def contamination(texts: dict[str, str]) -> list[str]:
    """One line per piece of a text that a check flags: ``NAME: check BENCHMARK_ID (score): piece``. The checks are
    ``amr.decontam``'s, with the default thresholds, in its order: exact and n-gram on the words, else the embedding
    of the problem statement."""
    config, items, index, embedder, vectors = checker()
    named = [(name, piece) for name, text in texts.items() for piece in pieces(text)]
    found: dict[int, tuple[str, str, float]] = {}
    for i, (_, piece) in enumerate(named):
        if hit := index.match(piece, config.min_ngram_matches):
            found[i] = (hit["check"], hit["benchmark_id"], hit["score"])
    todo = [i for i in range(len(named)) if i not in found]
    top, cosines = nearest(embedder.encode([problem_statement(named[i][1]) for i in todo]), vectors, 1)
    for i, j, cosine in zip(todo, top[:, 0].tolist(), cosines[:, 0].tolist()):
        if cosine >= config.embedding_threshold:
            found[i] = ("embedding", items[j]["id"], cosine)
    return [
        f"{named[i][0]}: {check} {benchmark} ({score:.3f}): {' '.join(named[i][1].split())[:160]}"
        for i, (check, benchmark, score) in sorted(found.items())
    ]


def test_every_prompt_text_is_collected():
    texts = prompt_texts()
    missing = set(builders()) - set(CALLS)
    assert not missing, f"prompt builders without placeholder arguments in CALLS: {sorted(missing)}"
    for name in (
        "selfinstruct.SYSTEM",
        "judge.SYSTEM",
        "repair.TESTS_SYSTEM",
        "repair.ASSERTS_SYSTEM",
        "repair.REPAIR_SYSTEM",
        "response_evolution.GATED_SYSTEM",
        "instruction_evolution.HEURISTICS['misdirection']",
        "eval.generate.INSTRUCTION_PREFIX",
    ):
        assert texts[name].strip(), name
    assert {p for p in pieces(texts["cot.SYSTEM"]) if p.startswith("Write a function")}  # the example's question alone


def test_the_check_finds_a_planted_benchmark_problem():
    """The check itself: a benchmark problem hidden in an example, verbatim, reworded, and MBPP train's."""
    planted = {
        "verbatim": "### Python Question:\nWrite a function to find the shared elements from the given two "
        "lists.\n\n### Response:\n```python\ndef f(a, b):\n    return [x for x in a if x in b]\n```",
        "reworded": "## Example\n### Problem:\nWrite a function to find the shared elements of the two given lists.",
        "train": "1. Write a function to find the longest chain which can be formed from the given set of pairs.",
        "clean": "### Python Question:\nWrite a function to wrap a paragraph at a column width.",
    }
    found = contamination(planted)
    assert any(f.startswith("verbatim: exact Mbpp/2") for f in found), found
    assert any(f.startswith("reworded: embedding Mbpp/2") for f in found), found
    assert any(f.startswith("train: exact mbpp/601") for f in found), found
    assert not [f for f in found if f.startswith("clean")], found


def test_no_prompt_text_is_a_benchmark_problem():
    found = contamination(prompt_texts())
    assert not found, "prompt texts that are benchmark problems:\n" + "\n".join(found)
