"""What each Ray Train worker runs: the student under FSDP2 (``train.model``), its share of the tokenized rows
streamed from Ray Data (``train.data``), AdamW with a transformers learning-rate schedule.

Ray Train starts the process group (gloo on CPU, NCCL on GPU). A step takes each worker's ``accumulation``
micro-batches; the loss is the mean over every completion token of the step on all workers (each worker's summed
loss divided by the step's token count over all workers, as transformers' ``num_items_in_batch``). Every
``save_steps`` and at the end, each worker writes its shards of a distributed checkpoint and reports it to Ray
Train, which merges them into one checkpoint in its storage and keeps ``num_to_keep``; a worker that starts with
``ray.train.get_checkpoint()`` set (a restart after a failure, or the command run again) loads it and streams on from
the row where it stopped. Rank 0 logs each step (and TensorBoard scalars ``train/*``), gathers the weights and
saves the student.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import os
import platform
import tempfile
import time
from itertools import islice
from typing import Any

import torch
import torch.distributed as dist

from amr.config import TrainConfig
from amr.hardware import cpu_bf16
from train.data import micro_batches, stream
from train.model import device_mesh, load, load_checkpoint, mesh_shape, save_checkpoint, save_student

log = logging.getLogger(__name__)

MODEL_DIR = "model"
METRICS = ".worker-metrics.json"
TENSORBOARD = "tensorboard"
STATE = "state"
"""The distributed checkpoint's folder inside a Ray Train checkpoint; ``trainer.json`` beside it."""
M_MMAP_THRESHOLD = -3


class Memory:
    """This process's resident memory: before the model (``base``), the peak while loading it, the peak after."""

    def __init__(self) -> None:
        self.base = _rss("VmRSS")
        self.load_peak: int | None = None

    def loaded(self) -> None:
        self.load_peak = _rss("VmHWM")
        try:  # the peak from here on is the training's
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    def report(self) -> dict[str, int | None]:
        return {"rss_base": self.base, "load_peak": self.load_peak, "train_peak": _rss("VmHWM")}


