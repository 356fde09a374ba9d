"""Data, tensor and pipeline parallelism, FSDP2 and compilation, applied to the model from outside.

Under ``torchrun`` (WORLD_SIZE > 1) the trainer joins a process group (NCCL on CUDA, gloo on
CPU) and lays the ranks out on a 3-D ``DeviceMesh`` ("pp", "dp", "tp"), whose sizes the
config's ``parallel`` section gives (``ParallelConfig`` in ``model/config.py``; dp x tp x pp
must equal WORLD_SIZE). Each parallelism is applied in turn, torchtitan's order:

1. **Pipeline** (``pp`` > 1): the layers are cut into ``pp`` stages (two per rank for the
   interleaved schedule), each a ``PipelineStageModule`` whose parameters keep the full
   model's names. ``torch.distributed.pipelining`` runs them with ``Schedule1F1B`` or
   ``ScheduleInterleaved1F1B``, splitting each rank's micro-batch into ``pp_microbatches``.
   The loss exists on the last stage; it is summed over the pipeline group so every rank
   logs it, and the gradient norm is summed the same way before clipping.
2. **Tensor** (``tp`` > 1): DTensor parallel styles, Megatron's layout. Projections that
   read the residual stream (``wqkv``, ``w13``, ``output``) are column-sharded, those that
   write it (``wo``, ``w2``) row-sharded; the embedding is row-sharded over the vocabulary.
   Between them the residual stream is sharded over the sequence (sequence parallelism):
   the RMSNorms run on 1/tp of the tokens and the column-parallel matmuls all-gather their
   input. The loss head gathers the sequence, computes vocabulary-sharded logits and
   gathers them before the cross-entropy (``loss_parallel`` is not used: the padded
   vocabulary columns are sliced off first, which needs the whole row).
3. **Compile** per block and loss head (``compile_model``).
4. **Data**: FSDP2 ``fully_shard`` over "dp" (one group per block, then the root), or DDP
   when only data parallelism is in use and ``train.parallel`` is ``ddp``.

Fused projections under TP. ``wqkv`` stacks q, k and v row-wise and ``w13`` the gate and up
halves, so a contiguous column shard would give rank 0 all of q and none of v. Before
sharding, ``parallelize`` reorders the rows as [q_0 k_0 v_0 | q_1 k_1 v_1 | ...] (and
[gate_0 up_0 | gate_1 up_1 | ...]), so rank r's shard holds its own heads of each part;
``Attention`` reads its local widths from the output. The state functions below undo the
reordering, so checkpoints always hold the plain layout. GQA needs ``n_kv_heads``
divisible by ``tp`` (fewer key/value heads than ranks is refused, not replicated).

Checkpoint state goes through ``torch.distributed.checkpoint.state_dict`` with full
(gathered, CPU) state dicts, pipeline stages merged on the first rank: a checkpoint is the
same plain name -> tensor mapping (``model/checkpoint.py``) whatever the layout, so a run
saved under one layout resumes under any other, and ``lmforge generate``/``export-hf`` read
it as they read a one-process checkpoint.

Launch (one node; ``nproc_per_node`` = dp x tp x pp)::

    torchrun --standalone --nproc_per_node 4 -m model.train CONFIG   # with, in CONFIG:
    # parallel: {dp: 2, tp: 2, pp: 1}                 FSDP2 x TP
    # parallel: {dp: 1, tp: 1, pp: 4}                 1F1B pipeline
    # parallel: {dp: 2, tp: 1, pp: 2, pp_schedule: interleaved_1f1b, pp_microbatches: 4}
    # train: {parallel: fsdp}                         plain FSDP2 (tp = pp = 1), or ddp

Not available: tied embeddings with pp > 1 (the matrix would live on two stages), DDP
composed with tp or pp (use ``train.parallel: fsdp``), and trainers that override
``compute_loss`` (SFT, DPO) under pp > 1 (the schedule computes the loss itself).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.nn.parallel import DistributedDataParallel

from model.llama import ModelConfig, Transformer

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

    from model.config import ParallelConfig


@dataclass
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    dp: int = 1
    tp: int = 1
    pp: int = 1
    mesh: DeviceMesh | None = None  # ("pp", "dp", "tp") when distributed

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def dp_rank(self) -> int:
        """Which share of each global batch this rank reads (ranks of one TP/PP group read the same)."""
        return self.mesh.get_local_rank("dp") if self.mesh is not None else 0


def init_distributed(device_type: str, layout: ParallelConfig | None = None) -> World:
    """Join the torchrun process group if there is one and lay the ranks out on a
    ("pp", "dp", "tp") mesh; a single process stays alone. TrainConfigError when
    ``layout``'s degrees do not multiply to WORLD_SIZE."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if layout is not None:
        dp, tp, pp = layout.degrees(world_size)
    else:
        dp, tp, pp = world_size, 1, 1
    if world_size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device_type, (pp, dp, tp), mesh_dim_names=("pp", "dp", "tp"))
    return World(dist.get_rank(), dist.get_world_size(), local_rank, dp, tp, pp, mesh)


