"""The Python API: the jobs of the command line as functions for notebooks and pipelines.

    import amr

    result = amr.distill("jobs/configs/local_cpu.yaml", overrides=["input.limit=4", "method=direct"])
    result.dataset()          # a datasets.Dataset: instruction, response, messages, tests, tests_passed

Each takes a config object or a YAML path (None: the defaults) plus ``key.path=value`` overrides, like
``--set``, and starts a local Ray unless one is running or the config names a cluster. ``amr.teacher(config,
overrides)`` serves a config's teacher for a ``with`` block: one engine for the distillations inside it. Training
and evaluation live in their own packages: ``train.trainer.run`` and ``eval.evaluate.evaluate``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amr.config import DistillConfig, InstructionsConfig, as_config

if TYPE_CHECKING:
    import datasets


@dataclass(frozen=True)
class DistillResult:
    """A finished distillation: its run directory and manifest (``manifest.json``)."""

    run_dir: str
    manifest: dict[str, Any]

    @property
    def rows(self) -> int:
        return self.manifest["dataset"]["rows"]

    @property
    def response_accuracy(self) -> float | None:
        """Final answers passing their instructions' own tests, of those with tests."""
        return self.manifest["dataset"]["response_accuracy"]

    def dataset(self) -> datasets.Dataset:
        """The SFT dataset (``dataset.parquet``) as a Hugging Face ``datasets.Dataset``."""
        import datasets

        from amr.pipelines.distill import DATASET
        from amr.storage import RunDir

        return datasets.Dataset(RunDir(self.run_dir).read_table(DATASET))


def distill(config: DistillConfig | str | Path | None = None, overrides: Sequence[str] = ()) -> DistillResult:
    """Run (or resume) a distillation (``amr distill``)."""
    from amr.pipelines import distill as pipeline

    cfg = as_config(DistillConfig, config, overrides)
    return DistillResult(cfg.run_dir, pipeline.run(cfg))


@contextmanager
def teacher(config: DistillConfig | str | Path | None = None, overrides: Sequence[str] = ()) -> Iterator[DistillConfig]:
    """The teacher of a distillation config, served for the ``with`` block: each ``distill`` inside whose teacher has
    the same model and engine settings (its sampling may differ) uses this engine instead of starting its own. For a
    method with a module table, the config's embedding actors too, started first, as a ``distill`` starts its own:
    their model loads while the engine starts, and each ``distill`` inside of the same ``embedding`` uses them. Yields
    the loaded config."""
    from amr.embeddings import open_embedders
    from amr.engines import open_teacher
    from amr.methods import method
    from amr.runtime import init_ray
    from amr.serving import preload

    cfg = as_config(DistillConfig, config, overrides)
    init_ray(cfg.ray, (*preload(cfg.teacher), "amr.pipelines.distill"))  # what the block runs next, meanwhile
    with ExitStack() as block:
        if method(cfg.method).uses_modules:
            block.enter_context(open_embedders(cfg.embedding, cfg.model_store))
        block.enter_context(open_teacher(cfg.teacher, cfg.model_store))
        yield cfg


def build_instructions(
    output: str | Path, config: InstructionsConfig | str | Path | None = None, overrides: Sequence[str] = ()
) -> str:
    """Seeds (MBPP train, decontaminated) -> self-instruct -> evolution rounds under ``output``, resumable; the
    file of all the instructions, ready for ``distill``'s ``input.source``."""
    from amr.pipelines import instructions

    return instructions.build(as_config(InstructionsConfig, config, overrides), output)
