"""Student training without Ray or amr's loop: TRL's SFTTrainer on one device, same model, rows and settings.

    python bench/train_baseline.py [--config jobs/configs/train_local_cpu.yaml] --dataset RUN_DIR [--set KEY=VALUE ...]

The point of comparison for `amr train` (train.json): the library trainer over the same prompt-completion examples
(train.data), the same schedule (amr.training: steps and global batch, here as gradient accumulation on one
device), learning rate, warm-up, optimizer and precision, timed over its ``train()`` call in non-padding tokens.
One process on one device (a GPU when scaling.use_gpu); torch gets scaling.cpus_per_worker threads on CPU.
Writes bench/results/train_baseline.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from amr.config import TrainConfig, load_config
from amr.model_store import resolve
from amr.training import precision, schedule
from train.data import count_examples, iter_examples


def run(config: TrainConfig) -> dict:
    """Train once in this process; return steps, losses, tokens, seconds and tokens/s."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    count, source = count_examples(config.dataset, config.template)
    plan = schedule(config.model_copy(update={"scaling": config.scaling.model_copy(update={"workers": 1})}), count)
    trained_in = precision(config)
    model_path = resolve(config.model, config.model_store)
    if not config.scaling.use_gpu:
        torch.set_num_threads(max(1, math.floor(config.scaling.cpus_per_worker)))
    with tempfile.TemporaryDirectory(prefix="amr-train-baseline-") as scratch:
        examples = datasets.Dataset.from_list(list(iter_examples(config.dataset, config.template)))
        args = SFTConfig(
            output_dir=scratch,
            max_steps=plan.steps,
            per_device_train_batch_size=config.micro_batch_size,
            gradient_accumulation_steps=plan.accumulation,
            learning_rate=config.learning_rate,
            lr_scheduler_type=config.lr_scheduler,
            warmup_steps=math.ceil(config.warmup_ratio * plan.steps),
            weight_decay=config.weight_decay,
            max_grad_norm=config.max_grad_norm,
            optim=config.optimizer,
            bf16=trained_in != "fp32",
            use_cpu=not config.scaling.use_gpu,
            gradient_checkpointing=config.gradient_checkpointing,
            max_length=config.seq_len,
            packing=config.packing,
            completion_only_loss=True,
            seed=config.seed,
            logging_steps=1,
            save_strategy="no",
            include_num_input_tokens_seen="non_padding",
            report_to="none",
            disable_tqdm=True,
        )
        dtype = torch.bfloat16 if trained_in == "bf16-pure" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        trainer = SFTTrainer(model=model, args=args, train_dataset=examples, processing_class=tokenizer)
        began = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - began
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    tokens = trainer.state.num_input_tokens_seen
    return {
        "side": "TRL SFTTrainer, one process",
        "model": config.model,
        "dataset": source,
        "steps": trainer.state.global_step,
        "final_loss": losses[-1] if losses else None,
        "losses": losses,
        "train_loss": result.training_loss,
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "examples": count,
        "precision": trained_in,
        "schedule": plan.as_dict(),
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
    report = run(config)
    print(json.dumps({k: v for k, v in report.items() if k not in ("config", "losses")}, indent=2))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
