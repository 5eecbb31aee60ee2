"""The dataset card of a distill run (``README.md`` beside ``dataset.parquet``): the Hugging Face YAML header
(licence, task category, size, language, tags), then what made the dataset: the teacher, the method, the
response accuracy, the instructions and their decontamination, the configuration and the package versions.

Built from the run's ``manifest.json`` with ``huggingface_hub.DatasetCard``; ``amr export`` puts it beside a
``datasets.save_to_disk`` folder and on the Hub.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import yaml
from huggingface_hub import DatasetCard, DatasetCardData

from amr import storage
from amr.data import BUILTIN_SOURCES, mbpp_train, mbpp_train_overlaps
from amr.methods import method
from amr.model_store import REGISTRY
from amr.storage import RunDir

CARD = "README.md"
PAPER = "https://arxiv.org/abs/2410.00558"
SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))
"""The Hub's size categories up to 1M rows (larger: ``1M<n<10M``, enough for a distilled dataset)."""
FIELDS = {
    "id": "the instruction's id",
    "instruction": "the coding instruction",
    "response": "the teacher's final answer (the method's)",
    "messages": "the same pair as chat messages (user, assistant)",
    "tests": "the instruction's own tests (assert statements), where it has any",
    "tests_passed": "whether the response's code passed them in the sandbox (null without tests)",
    "source": "where the response came from: direct (R_d, the teacher's direct answer), are (the evolved "
    "answer), cot, repair or resample",
}
CITATION = """@inproceedings{luo2024amrevol,
  title = {Adaptive Modular Response Evolution Elicits Better Knowledge Distillation for Large Language Models
           in Code Generation},
  author = {Luo, Ziyang and Li, Xin and Lin, Hongzhan and Ma, Jing and Bing, Lidong},
  booktitle = {Proceedings of EMNLP 2024},
  year = {2024},
  url = {https://arxiv.org/abs/2410.00558}
}"""


def render(manifest: dict[str, Any]) -> DatasetCard:
    """The card of the run a ``manifest.json`` describes."""
    config, dataset = manifest["config"], manifest["dataset"]
    chosen = method(manifest["method"])
    teacher = config["teacher"]
    spec = REGISTRY.get(teacher["model"])
    name = spec.source if spec else teacher["model"]
    mbpp = config["input"]["source"] in BUILTIN_SOURCES
    data = DatasetCardData(
        license=[spec.licence.lower() if spec else "unknown", *(["cc-by-4.0"] * mbpp)],
        language=["en"],
        task_categories=["text-generation"],
        size_categories=[_size(dataset["rows"])],
        tags=["code", "synthetic", "distillation", "amr-evol", chosen.name],
        pretty_name=f"{chosen.label} distillation of {teacher['model']}",
        source_datasets=["google-research-datasets/mbpp"] if mbpp else None,
    )
    sampling = teacher["sampling"]
    body = f"""
# {data.pretty_name}

{dataset["rows"]} code-generation instructions with answers distilled from a teacher LLM for the supervised
fine-tuning of a student model, by amr-evol with the method `{chosen.name}` (see [AMR-Evol]({PAPER}), EMNLP 2024). Made by `amr distill` in {manifest["wall_time_s"]:.0f} s.

## Teacher

- model: `{teacher["model"]}` ({name}{f", licence {spec.licence}" if spec else ""}), served by {teacher["backend"]}
- sampling: temperature {sampling["temperature"]}, top_p {sampling["top_p"]}, at most {sampling["max_tokens"]} tokens

## Method

`{chosen.name}` ({chosen.label}): {chosen.description} Its stages: {", ".join(chosen.stages)}.
{_modules(manifest.get("modules") or {})}
## Response accuracy

{_accuracy(dataset)}

## Instructions

{_source(config["input"])}

## Decontamination

{decontamination(config["input"]["source"])}

## Fields

| field | what |
|---|---|
{"".join(f"| `{k}` | {v} |{chr(10)}" for k, v in FIELDS.items())}
## Configuration

The distill job's resolved configuration (`manifest.json` holds it with the per-stage counts):

```yaml
{yaml.safe_dump(config, sort_keys=False).strip()}
```

Package versions: {", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items())}.

## Citation

```bibtex
{CITATION}
```
"""
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}")


