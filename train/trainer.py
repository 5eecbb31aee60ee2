"""The training job's driver: check the dataset and config, run Ray Train's TorchTrainer, write train.json."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback

from amr.config import ConfigError, TrainConfig
from amr.logs import job_logs
from amr.model_store import resolve
from amr.runtime import init_ray, package_versions, require_shared_storage
from amr.storage import RunDir
from train.data import count_examples
from train.loop import METRICS, train_func

PACKAGES = ("amr-evol", "ray", "torch", "transformers", "trl", "peft", "datasets")


def run(config: TrainConfig, callbacks: Sequence[TrainerCallback | type[TrainerCallback]] = ()) -> dict[str, Any]:
    """Train (or resume) the student; return the summary, also written to ``<output>/train.json``.

    ``callbacks``: extra transformers ``TrainerCallback`` instances or classes (as ``Trainer.add_callback`` takes
    them) added to every worker's trainer, on every attempt (a restart after a failure too). They travel to the
    Ray Train workers pickled (cloudpickle): their module must be importable there, or registered with
    ``ray.cloudpickle.register_pickle_by_value``.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    start = time.perf_counter()
    if not config.dataset or not config.output:
        raise ConfigError(
            f"{'dataset' if not config.dataset else 'output'}: required (--dataset RUN_DIR, --output OUT)"
        )
    if "://" in config.output:
        raise ConfigError(f"output: {config.output}: a local or shared-filesystem path (not an object-store URI)")
    per_step = config.micro_batch_size * config.scaling.workers
    if config.global_batch_size % per_step:
        raise ConfigError(
            f"global_batch_size: {config.global_batch_size} is not a multiple of micro_batch_size x "
            f"scaling.workers ({config.micro_batch_size} x {config.scaling.workers})"
        )
    if "://" not in config.dataset:  # the workers read it from another working directory
        config = config.model_copy(update={"dataset": os.path.abspath(config.dataset)})
    count, source = count_examples(config.dataset, config.template)
    model_path = resolve(config.model, config.model_store)
    if config.template == "chat":
        from transformers import AutoTokenizer

        if not AutoTokenizer.from_pretrained(model_path).chat_template:
            raise ConfigError(
                f"template: chat, but the student {model_path} has no chat template; use template: alpaca"
            )
    output = os.path.abspath(config.output)
    os.makedirs(output, exist_ok=True)
    with job_logs(output):
        storage = config.storage_path or os.path.join(output, "checkpoints")
        init_ray(config.ray)
        require_shared_storage({"output": output, "storage_path": storage, "dataset": os.path.dirname(source)})
        # Ray Train tees workers' print() to its logger, even prints a library captures (dill's dis dumps while
        # datasets fingerprints TRL's map functions): keep print as is. Propagated to the workers.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
        trainer = TorchTrainer(
            train_func,
            train_loop_config={
                "config": config.model_dump(mode="json"),
                "model_path": model_path,
                "examples": count,
                "output": output,
                "callbacks": list(callbacks),
            },
            torch_config=TorchConfig(backend="nccl" if config.scaling.use_gpu else "gloo"),
            scaling_config=ScalingConfig(
                num_workers=config.scaling.workers,
                use_gpu=config.scaling.use_gpu,
                resources_per_worker={"CPU": config.scaling.cpus_per_worker},
            ),
            run_config=RunConfig(
                name=config.name,
                storage_path=storage,
                checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
                failure_config=FailureConfig(max_failures=config.max_failures),
            ),
        )
        metrics_file = os.path.join(output, METRICS)
        if os.path.exists(metrics_file):
            os.unlink(metrics_file)
        result = trainer.fit()
        with open(metrics_file) as f:
            metrics = json.load(f)
        os.unlink(metrics_file)
        summary = {
            **metrics,
            "model": config.model,
            "dataset": source,
            "checkpoint": result.checkpoint.path if result.checkpoint else None,
            "storage": f"{storage}/{config.name}",
            "config": config.model_dump(mode="json"),
            "versions": package_versions(PACKAGES),
            "wall_time_s": round(time.perf_counter() - start, 1),
        }
        RunDir(output).write_json("train.json", summary)
    return summary
