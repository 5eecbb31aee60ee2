"""The dataset card a distill run writes, and `amr export`: a `datasets.save_to_disk` folder with the card, and
the push to the Hub (its arguments, against recorders of the Hub's client: no network)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import datasets
import huggingface_hub
import pytest
from huggingface_hub import DatasetCard, HfApi
from typer.testing import CliRunner

from amr import card
from amr.config import DistillConfig, InstructionsConfig
from amr.data import mbpp_train, mbpp_train_overlaps
from amr.pipelines import distill, instructions
from jobs.cli import app
from tests.support.scripted_teacher import ScriptedTeacher

runner = CliRunner()
MBPP_11 = "Write a python function to remove first and last occurrence of a given character from the string."
ROWS = [
    {"id": "t/add", "instruction": "Task: add. Write add(a, b).", "tests": ["assert add(1, 2) == 3"]},
    {"id": "t/sub", "instruction": "Task: sub. Write sub(a, b).", "tests": ["assert sub(3, 1) == 2"]},
    {"id": "t/echo", "instruction": "Task: echo. Write echo(x) that returns x.", "tests": []},
    {"id": "t/planted", "instruction": MBPP_11, "tests": []},  # MBPP 11 word for word: decontamination removes it
]
ANSWERS = {  # sub's answer fails its test: response accuracy 1 of 2
    "add": "def add(a, b):\n    return a + b",
    "sub": "def sub(a, b):\n    return a + b",
    "echo": "def echo(x):\n    return x",
}


def _script(messages: list[dict[str, str]]) -> str:
    task = re.search(r"Task: (\w+)", messages[-1]["content"]).group(1)
    return f"```python\n{ANSWERS[task]}\n```"


@pytest.fixture(scope="module")
def run_dir(ray_local, tmp_path_factory) -> Path:
    """A direct distill run over decontaminated instructions (3 of 4 kept), with a scripted teacher."""
    folder = tmp_path_factory.mktemp("card")
    (folder / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    decontam = InstructionsConfig()
    decontam.decontam.embedding_threshold = None  # the exact and n-gram checks: no embedding model
    clean = folder / "clean.jsonl"
    instructions.decontaminate(str(folder / "mine.jsonl"), decontam, str(clean))
    with ScriptedTeacher(_script) as teacher:
        config = DistillConfig(run_dir=str(folder / "run"), method="direct", teacher=teacher.config())
        config.input.source, config.sandbox.workers = str(clean), 1
        distill.run(config)
    return folder / "run"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.timeout(300)
def test_the_run_writes_a_dataset_card_that_loads(run_dir):
    loaded = DatasetCard.load(run_dir / "README.md")
    data = loaded.data.to_dict()
    assert data["license"] == ["unknown"]  # the scripted teacher is no registry model with a known licence
    assert data["language"] == ["en"] and data["task_categories"] == ["text-generation"]
    assert data["size_categories"] == ["n<1K"] and "direct" in data["tags"]
    assert data["pretty_name"] == "direct distillation of scripted"
    text = loaded.text
    assert "3 code-generation instructions" in text and "model: `scripted`" in text and "served by openai" in text
    assert "50.0%: 1 of the 2 answers to instructions with tests pass them" in text
    assert f"`{run_dir.parent / 'clean.jsonl'}`." in text  # the instruction source
    assert "- 1 of 4 instructions removed (by check: 1 exact; by benchmark: 1 MBPP), 0 near ones kept" in text
    assert "method: direct\nrun_dir: " in text  # the configuration
    assert list(card.FIELDS) == distill.DATASET_SCHEMA.names  # every field described, no other


@pytest.mark.timeout(60)
def test_builtin_sources_say_what_was_decontaminated(tmp_path):
    removed, total = len(mbpp_train_overlaps()), len(mbpp_train())
    assert card.decontamination("mbpp-train").startswith(f"Decontaminated: the {removed} of {total} MBPP train")
    assert card.decontamination("mbpp-train-raw").startswith(
        f"Not decontaminated: all of MBPP train 601-974, the {removed}"
    )
    assert "No decontamination report beside `x.jsonl`" in card.decontamination("x.jsonl")
    (tmp_path / "own.jsonl.report.json").write_text('{"made_by": "someone else"}')
    assert card.decontamination(str(tmp_path / "own.jsonl")).endswith("holds no decontamination counts: unknown.")


@pytest.mark.timeout(300)
def test_export_writes_a_folder_that_load_from_disk_reads(run_dir, tmp_path):
    result = runner.invoke(app, ["export", str(run_dir), "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "3 rows and README.md" in result.output
    assert datasets.load_from_disk(str(tmp_path / "out")).to_list() == _jsonl(run_dir / "dataset.jsonl")
    assert (tmp_path / "out" / "README.md").read_text() == (run_dir / "README.md").read_text()

    older = tmp_path / "older"  # a run made before cards: the card is rendered from its manifest
    shutil.copytree(run_dir, older)
    (older / "README.md").unlink()
    assert runner.invoke(app, ["export", str(older), "-o", str(tmp_path / "out2")]).exit_code == 0
    assert DatasetCard.load(tmp_path / "out2" / "README.md").data.pretty_name == "direct distillation of scripted"


@pytest.mark.timeout(60)
def test_export_refuses_what_it_cannot_export(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "manifest.json").write_text("{}")
    cases = [
        (["export", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o")], "no such run directory"),
        (["export", str(tmp_path / "half"), "-o", str(tmp_path / "o")], "no finished dataset"),
        (["export", str(tmp_path / "half")], "give --output DIR, --push-to-hub REPO or both"),
        (["export", str(tmp_path / "half"), "-o", str(tmp_path / "o"), "--private"], "--private goes with"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in " ".join(result.output.split()), (args, result.output)
    assert not (tmp_path / "o").exists()


@pytest.fixture
def hub(monkeypatch) -> list[tuple]:
    """The Hub's client methods `amr export --push-to-hub` calls, recording their arguments instead."""
    calls: list[tuple] = []
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(
        HfApi,
        "create_repo",
        lambda self, repo, **kw: calls.append(("create_repo", repo, kw)) or f"https://hf.co/{repo}",
    )
    monkeypatch.setattr(
        DatasetCard, "push_to_hub", lambda self, repo, **kw: calls.append(("card", repo, str(self), kw))
    )
    monkeypatch.setattr(
        datasets.Dataset, "push_to_hub", lambda self, repo, **kw: calls.append(("dataset", repo, self.to_list(), kw))
    )
    return calls