def close_distributed() -> None:
    """Leave the process group. On gloo, first wait (at most a minute) until every rank is
    here: a rank that tore its group down while a peer's last collectives were still in
    flight could leave gloo threads holding work at interpreter exit, which aborts the
    process ("terminate called without an active exception"). A rank that failed makes the
    wait end in an error, which is ignored: the group is destroyed either way."""
    if not dist.is_initialized():
        return
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=60))
    except RuntimeError:
        pass
    finally:
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


def compile_model(model: nn.Module, **options: Any) -> None:
    """Compile, in place, each transformer block and the loss head (``options`` go to
    ``torch.compile``). Blocks share one graph; the embedding lookup stays eager."""
    for block in model.layers.children():
        block.compile(**options)
    if getattr(model, "loss_head", None) is not None:
        model.loss_head.compile(**options)


# -- pipeline parallelism -----------------------------------------------------------------


class PipelineStageModule(nn.Module):
    """Consecutive layers of a ``Transformer`` (plus the embedding on the first stage, the
    final norm, output and loss head on the last), sharing the model's modules, so its
    parameter names are the model's: ``layers.5.attention.wqkv.weight`` stays that.

    Input: token ids (first stage) or the hidden states of the stage before; output: hidden
    states, or the logits on the last stage. ``sequence_shards`` is the tensor-parallel
    degree: the hidden states between stages then hold 1/tp of the sequence.
    """

    def __init__(self, model: Transformer, layer_ids: range, first: bool, last: bool,
                 sequence_shards: int = 1) -> None:
        super().__init__()
        self.config = model.config
        self.sequence_shards = sequence_shards
        self.tok_embeddings = model.tok_embeddings if first else None
        self.layers = nn.ModuleDict({str(i): model.layers[i] for i in layer_ids})
        self.norm = model.norm if last else None
        self.output = model.output if last else None
        self.loss_head = model.loss_head if last else None
        self.register_buffer("rope_cos", model.rope_cos, persistent=False)
        self.register_buffer("rope_sin", model.rope_sin, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tok_embeddings is not None:
            T = x.shape[1]
            h = self.tok_embeddings(x)
        else:
            T = x.shape[1] * self.sequence_shards
            h = x
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        for layer in self.layers.children():
            h = layer(h, cos, sin)
        if self.loss_head is None:
            return h
        return self.loss_head(h, self.norm.weight, self.output.weight)


class PipelineModel(nn.Module):
    """This rank's pipeline stages and the schedule that runs them.

    ``forward_backward`` runs a training micro-batch through the schedule (forward and
    backward of every pipeline microbatch); ``forward`` evaluates one. Both return the mean
    loss on every rank of the pipeline group. Parameter names carry a ``stages.K.`` prefix
    here; the state functions of this module strip and restore it.
    """

    def __init__(self, stages: list[PipelineStageModule], stage_ids: list[int], num_stages: int,
                 mesh: DeviceMesh, schedule_name: str, microbatches: int, device: torch.device) -> None:
        super().__init__()
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleInterleaved1F1B

        self.config = stages[0].config
        self.stages = nn.ModuleList(stages)
        self.group = mesh.get_group("pp")
        self.pp_rank = mesh.get_local_rank("pp")
        self.has_first = 0 in stage_ids
        self.has_last = num_stages - 1 in stage_ids
        self._scale = 1.0
        pipeline_stages = [PipelineStage(module, i, num_stages, device, group=self.group)
                           for module, i in zip(stages, stage_ids)]
        if schedule_name == "interleaved_1f1b":
            self.schedule = ScheduleInterleaved1F1B(pipeline_stages, microbatches, loss_fn=self._loss)
        else:
            (stage,) = pipeline_stages
            self.schedule = Schedule1F1B(stage, microbatches, loss_fn=self._loss)

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # The schedule averages the gradients over its microbatches; _scale adds the
        # trainer's gradient accumulation.
        loss = F.cross_entropy(logits.flatten(0, -2).float(), targets.reshape(-1), ignore_index=-100)
        return loss * self._scale

    def _run(self, run: Any, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        losses: list[torch.Tensor] = []
        args = (inputs,) if self.has_first else ()
        run(*args, target=targets if self.has_last else None, losses=losses)
        if self.has_last:
            loss = torch.stack([loss.detach() for loss in losses]).mean() / self._scale
        else:
            loss = torch.zeros((), device=inputs.device)
        dist.all_reduce(loss, group=self.group)  # only the last stage's is non-zero
        return loss

    def forward_backward(self, inputs: torch.Tensor, targets: torch.Tensor, accumulation: int = 1) -> torch.Tensor:
        """Train on one micro-batch: gradients of its mean loss / ``accumulation`` are added."""
        self._scale = 1.0 / accumulation
        try:
            return self._run(self.schedule.step, inputs, targets)
        finally:
            self._scale = 1.0

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean loss of a batch, forward only."""
        return self._run(self.schedule.eval, inputs, targets)


def split_pipeline(model: Transformer, world: World, layout: ParallelConfig) -> list[tuple[int, PipelineStageModule]]:
    """This rank's (stage id, stage module) pairs: ``pp x stages_per_rank`` stages of
    near-equal layer counts, stage ``r + k*pp`` on pipeline rank ``r``."""
    config = model.config
    num_stages = world.pp * layout.stages_per_rank
    if config.tie_embeddings:
        raise ValueError("pipeline parallelism (parallel.pp > 1) cannot split tied embeddings across stages; "
                         "set model.tie_embeddings: false")
    if config.n_layers < num_stages:
        raise ValueError(f"model.n_layers {config.n_layers} is fewer than the {num_stages} pipeline stages "
                         f"(parallel.pp {world.pp} x {layout.stages_per_rank} per rank for {layout.pp_schedule})")
    bounds = [config.n_layers * s // num_stages for s in range(num_stages + 1)]
    pp_rank = world.mesh.get_local_rank("pp")
    ids = [pp_rank + k * world.pp for k in range(layout.stages_per_rank)]
    return [(s, PipelineStageModule(model, range(bounds[s], bounds[s + 1]), s == 0, s == num_stages - 1, world.tp))
            for s in ids]


# -- tensor parallelism -------------------------------------------------------------------


def _fused_widths(config: ModelConfig) -> dict[str, list[int]]:
    """Fused weight (name suffix) -> the row counts of the parts it stacks."""
    kv = config.n_kv_heads * config.head_dim
    return {"attention.wqkv.weight": [config.n_heads * config.head_dim, kv, kv],
            "feed_forward.w13.weight": [config.hidden_dim, config.hidden_dim]}


def interleave_parts(tensor: torch.Tensor, widths: list[int], shards: int) -> torch.Tensor:
    """Rows [a; b; c] as [a_0 b_0 c_0; a_1 b_1 c_1; ...]: contiguous shard r holds part r of each."""
    chunks = [part.chunk(shards) for part in tensor.split(widths)]
    return torch.cat([part[r] for r in range(shards) for part in chunks])


def deinterleave_parts(tensor: torch.Tensor, widths: list[int], shards: int) -> torch.Tensor:
    """Inverse of ``interleave_parts``."""
    blocks = [block.split([w // shards for w in widths]) for block in tensor.chunk(shards)]
    return torch.cat([block[i] for i in range(len(widths)) for block in blocks])


def _tp_relayout(tensors: dict[str, Any], config: ModelConfig, shards: int, inverse: bool) -> dict[str, Any]:
    """Apply (or undo) the TP row order to every fused weight, or moment, in ``tensors``."""
    if shards == 1:
        return tensors
    move = deinterleave_parts if inverse else interleave_parts
    out = dict(tensors)
    for name, value in tensors.items():
        for suffix, widths in _fused_widths(config).items():
            if name.endswith(suffix):
                if isinstance(value, dict):  # an optimizer state: moments shaped like the weight
                    out[name] = {k: move(v, widths, shards) if v.dim() else v for k, v in value.items()}
                else:
                    out[name] = move(value, widths, shards)
    return out


def _check_tensor_parallel(config: ModelConfig, tp: int, seq_len: int) -> None:
    problems = []
    if config.n_kv_heads % tp:
        problems.append(f"n_kv_heads {config.n_kv_heads} (each rank needs whole key/value heads; grouped-query "
                        "attention with fewer key/value heads than ranks is not supported)")
    if config.n_heads % tp:
        problems.append(f"n_heads {config.n_heads}")
    if config.hidden_dim % tp:
        problems.append(f"hidden_dim {config.hidden_dim}")
    if config.padded_vocab_size % tp:
        problems.append(f"the padded vocabulary {config.padded_vocab_size}")
    if seq_len % tp:
        problems.append(f"data.seq_len {seq_len} (sequence parallelism shards it)")
    if problems:
        raise ValueError(f"parallel.tp {tp} must divide " + "; ".join(problems))


def apply_tensor_parallel(part: nn.Module, tp_mesh: DeviceMesh) -> None:
    """Shard a ``Transformer`` or ``PipelineStageModule`` over ``tp_mesh`` (see the module doc)."""
    from torch.distributed.tensor import DTensor, Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    tp = tp_mesh.size()
    widths = _fused_widths(part.config)
    with torch.no_grad():
        for block in part.layers.children():
            for suffix, parts in widths.items():
                weight = block.get_parameter(suffix)
                weight.copy_(interleave_parts(weight, parts, tp))
    plan: dict[str, Any] = {}
    if part.tok_embeddings is not None:
        plan["tok_embeddings"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1))
    if part.norm is not None:
        plan["norm"] = SequenceParallel()  # only places the gain: the loss head applies it
    if part.output is not None and not part.config.tie_embeddings:
        plan["output"] = ColwiseParallel()  # only places the matrix, as for the norm
    parallelize_module(part, tp_mesh, plan)
    if part.config.tie_embeddings and part.output is not None:
        part.output.weight = part.tok_embeddings.weight  # both row-sharded over the vocabulary
    block_plan = {
        "attention_norm": SequenceParallel(),
        "attention.wqkv": ColwiseParallel(input_layouts=Shard(1)),
        "attention.wo": RowwiseParallel(output_layouts=Shard(1)),
        "ffn_norm": SequenceParallel(),
        "feed_forward.w13": ColwiseParallel(input_layouts=Shard(1)),
        "feed_forward.w2": RowwiseParallel(output_layouts=Shard(1)),
    }
    for block in part.layers.children():
        parallelize_module(block, tp_mesh, block_plan)

    if part.loss_head is not None:
        def gather_inputs(module: nn.Module, args: tuple) -> tuple:
            # Hidden states arrive sequence-sharded; targets (if any) are the same on every rank.
            h, norm_weight, output_weight, *targets = args
            if not isinstance(h, DTensor):
                h = DTensor.from_local(h, tp_mesh, [Shard(1)], run_check=False)
            targets = [t if t is None else DTensor.from_local(t, tp_mesh, [Replicate()], run_check=False)
                       for t in targets]
            return (h.redistribute(placements=[Replicate()]), norm_weight, output_weight, *targets)

        def local_output(module: nn.Module, args: tuple, output: Any) -> torch.Tensor:
            # Replicated: every rank holds the whole loss (or logits) and its whole gradient.
            return output.redistribute(placements=[Replicate()]).to_local()

        part.loss_head.register_forward_pre_hook(gather_inputs)
        part.loss_head.register_forward_hook(local_output)


# -- putting it together ------------------------------------------------------------------


def parallelize(model: Transformer, world: World, mode: str, compile: bool, bf16: bool,
                layout: ParallelConfig | None = None, seq_len: int | None = None) -> nn.Module:
    """Split, shard, compile and wrap ``model`` for ``world``; returns the module to train
    (``model`` itself, a DDP wrapper, or a ``PipelineModel`` of this rank's stages)."""
    if world.tp > 1:
        _check_tensor_parallel(model.config, world.tp, seq_len or model.config.max_seq_len)
    if (world.tp > 1 or world.pp > 1) and world.dp > 1 and mode == "ddp":
        raise ValueError("train.parallel 'ddp' does not compose with parallel.tp or parallel.pp; "
                         "set train.parallel: fsdp (FSDP2 over the data-parallel ranks)")
    device = next(model.parameters()).device
    staged = split_pipeline(model, world, layout) if world.pp > 1 else [(0, model)]
    parts = [part for _, part in staged]
    for part in parts:
        if world.tp > 1:
            apply_tensor_parallel(part, world.mesh["tp"])
        if compile:
            compile_model(part)
    if world.distributed and mode == "ddp" and world.tp == world.pp == 1:
        device_ids = [world.local_rank] if device.type == "cuda" else None
        # No buffer broadcast each forward: the only buffers, the RoPE tables, are equal everywhere.
        return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
    if world.dp > 1:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
        # A pipeline runs several microbatches through a stage: keep its weights gathered between them.
        options = dict(mesh=world.mesh["dp"], mp_policy=mp, reshard_after_forward=world.pp == 1)
        for part in parts:
            for block in part.layers.children():
                fully_shard(block, **options)
            fully_shard(part, **options)
    if world.pp == 1:
        return model
    microbatches = layout.pp_microbatches or world.pp
    return PipelineModel(parts, [s for s, _ in staged], world.pp * layout.stages_per_rank, world.mesh,
                         layout.pp_schedule, microbatches, device)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on accumulation micro-steps; sync on the last one.
    (A pipeline schedule syncs its stages itself.)"""
    if isinstance(model, DistributedDataParallel) and not enabled:
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # an FSDP2-sharded module
        model.set_requires_gradient_sync(enabled)
        yield
    else:
        yield


def clip_grad_norm_(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Clip the gradients of ``model`` to global norm ``max_norm`` and return that norm,
    over every shard (FSDP, TP) and every pipeline stage (a collective)."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    if isinstance(model, PipelineModel):
        norm = norm ** 2
        dist.all_reduce(norm, group=model.group)
        norm = norm.sqrt()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


# -- checkpoint state ---------------------------------------------------------------------

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
_STAGE_PREFIX = re.compile(r"^stages\.\d+\.")


def _config(model: nn.Module) -> ModelConfig:
    return unwrap(model).config


def _tp_degree(model: nn.Module) -> int:
    """The tensor-parallel degree ``model``'s weights are sharded with (1: none)."""
    for name, p in model.named_parameters():
        if name.endswith("attention.wqkv.weight"):
            mesh = getattr(p, "device_mesh", None)
            names = (mesh.mesh_dim_names or ()) if mesh is not None else ()
            return mesh["tp"].size() if "tp" in names else 1
    return 1


def _gather_stages(model: PipelineModel, value: Any) -> list[Any]:
    """``value`` of every pipeline rank, on the first rank of the pipeline group ([] elsewhere)."""
    gathered: list[Any] | None = [None] * dist.get_world_size(model.group) if model.pp_rank == 0 else None
    dist.gather_object(value, gathered, group=model.group, group_dst=0)
    return gathered or []


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight, gathered to CPU in the plain layout (a collective: every rank must call it)."""
    if isinstance(model, PipelineModel):
        local = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        local = {_STAGE_PREFIX.sub("", k): v.cpu() for k, v in local.items()}
        state = {k: v for part in _gather_stages(model, local) for k, v in part.items()}
    else:
        state = get_model_state_dict(model, options=_FULL)
    return _tp_relayout(state, _config(model), _tp_degree(model), inverse=True)


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Optimizer state keyed by parameter name, gathered to CPU in the plain layout (a collective)."""
    if isinstance(model, PipelineModel):
        local = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))
        state = {"state": {_STAGE_PREFIX.sub("", k): {f: v.cpu() for f, v in s.items()}
                           for k, s in local["state"].items()},
                 "param_groups": [{**g, "params": [_STAGE_PREFIX.sub("", p) for p in g["params"]]}
                                  for g in local["param_groups"]]}
        parts = _gather_stages(model, state)
        if not parts:
            return {"state": {}, "param_groups": []}
        merged = {"state": {k: v for part in parts for k, v in part["state"].items()},
                  "param_groups": [{**group, "params": [p for part in parts for p in part["param_groups"][i]["params"]]}
                                   for i, group in enumerate(parts[0]["param_groups"])]}
    else:
        merged = get_optimizer_state_dict(model, optimizer, options=_FULL)
    if not merged.get("state"):
        return merged
    merged["state"] = _tp_relayout(merged["state"], _config(model), _tp_degree(model), inverse=True)
    return merged


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                    weights: dict[str, torch.Tensor], optimizer_state: dict) -> None:
    """Inverse of the two functions above; each rank keeps its own shard of its own stages."""
    config, tp = _config(model), _tp_degree(model)
    weights = _tp_relayout(weights, config, tp, inverse=False)
    optimizer_state = {**optimizer_state, "state": _tp_relayout(optimizer_state["state"], config, tp, inverse=False)}
    if isinstance(model, PipelineModel):
        own = {_STAGE_PREFIX.sub("", k): k for k in model.state_dict()}
        weights = {own[k]: v for k, v in weights.items() if k in own}
        optimizer_state = {
            "state": {own[k]: v for k, v in optimizer_state["state"].items() if k in own},
            "param_groups": [{**g, "params": [own[p] for p in g["params"] if p in own]}
                             for g in optimizer_state["param_groups"]]}
    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, weights, options=options)
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)
