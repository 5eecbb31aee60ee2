"""The training job's driver: check the dataset and config, tokenize the rows once (Ray Data), derive the schedule
from their number, run Ray Train's TorchTrainer (``train.loop`` on each worker), write train.json."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from amr import preflight
from amr.config import ConfigError, TrainConfig
from amr.logs import job_logs
from amr.model_store import resolve
from amr.runtime import init_ray, package_versions, require_shared_storage
from amr.storage import RunDir
from amr.training import check_batch, precision, schedule
from train.data import count_examples, training_rows
from train.loop import METRICS, train_func

log = logging.getLogger(__name__)
PACKAGES = ("amr-evol", "ray", "torch", "transformers", "trl", "peft", "datasets")
SHARDS = "shards.json"
"""The ids of the rows each worker streamed (its shard), by rank."""


def run(config: TrainConfig) -> dict[str, Any]:
    """Train (or resume) the student; return the summary, also written to ``<output>/train.json``."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    start = time.perf_counter()
    if not config.dataset or not config.output:
        raise ConfigError(
            f"{'dataset' if not config.dataset else 'output'}: required (--dataset RUN_DIR, --output OUT)"
        )
    if "://" in config.output:
        raise ConfigError(f"output: {config.output}: a local or shared-filesystem path (not an object-store URI)")
    check_batch(config)
    if "://" not in config.dataset:  # the workers read it from another working directory
        config = config.model_copy(update={"dataset": os.path.abspath(config.dataset)})
    count, source = count_examples(config.dataset, config.template)
    output = os.path.abspath(config.output)
    storage = config.storage_path or os.path.join(output, "checkpoints")
    config = config.model_copy(update={"output": output, "storage_path": storage})
    os.makedirs(output, exist_ok=True)
    with job_logs(output):
        init_ray(config.ray)
        preflight.run(config)  # the workers' GPUs, shared storage, the student pulled once if a hub id
        require_shared_storage({"dataset": os.path.dirname(source)})
        model_path = resolve(config.model, config.model_store)
        if config.template == "chat":
            from transformers import AutoTokenizer

            if not AutoTokenizer.from_pretrained(model_path).chat_template:
                raise ConfigError(
                    f"template: chat, but the student {model_path} has no chat template; use template: alpaca"
                )
        # Ray Train tees workers' print() to its logger, even prints a library captures: keep print as is.
        # Propagated to the workers.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
        # Ray Train's preemption watcher (one more actor process each time the worker group starts) only logs node
        # drains and hands them to ray.train.get_preemption_info(), which train.loop does not read: off
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        rows = training_rows(
            config.dataset, count, config.template, model_path, config.seq_len, config.packing, config.seed
        )
        plan = schedule(config, rows.count())
        trained_in = precision(config)
        log.info("training %s (%s): %s", config.model, trained_in, plan.describe())
        trainer = TorchTrainer(
            train_func,
            train_loop_config={
                "config": config.model_dump(mode="json"),
                "schedule": plan.as_dict(),
                "precision": trained_in,
                "model_path": model_path,
                "output": output,
            },
            datasets={"train": rows},
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
        RunDir(output).write_json(SHARDS, metrics.pop("shards"))
        summary = {
            **metrics,
            "model": config.model,
            "dataset": source,
            "examples": count,
            "schedule": plan.as_dict(),
            "checkpoint": result.checkpoint.path if result.checkpoint else None,
            "storage": f"{storage}/{config.name}",
            "config": config.model_dump(mode="json"),
            "versions": package_versions(PACKAGES),
            "wall_time_s": round(time.perf_counter() - start, 1),
        }
        RunDir(output).write_json("train.json", summary)
    return summary
