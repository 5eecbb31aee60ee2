"""Student training without Ray: the SFTTrainer of one Ray Train worker, run in a plain process.

    python bench/train_baseline.py [--config jobs/configs/train_local_cpu.yaml] --dataset RUN_DIR [--set KEY=VALUE ...]

The point of comparison for `amr train`'s tokens/s (train.json): the same trainer (train.loop.build_trainer
over train.data's examples, with the same TrainConfig) timed by the same callback (train.loop.Throughput: the
``train()`` call, non-padding tokens), so that only Ray Train differs (TorchTrainer, prepare_trainer,
RayTrainReportCallback and its checkpoint reports). One process: the config must have scaling.workers=1; torch
gets scaling.cpus_per_worker threads, as Ray gives a worker. Writes bench/results/train_baseline.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import torch

from amr.config import TrainConfig, load_config
from amr.model_store import resolve
from train.data import examples, load_rows
from train.loop import Throughput, build_trainer


def run(config: TrainConfig) -> dict:
    """Train once in this process; return steps, losses, tokens, seconds and tokens/s."""
    rows, source = load_rows(config.dataset)
    data = examples(rows, config.template, source)
    torch.set_num_threads(max(1, math.floor(config.scaling.cpus_per_worker)))
    with tempfile.TemporaryDirectory(prefix="amr-train-baseline-") as scratch:
        trainer = build_trainer(
            config, resolve(config.model, config.model_store), data, scratch, use_gpu=config.scaling.use_gpu
        )
        throughput = Throughput()
        trainer.add_callback(throughput)
        result = trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    return {
        "side": "plain SFTTrainer",
        "model": config.model,
        "dataset": source,
        "steps": trainer.state.global_step,
        "final_loss": losses[-1] if losses else None,
        "train_loss": result.training_loss,
        "tokens": throughput.tokens,
        "seconds": round(throughput.seconds, 2),
        "tokens_per_s": round(throughput.tokens / throughput.seconds, 1) if throughput.seconds else None,
        "examples": len(data),
        "train_rows": len(trainer.train_dataset),
        "workers": 1,
        "bf16": trainer.args.bf16,
        "config": config.model_dump(mode="json"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="jobs/configs/train_local_cpu.yaml", help="train config (as amr train)")
    parser.add_argument("--dataset", help="a distill run directory, or its dataset.parquet/.jsonl")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--output", default="bench/results/train_baseline.json")
    args = parser.parse_args()
    config = load_config(TrainConfig, args.config, [*([f"dataset={args.dataset}"] if args.dataset else []), *args.set])
    if not config.dataset:
        sys.exit("dataset: required (--dataset RUN_DIR)")
    if config.scaling.workers != 1:
        sys.exit(f"scaling.workers: {config.scaling.workers}; the baseline is one process: use --set scaling.workers=1")
    report = run(config)
    print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
