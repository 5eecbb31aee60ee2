"""A distill run's dataset for the Hugging Face ecosystem (``amr export``): a ``datasets.save_to_disk`` folder with
the dataset card, and the same pushed to the Hub."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from amr import card, storage
from amr.storage import RunDir

if TYPE_CHECKING:  # datasets and the pipeline: seconds of imports the CLI's other commands do without
    import datasets
    from huggingface_hub import DatasetCard


class ExportError(ValueError):
    """A run directory without a finished dataset, or a push that cannot be made."""


def load(run_dir: str) -> tuple[datasets.Dataset, DatasetCard]:
    """A finished run's dataset (``dataset.parquet``, its rows in the order of ``dataset.jsonl``) and its card
    (``README.md``, or rendered from ``manifest.json`` for a run made before cards were written)."""
    import datasets
    from huggingface_hub import DatasetCard

    from amr.pipelines.distill import DATASET

    if not storage.exists(run_dir):
        raise ExportError(f"{run_dir}: no such run directory")
    run = RunDir(run_dir)
    if not run.exists("manifest.json") or not run.stage_done(DATASET):
        raise ExportError(f"{run_dir}: no finished dataset (manifest.json and {DATASET}): is it an `amr distill` run?")
    table = run.open_stage(DATASET).to_table()
    dataset = datasets.Dataset(datasets.table.InMemoryTable(table))
    if run.exists(card.CARD):
        return dataset, DatasetCard(run.read_text(card.CARD))
    return dataset, card.render(run.read_json("manifest.json"))


def save(run_dir: str, output: str | Path) -> datasets.Dataset:
    """Write the run's dataset as a ``datasets.save_to_disk`` folder at ``output``, with its card as README.md."""
    dataset, dataset_card = load(run_dir)
    dataset.save_to_disk(str(output))
    dataset_card.save(str(Path(output) / card.CARD))
    return dataset


def push(run_dir: str, repo: str, private: bool = False) -> str:
    """Push the run's dataset and card to the Hub dataset repository ``repo`` (``user/name``), created if absent,
    with the token of ``HF_TOKEN`` or ``hf auth login``; the repository's URL."""
    from huggingface_hub import HfApi, constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise ExportError("HF_HUB_OFFLINE is set: pushing to the Hub needs it unset (and a network)")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ExportError(f"--push-to-hub {repo!r}: expected a repository id, USER/NAME or ORG/NAME")
    token = get_token()
    if token is None:
        raise ExportError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    dataset, dataset_card = load(run_dir)
    url = HfApi(token=token).create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
    dataset_card.push_to_hub(repo, token=token, repo_type="dataset")  # first: the data's push adds its YAML to it
    dataset.push_to_hub(repo, private=private, token=token)
    return str(url)