def write(run_dir: RunDir, manifest: dict[str, Any]) -> None:
    """Write the run's card, ``README.md``, beside its dataset."""
    run_dir.write_text(CARD, str(render(manifest)))


def decontamination(source: str) -> str:
    """What is known of the instructions' overlap with the evaluation benchmarks, in a paragraph."""
    if source in BUILTIN_SOURCES:
        removed = mbpp_train_overlaps()
        checks = _counts(Counter(r["check"] for r in removed))
        if source == "mbpp-train":
            return (
                f"Decontaminated: the {len(removed)} of {len(mbpp_train())} MBPP train problems that overlap "
                f"HumanEval(+), MBPP 1-600 or MBPP+ are left out (by check: {checks})."
            )
        return (
            f"Not decontaminated: all of MBPP train 601-974, the {len(removed)} problems that overlap the "
            f"evaluation benchmarks included (by check: {checks}). Evaluate a student on other tasks."
        )
    from amr.pipelines.instructions import report_path

    if not storage.exists(report_path(source)):
        return f"No decontamination report beside `{source}`: unknown (`amr instructions decontaminate` makes one)."
    lines = []
    for d in _decontaminations(source, storage.read_json(report_path(source))):
        removed = ", ".join(f"{n} {k}" for k, n in d["by_benchmark"].items()) or "none"
        lines.append(
            f"- {d['removed']} of {d['input_rows']} instructions removed (by check: {_counts(d['by_check'])}; "
            f"by benchmark: {removed}), {d['near_kept']} near ones kept"
        )
    if not lines:
        return f"`{report_path(source)}` holds no decontamination counts: unknown."
    return f"From `{report_path(source)}`:\n\n" + "\n".join(lines)


def _decontaminations(source: str, report: dict[str, Any]) -> list[dict[str, Any]]:
    """The decontamination counts in the report of an ``amr instructions`` step: those of ``decontaminate`` and
    ``seed`` are the report, ``self-instruct``'s holds them, ``evolve`` has one per round in that round's report."""
    if "by_check" in report:
        return [report]
    if "decontamination" in report:
        return [report["decontamination"]]
    if "rounds" not in report:
        return []  # not a report of amr instructions
    stem, suffix = os.path.splitext(storage.name(source))
    rounds = [storage.join(storage.parent(source), f"{stem}.round{r['round']}{suffix}") for r in report["rounds"]]
    return [storage.read_json(f"{level}.report.json")["decontamination"] for level in rounds]


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"


def _size(rows: int) -> str:
    return next((label for bound, label in SIZES if rows < bound), "1M<n<10M")


def _accuracy(dataset: dict[str, Any]) -> str:
    dropped = f" {dataset['dropped']} instructions whose answer was empty or an error are left out." * bool(
        dataset["dropped"]
    )
    if dataset["response_accuracy"] is None:
        return f"No instruction has tests: the answers are not checked.{dropped}"
    passed = round(dataset["response_accuracy"] * dataset["with_tests"])
    return (
        f"{100 * dataset['response_accuracy']:.1f}%: {passed} of the {dataset['with_tests']} answers to instructions "
        f"with tests pass them (the answer's code run against the instruction's own tests in a sandbox; "
        f"`tests_passed`). The answers are recorded as the teacher gave them, not filtered by this.{dropped}"
        + _from_direct(dataset)
    )


def _from_direct(dataset: dict[str, Any]) -> str:
    """The share of answers that are R_d (a manifest written before it was counted has none)."""
    if dataset.get("from_direct") is None:
        return ""
    return f" {100 * dataset['from_direct']:.0f}% of the answers are R_d, the teacher's direct answer (`source`)."


def _source(input: dict[str, Any]) -> str:
    limit = f", the first {input['limit']}" if input["limit"] else ""
    if input["source"] in BUILTIN_SOURCES:
        return (
            f"`{input['source']}`{limit}: MBPP (Austin et al., 2021; CC-BY-4.0) train problems 601-974, each with "
            "its tests."
        )
    return f"`{input['source']}`{limit}."


def _modules(modules: dict[str, Any]) -> str:
    if not modules:
        return ""
    return f"\nThe functional module table ended with {modules['rows']} verified functions (version {modules['version']}).\n"
