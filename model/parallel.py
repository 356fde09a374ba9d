"""Data parallelism, FSDP2 and compilation, applied to the model from outside.

Under ``torchrun`` (WORLD_SIZE > 1) the trainer joins a process group (NCCL on CUDA, gloo on
CPU) and wraps the model in DDP or shards it with FSDP2 ``fully_shard`` (one group per
transformer block, then the root). ``torch.compile`` is applied per block and to the loss
head (final norm, output projection, cross-entropy; torchtitan's pattern), so FSDP2 wraps
the same per-block modules compiled or not. ``Module.compile`` works in place, so parameter
names and checkpoints stay the same with and without it.

Checkpoint state goes through ``torch.distributed.checkpoint.state_dict`` with full (gathered,
CPU) state dicts, so a checkpoint is the same plain name -> tensor mapping whatever wrapped
the model, and can be resumed with another world size or mode.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.nn.parallel import DistributedDataParallel

from model.llama import Transformer


@dataclass
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> World:
    """Join the torchrun process group if there is one; a single process stays alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    world = World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(world.local_rank)
    return world


def close_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= dist.get_world_size()
    return value


def compile_model(model: Transformer, **options: Any) -> None:
    """Compile, in place, each transformer block and the loss head (``options`` go to
    ``torch.compile``). Blocks share one graph; the embedding lookup stays eager."""
    for block in model.layers:
        block.compile(**options)
    model.loss_head.compile(**options)


def parallelize(model: Transformer, world: World, mode: str, compile: bool, bf16: bool) -> torch.nn.Module:
    """Compile and wrap ``model`` for ``world``; returns the module to train."""
    if compile:
        compile_model(model)
    if not world.distributed:
        return model
    if mode == "ddp":
        device_ids = [world.local_rank] if next(model.parameters()).is_cuda else None
        # No buffer broadcast each forward: the only buffers, the RoPE tables, are equal everywhere.
        return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
    if mode == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(next(model.parameters()).device.type, (world.world_size,))
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
        for block in model.layers:
            fully_shard(block, mesh=mesh, mp_policy=mp)
        fully_shard(model, mesh=mesh, mp_policy=mp)
        return model
    raise ValueError(f"unknown parallel mode {mode!r} (ddp or fsdp)")


def unwrap(model: torch.nn.Module) -> Transformer:
    return model.module if isinstance(model, DistributedDataParallel) else model


@contextlib.contextmanager
def gradient_sync(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on accumulation micro-steps; sync on the last one."""
    if isinstance(model, DistributedDataParallel) and not enabled:
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # an FSDP2-sharded module
        model.set_requires_gradient_sync(enabled)
        yield
    else:
        yield


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every weight, gathered to CPU (a collective: every rank must call it)."""
    return get_model_state_dict(model, options=_FULL)


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Optimizer state keyed by parameter name, gathered to CPU (a collective)."""
    return get_optimizer_state_dict(model, optimizer, options=_FULL)


def load_full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    weights: dict[str, torch.Tensor], optimizer_state: dict) -> None:
    """Inverse of the two functions above; each rank keeps its own shard."""
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, weights, options=options)
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)