@pytest.mark.timeout(300)
def test_push_to_hub_creates_the_repo_then_pushes_the_card_and_the_rows(run_dir, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    result = runner.invoke(app, ["export", str(run_dir), "--push-to-hub", "me/amr-data", "--private"])
    assert result.exit_code == 0, result.output
    assert "pushed to https://hf.co/me/amr-data" in result.output
    assert hub == [
        ("create_repo", "me/amr-data", {"repo_type": "dataset", "private": True, "exist_ok": True}),
        ("card", "me/amr-data", (run_dir / "README.md").read_text(), {"token": "hf_test", "repo_type": "dataset"}),
        ("dataset", "me/amr-data", _jsonl(run_dir / "dataset.jsonl"), {"private": True, "token": "hf_test"}),
    ]


@pytest.mark.timeout(60)
def test_push_to_hub_refuses_without_a_token_a_repo_id_or_the_network(run_dir, hub, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    cases = [
        ("me/amr-data", "no Hugging Face token: set HF_TOKEN or run `hf auth login`"),
        ("amr-data", "expected a repository id, USER/NAME or ORG/NAME"),
    ]
    for repo, message in cases:
        result = runner.invoke(app, ["export", str(run_dir), "--push-to-hub", repo])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    result = runner.invoke(app, ["export", str(run_dir), "--push-to-hub", "me/amr-data"])
    assert result.exit_code == 2 and "HF_HUB_OFFLINE is set" in result.output
    assert hub == []  # nothing reached the Hub
