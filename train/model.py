"""The student under FSDP2 (``torch.distributed.fsdp.fully_shard``) on a Ray Train worker: sharded from the start,
checkpointed in shards, saved whole by rank 0.

Loading: every worker builds the model on the meta device (no memory); each decoder layer and the whole model are
sharded over the device mesh and materialised empty, so a worker holds only its shard; rank 0 alone reads the
weights, in the training dtype, and broadcasts them (``broadcast_from_rank0``). Checkpoints are torch's distributed
checkpoints (DCP): each worker writes its own shards of the weights and the optimizer state, which Ray Train merges
into one checkpoint directory. The student is the full state dict gathered to rank 0 (``cpu_offload``), cast to the
training dtype, LoRA merged, written as a plain Hugging Face directory with its tokenizer.
"""

from __future__ import annotations

import os
import shutil
from typing import Literal

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from amr.config import LoraSettings

PRECISIONS: dict[str, tuple[torch.dtype, torch.dtype | None]] = {
    "bf16": (torch.float32, torch.bfloat16),
    "bf16-pure": (torch.bfloat16, None),
    "fp32": (torch.float32, None),
}
"""Precision -> (dtype of the sharded weights, their gradients and the optimizer state; compute dtype, None: the same)."""

Sharding = Literal["full", "hybrid", "none"]


def mesh_shape(sharding: str, nodes: list[int]) -> tuple[Sharding, tuple[int, ...]]:
    """The FSDP2 mesh for ``sharding`` over workers whose node ranks are ``nodes`` (by world rank): ``full`` shards
    over all of them (one dimension); ``hybrid`` shards within a node and replicates across nodes (replicate x
    shard); ``none`` replicates everywhere (world x 1); ``auto`` is hybrid on more than one node."""
    world, count = len(nodes), len(set(nodes))
    if sharding == "auto":
        sharding = "hybrid" if count > 1 else "full"
    if sharding == "full":
        return "full", (world,)
    if sharding == "none":
        return "none", (world, 1)
    per_node = world // count
    if sorted(nodes) != nodes or any(nodes.count(n) != per_node for n in set(nodes)):
        raise ValueError(
            f"scaling.sharding: hybrid needs the same number of workers on every node, in rank order; the workers' "
            f"nodes by rank: {nodes}"
        )
    return "hybrid", (count, per_node)


def device_mesh(device_type: str, shape: tuple[int, ...]) -> DeviceMesh:
    names = ("shard",) if len(shape) == 1 else ("replicate", "shard")
    return init_device_mesh(device_type, shape, mesh_dim_names=names)


def load(
    path: str,
    mesh: DeviceMesh,
    precision: str,
    device: torch.device,
    *,
    lora: LoraSettings | None = None,
    gradient_checkpointing: bool = False,
    seed: int = 0,
) -> nn.Module:
    """The model at ``path`` sharded over ``mesh``: built on the meta device, sharded, its shards filled from rank 0's
    copy (read in the training dtype)."""
    param_dtype, compute_dtype = PRECISIONS[precision]
    model = _build(path, param_dtype, lora, seed, weights=False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    buffers = {name: buffer.to(device) for name, buffer in model.named_buffers()}  # not in checkpoints: rotary tables
    policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    for block in _blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    model.to_empty(device=device)
    model.tie_weights()  # to_empty gives each module a parameter of its own: the LM head shares the embeddings' again
    for name, buffer in buffers.items():
        owner, _, attr = name.rpartition(".")
        model.get_submodule(owner)._buffers[attr] = buffer
    full = {}
    if torch.distributed.get_rank() == 0:
        full = _build(path, load_dtype(precision), lora, seed, weights=True).state_dict()
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    return model


def load_dtype(precision: str) -> torch.dtype:
    """The dtype weights are read and the student saved in: bfloat16 unless fp32."""
    return torch.float32 if precision == "fp32" else torch.bfloat16


def _build(path: str, dtype: torch.dtype, lora: LoraSettings | None, seed: int, weights: bool) -> nn.Module:
    """The model at ``path`` in ``dtype``, with its weights (rank 0) or on the meta device with real buffers."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    if weights:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    else:
        with init_empty_weights(include_buffers=False):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=dtype)
    if lora is None:
        return model
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)  # rank 0's adapter initialisation, broadcast to the others
    adapter = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, adapter)


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks to shard one by one: the model's own unit of splitting (``_no_split_modules``)."""
    names = set(getattr(model, "_no_split_modules", None) or model.get_base_model()._no_split_modules)
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(f"{type(model).__name__}: no blocks named {sorted(names)} to shard")
    return blocks


def save_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, folder: str) -> None:
    """This worker's shards of the weights and optimizer state into ``folder`` (a distributed checkpoint)."""
    import torch.distributed.checkpoint as dcp

    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=folder)


def load_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, folder: str) -> None:
    """Weights and optimizer state from a distributed checkpoint, resharded to this mesh."""
    import torch.distributed.checkpoint as dcp

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=folder)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def save_student(
    model: nn.Module, path: str, target: str, precision: str, lora: LoraSettings | None, seed: int = 0
) -> str | None:
    """The trained model as a plain HF directory (``target``, replaced atomically) with the tokenizer and generation
    config of ``path``, in the training dtype, LoRA merged. Every worker takes part in the gather; rank 0 writes and
    returns ``target``, the others None."""
    from transformers import AutoTokenizer, GenerationConfig

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if torch.distributed.get_rank() != 0:
        return None
    dtype = load_dtype(precision)
    student = _build(path, dtype, lora, seed, weights=False)
    student.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True)
    (student if lora is None else student.get_base_model()).tie_weights()  # assign gave each key its own tensor
    if lora is not None:
        student = student.merge_and_unload()
    if os.path.exists(os.path.join(path, "generation_config.json")):
        student.generation_config = GenerationConfig.from_pretrained(path)
    staging = f"{target}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    student.save_pretrained(staging, safe_serialization=True)
    AutoTokenizer.from_pretrained(path).save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target