def _rss(field: str) -> int | None:
    """``VmRSS`` (now) or ``VmHWM`` (the peak) of this process in bytes (Linux), None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(f"{field}:"))
    except (OSError, StopIteration):
        return None


def _return_freed_memory() -> None:
    """glibc keeps freed blocks below its mmap threshold, and the threshold grows with each large block freed (to
    32 MiB): a CPU worker's gathered layers and gradients then stay resident after use (a 105M-parameter model's
    worker held 1.2 GB freed, 2.3x what it used). A fixed 64 KiB threshold returns them on free."""
    if platform.system() == "Linux":
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 64 * 1024)


def train_func(loop_config: dict[str, Any]) -> None:
    """The Ray Train worker function (``loop_config``: the config, the schedule, the model path, the output)."""
    import ray.train
    import ray.train.torch
    from torch.utils.tensorboard import SummaryWriter
    from transformers import AutoTokenizer, get_scheduler

    config = TrainConfig.model_validate(loop_config["config"])
    plan, precision = loop_config["schedule"], loop_config["precision"]
    model_path, output = loop_config["model_path"], loop_config["output"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, math.floor(config.scaling.cpus_per_worker)))
        _return_freed_memory()
        if precision != "fp32" and not cpu_bf16() and rank == 0:
            log.warning(
                "precision %s on a CPU without AVX512-BF16 or AMX: torch emulates bfloat16 here, and its backward "
                "pass runs ~40x slower than fp32's (precision: auto trains in fp32 on CPU)",
                precision,
            )
    memory = Memory()
    nodes = _node_ranks(world)
    sharding, shape = mesh_shape(config.scaling.sharding, nodes)
    mesh = device_mesh(device.type, shape)
    lora = config.lora if config.finetune == "lora" else None
    began = time.perf_counter()
    model = load(
        model_path,
        mesh,
        precision,
        device,
        lora=lora,
        gradient_checkpointing=config.gradient_checkpointing,
        seed=config.seed,
    )
    load_s = time.perf_counter() - began
    memory.loaded()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        fused=config.optimizer == "adamw_torch_fused",
    )
    steps = plan["steps"]
    scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer,
        num_warmup_steps=math.ceil(config.warmup_ratio * steps),
        num_training_steps=steps,
    )
    state = {"step": 0, "rows": 0, "tokens": 0, "losses": []}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as restored:
            load_checkpoint(model, optimizer, os.path.join(restored, STATE))
            with open(os.path.join(restored, "trainer.json")) as f:
                state = json.load(f)
        scheduler.load_state_dict(state.pop("scheduler"))
    resumed_from = state["step"]
    per_worker = plan["rows"] // world
    stop = min(math.ceil(plan["epochs"] * per_worker), steps * config.micro_batch_size * plan["accumulation"])
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = stream(ray.train.get_dataset_shard("train"), per_worker, state["rows"], stop, config.seed)
    shard_ids: set[str] = set()
    batches = micro_batches(_recorded(rows, shard_ids), config.micro_batch_size, pad, config.packing)
    writer = SummaryWriter(os.path.join(output, TENSORBOARD)) if rank == 0 else None
    model.train()
    started, tokens_before = time.perf_counter(), state["tokens"]
    last_log = (started, state["tokens"])
    for step in range(state["step"], steps):
        torch.manual_seed(config.seed + step)  # dropout (LoRA) as an uninterrupted run's
        micro = list(islice(batches, plan["accumulation"]))
        loss, tokens, norm = _step(model, optimizer, micro, device, world, config.max_grad_norm)
        scheduler.step()
        state["step"], state["rows"] = (
            step + 1,
            min(stop, state["rows"] + config.micro_batch_size * plan["accumulation"]),
        )
        state["tokens"] += tokens
        state["losses"].append(loss)
        if rank == 0 and ((step + 1) % config.logging_steps == 0 or step + 1 == steps):
            now = time.perf_counter()
            scalars = {
                "loss": loss,
                "learning_rate": scheduler.get_last_lr()[0],
                "tokens_per_s": (state["tokens"] - last_log[1]) / (now - last_log[0]),
            }
            last_log = (now, state["tokens"])
            norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
            lr, tokens_per_s = scalars["learning_rate"], scalars["tokens_per_s"]
            log.info(
                "step %d/%d: loss %.4f, grad norm %.3f, lr %.3g, %.0f tokens/s",
                step + 1,
                steps,
                loss,
                norm,
                lr,
                tokens_per_s,
            )
            for name, value in scalars.items():
                writer.add_scalar(f"train/{name}", value, step + 1)
            writer.flush()
        if (step + 1) % config.save_steps == 0 or step + 1 == steps:
            _checkpoint(model, optimizer, scheduler, state, rank)
    seconds = time.perf_counter() - started
    if writer:
        writer.close()
    # the last checkpoint holds the optimizer state: freed before rank 0 gathers a full copy of the weights (on a CPU
    # worker, the copy beside the state was its peak)
    optimizer.state.clear()
    target = save_student(model, model_path, os.path.join(output, MODEL_DIR), precision, lora, config.seed)
    worker = {
        "rank": rank,
        "node": nodes[rank],
        "rows_per_pass": per_worker,
        **memory.report(),
        "load_s": round(load_s, 1),
    }
    workers: list[Any] = [None] * world
    dist.all_gather_object(workers, worker)
    shards: list[Any] = [None] * world
    dist.all_gather_object(shards, sorted(shard_ids))
    if rank == 0:  # Ray Train's Result holds the last checkpoint's metrics only: hand these over in a file
        trained = state["tokens"] - tokens_before
        metrics = {
            "steps": state["step"],
            "resumed_from_step": resumed_from,
            "final_loss": state["losses"][-1] if state["losses"] else None,
            "train_loss": sum(state["losses"]) / len(state["losses"]) if state["losses"] else None,
            "tokens": trained,
            "seconds": round(seconds, 2),
            "tokens_per_s": round(trained / seconds, 1) if seconds and trained else None,
            "sharding": sharding,
            "mesh": list(shape),
            "precision": precision,
            "model_dir": target,
            "workers": workers,
            "shards": shards,
        }
        with open(os.path.join(output, METRICS), "w") as f:
            json.dump(metrics, f)


def _node_ranks(world: int) -> list[int]:
    """Each worker's node (by world rank), numbered in order of first appearance. Ray's node id, not Ray Train's node
    rank: that one numbers nodes by IP address, and the nodes of one machine (a loopback cluster) share theirs."""
    import ray

    ids: list[Any] = [None] * world
    dist.all_gather_object(ids, ray.get_runtime_context().get_node_id())
    order = list(dict.fromkeys(ids))
    return [order.index(node) for node in ids]


def _step(model: Any, optimizer: Any, micro: list[dict], device: Any, world: int, max_norm: float) -> tuple:
    """One optimizer step over this worker's micro-batches: the loss (the mean over the step's completion tokens on
    all workers), the step's non-padding tokens on all workers, the gradient norm before clipping."""

    counts = torch.tensor(
        [
            sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro),
            sum(int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel() for b in micro),
        ]
    )
    dist.all_reduce(counts)
    items, tokens = (int(c) for c in counts)
    summed = torch.zeros((), dtype=torch.float64)
    for batch in micro:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        out = model(**batch, num_items_in_batch=items / world)  # FSDP averages the gradients over the workers
        out.loss.backward()
        summed += out.loss.detach().double().cpu() * items / world
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    dist.all_reduce(summed)
    return float(summed) / items, tokens, norm


def _recorded(rows: Any, ids: set[str]) -> Any:
    """``rows`` as they are, their ids noted in ``ids`` (a worker's shard: every pass streams the same rows; packed
    rows carry none)."""
    for row in rows:
        ids.update(row.get("ids", ()))
        yield row


def _checkpoint(model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any], rank: int) -> None:
    """Every worker's shards, and rank 0's trainer state, reported to Ray Train as one checkpoint."""
    import ray.train

    with tempfile.TemporaryDirectory(prefix="amr-checkpoint-") as folder:
        save_checkpoint(model, optimizer, os.path.join(folder, STATE))
        if rank == 0:
            with open(os.path.join(folder, "trainer.json"), "w") as f:
                json.dump({**state, "scheduler": scheduler.state_dict()}, f)
        metrics = {"step": state["step"], "loss": state["losses"][-1]}
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
