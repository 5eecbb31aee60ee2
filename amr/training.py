"""What a training run will be, from its config and its data: how long (steps, global batch, the epochs they cover),
in what precision, and how large the student it saves is. ``amr train`` and ``amr run --dry-run`` both use it.

The paper trains 3 epochs in at most 200 steps and leaves the global batch open. With ``global_batch_size: auto``
the batch is derived from the data: the smallest multiple of ``micro_batch_size x workers`` that fits the epochs
into ``max_steps``, so both numbers hold. A fixed batch keeps the epochs only where ``max_steps`` allows them; the
cap is then stated (``capped``). Each worker streams an equal share of the rows (Ray Data's equal split): the
rows a pass covers are ``rows`` less the remainder of the division by the workers.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Literal

from amr.config import ConfigError, TrainConfig


@dataclass(frozen=True)
class Schedule:
    rows: int
    """Training rows one pass covers (after the equal split over the workers)."""
    global_batch: int
    micro_batch: int
    workers: int
    steps: int
    epochs: float
    """Passes over ``rows`` the steps cover."""
    asked_epochs: float
    derived: bool
    """The global batch was derived from the data (``global_batch_size: auto``)."""

    @property
    def accumulation(self) -> int:
        return self.global_batch // (self.micro_batch * self.workers)

    @property
    def steps_per_epoch(self) -> float:
        return self.rows / self.global_batch

    @property
    def capped(self) -> bool:
        """``max_steps`` stopped the run before ``asked_epochs``."""
        return self.epochs < self.asked_epochs - 1e-9

    def describe(self) -> str:
        """One line for the plan and the training log."""
        batch = f"global batch {self.global_batch}" + (" (derived from the data)" if self.derived else "")
        cap = f"; capped by max_steps at {self.epochs:.2f} of {self.asked_epochs:g} epochs" if self.capped else ""
        return (
            f"{self.rows} rows, {batch} = {self.workers} workers x micro batch {self.micro_batch} x "
            f"{self.accumulation} accumulation: {self.steps_per_epoch:.2f} steps per epoch, {self.steps} steps = "
            f"{self.epochs:.2f} epochs{cap}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "accumulation": self.accumulation,
            "steps_per_epoch": self.steps_per_epoch,
            "capped": self.capped,
        }


def check_batch(config: TrainConfig) -> None:
    """A fixed global batch must divide into the workers' micro-batches (a config error names the numbers)."""
    unit = config.micro_batch_size * config.scaling.workers
    if config.global_batch_size != "auto" and config.global_batch_size % unit:
        raise ConfigError(
            f"global_batch_size: {config.global_batch_size} is not a multiple of micro_batch_size x scaling.workers "
            f"({config.micro_batch_size} x {config.scaling.workers})"
        )


def schedule(config: TrainConfig, rows: int) -> Schedule:
    """The schedule of ``rows`` training rows under ``config`` (a config error when the batch does not divide over
    the workers, or the rows do not give every worker one)."""
    check_batch(config)
    workers, micro = config.scaling.workers, config.micro_batch_size
    if rows < workers:
        raise ConfigError(f"{rows} training rows for {workers} workers: every worker needs at least one")
    rows -= rows % workers
    batch = config.global_batch_size
    if batch == "auto":
        unit = micro * workers
        batch = unit * math.ceil(math.ceil(config.epochs * rows / config.max_steps) / unit)
    steps = min(config.max_steps, math.ceil(config.epochs * rows / batch))
    covered = min(config.epochs, steps * batch / rows)
    derived = config.global_batch_size == "auto"
    return Schedule(rows, batch, micro, workers, steps, covered, config.epochs, derived)


def precision(config: TrainConfig) -> Literal["bf16", "bf16-pure", "fp32"]:
    """The precision ``auto`` stands for: bf16 on GPU (the paper's), fp32 on CPU, also where the CPU computes in
    bfloat16 natively: there bf16 trains more tokens a second but learns less a step, and reaches no lower loss in
    the same time (``bench/train_precision.py``, docs/benchmarks.md)."""
    if config.precision != "auto":
        return config.precision
    return "bf16" if config.scaling.use_gpu else "fp32"


def saved_dtype(config: TrainConfig) -> str:
    """The dtype the student is saved in (the weights' training dtype): bfloat16 unless fp32."""
    return "float32" if precision(config) == "fp32" else "bfloat16"


def parameters(model_dir: str) -> int:
    """The parameters of the causal LM in ``model_dir``, counted on the meta device from its config (nothing loaded;
    tied weights once)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return sum(p.numel() for p in model.parameters())


def student_parameters(model: str, store: str | None) -> tuple[int | None, str, str]:
    """The student's parameter count, where its weights are read from, and how the count was had: from the config of
    its directory (registry name, local path, pulled hub model); for a hub id not pulled yet, from the hub's
    safetensors headers (no weights downloaded), or None where the hub cannot be reached."""
    from amr.model_store import ModelError, is_hub_id, resolve

    try:
        path = resolve(model, store)
        return parameters(path), path, "its config"
    except ModelError as exc:
        if not is_hub_id(model):
            return None, model, str(exc)
    where = f"{model} once pulled (a job's preflight pulls a hub model into the Hugging Face cache)"
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
        return None, where, "not pulled, and HF_HUB_OFFLINE is set"
    from huggingface_hub import get_safetensors_metadata

    try:
        counts = get_safetensors_metadata(model).parameter_count
    except Exception as exc:  # the hub unreachable, or the model not there
        return None, where, f"not pulled, and the Hugging Face Hub did not answer ({type(exc).__name__})"
    return sum(counts.values()), where, "the Hugging Face Hub's safetensors headers"


def plan_lines(config: TrainConfig, rows: int, students: int, where: str) -> list[str]:
    """What ``amr run --dry-run`` says about training ``students`` students on ``rows`` rows each, saved under
    ``where``: the schedule, each student's size on disk, where the weights are read."""
    plan = schedule(config, rows)
    lines = [f"train, each of the {students} students: {plan.describe()} (rows before tokenizing)"]
    count, source, how = student_parameters(config.model, config.model_store)
    dtype = saved_dtype(config)
    if count is None:
        lines.append(f"students: {config.model}: size unknown here ({how})")
    else:
        each = count * (2 if dtype == "bfloat16" else 4)
        lines.append(
            f"students: {config.model}, {count / 1e9:.2f}B parameters ({how}): {each / 1e9:.2f} GB each in {dtype}, "
            f"{students * each / 1e9:.1f} GB for the {students} under {where}"
        )
    lines.append(
        f"student weights: read once, by training rank 0, from {source}, and broadcast to the other workers' shards "
        "(no full copy per worker)"
    )
    return lines
