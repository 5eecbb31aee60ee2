"""The training loop each Ray Train worker runs: TRL's SFTTrainer (a transformers Trainer) under DDP.

Ray Train starts the process group (gloo on CPU, NCCL on GPU); the Trainer sees it and runs DDP. Each
HF checkpoint is reported to Ray Train by ``RayTrainReportCallback`` (Ray keeps ``num_to_keep`` in its
storage); a worker that starts with ``ray.train.get_checkpoint()`` set (a restart after a failure, or
the command run again) resumes from it. Rank 0 writes the final model: a plain HF directory, LoRA merged.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from amr.config import TrainConfig
from train.data import iter_examples

MODEL_DIR = "model"
METRICS = ".worker-metrics.json"
TENSORBOARD = "tensorboard"


def build_trainer(config: TrainConfig, model_path: str, output_dir: str, world_size: int = 1, use_gpu: bool = False):
    """An SFTTrainer over the examples of ``config.dataset`` (prompt-completion), read into a disk-backed
    dataset under ``output_dir``; its max_steps is min(epochs, config.max_steps)."""
    import datasets
    import transformers
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    bf16 = bf16_enabled(config.precision, use_gpu)
    accumulation = config.global_batch_size // (config.micro_batch_size * world_size)
    args = SFTConfig(
        output_dir=output_dir,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=accumulation,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        optim=config.optimizer,
        bf16=bf16,
        fp16=False,
        use_cpu=not use_gpu,
        gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        max_length=config.seq_len,
        packing=config.packing,
        completion_only_loss=True,
        seed=config.seed,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        **config.trainer_kwargs,
    )
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    lora = None
    if config.finetune == "lora":
        lora = LoraConfig(
            r=config.lora.r,
            lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout,
            target_modules=config.lora.target_modules,
            task_type="CAUSAL_LM",
        )
    examples = datasets.Dataset.from_generator(
        iter_examples,
        gen_kwargs={"source": config.dataset, "template": config.template},
        cache_dir=os.path.join(output_dir, "examples"),
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=examples, processing_class=tokenizer, peft_config=lora)
    per_step = config.micro_batch_size * world_size * accumulation
    epoch_steps = math.ceil(config.epochs * len(trainer.train_dataset) / per_step)
    trainer.args.max_steps = max(1, min(config.max_steps, epoch_steps))
    return trainer


def bf16_enabled(precision: str, use_gpu: bool) -> bool:
    if precision == "auto":
        return use_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return precision == "bf16"


class TensorBoardLog(TrainerCallback):
    """Rank 0 writes each logged step's loss, learning rate and tokens/s (non-padding tokens summed over
    workers, since the step logged before) as TensorBoard scalars ``train/*`` under ``log_dir``."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir, self.writer = log_dir, None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(self.log_dir)
        self.last = (time.perf_counter(), state.num_input_tokens_seen)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.writer or not logs or "loss" not in logs:
            return
        now, tokens = time.perf_counter(), state.num_input_tokens_seen
        scalars = {"loss": logs["loss"], "learning_rate": logs.get("learning_rate")}
        if now > self.last[0]:
            scalars["tokens_per_s"] = (tokens - self.last[1]) / (now - self.last[0])
        for name, value in scalars.items():
            if value is not None:
                self.writer.add_scalar(f"train/{name}", value, state.global_step)
        self.writer.flush()
        self.last = (now, tokens)

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer:
            self.writer.close()


class Throughput(TrainerCallback):
    """Non-padding tokens (summed over workers) and wall time of this ``train()`` call."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.tokens, self.first_step = time.perf_counter(), state.num_input_tokens_seen, state.global_step

    def on_train_end(self, args, state, control, **kwargs):
        self.seconds = time.perf_counter() - self.start
        self.tokens = state.num_input_tokens_seen - self.tokens


def train_func(loop_config: dict[str, Any]) -> None:
    """The Ray Train worker function. ``loop_config["callbacks"]``: extra ``TrainerCallback`` instances or classes
    for the HF trainer (each worker gets its own unpickled copy, on every attempt, restarts included)."""
    import ray.train
    from ray.train.huggingface.transformers import (
        RayTrainReportCallback,
        prepare_trainer,
    )

    config = TrainConfig.model_validate(loop_config["config"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    scratch = tempfile.mkdtemp(prefix=f"amr-train-{rank}-")
    trainer = build_trainer(config, loop_config["model_path"], scratch, world_size, config.scaling.use_gpu)
    throughput = Throughput()
    trainer.add_callback(RayTrainReportCallback())
    trainer.add_callback(throughput)
    trainer.add_callback(TensorBoardLog(os.path.join(loop_config["output"], TENSORBOARD)))
    for callback in loop_config.get("callbacks") or ():  # the caller's own (run(callbacks=...)), on every attempt
        trainer.add_callback(callback)
    checkpoint = ray.train.get_checkpoint()
    trainer = prepare_trainer(trainer)
    if checkpoint:
        with checkpoint.as_directory() as restored:
            result = trainer.train(
                resume_from_checkpoint=os.path.join(restored, RayTrainReportCallback.CHECKPOINT_NAME)
            )
    else:
        result = trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    metrics = {
        "steps": trainer.state.global_step,
        "resumed_from_step": throughput.first_step,
        "final_loss": losses[-1] if losses else None,
        "train_loss": result.training_loss,
        "tokens": throughput.tokens,
        "seconds": round(throughput.seconds, 2),
        "tokens_per_s": round(throughput.tokens / throughput.seconds, 1) if throughput.seconds else None,
        "examples": loop_config["examples"],
        "train_rows": len(trainer.train_dataset),
        "workers": world_size,
        "bf16": trainer.args.bf16,
    }
    metrics["model_dir"] = save_final(trainer, loop_config["output"], loop_config["model_path"], rank)
    if rank == 0:  # Ray Train's Result holds the metrics of the last checkpoint only: hand these over in a file
        with open(os.path.join(loop_config["output"], METRICS), "w") as f:
            json.dump(metrics, f)
    shutil.rmtree(scratch, ignore_errors=True)


def save_final(trainer, output: str, model_path: str, rank: int) -> str | None:
    """The trained model as a plain HF directory with its tokenizer, float32 (the trained weights); LoRA merged.

    Every rank calls ``trainer.save_model`` (it gathers sharded weights under FSDP/DeepSpeed); rank 0 writes.
    """
    target = os.path.join(output, MODEL_DIR)
    staging = f"{target}.partial"
    if rank == 0:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(staging)  # LoRA: the adapter only
    if rank != 0:
        return None
    if os.path.exists(os.path.join(staging, "adapter_config.json")):
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        merged = PeftModel.from_pretrained(base, staging).merge_and_unload()
        shutil.rmtree(staging)
        merged.save_pretrained(staging, safe_serialization=True)
        trainer.processing_class.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target
