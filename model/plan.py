"""`lmforge plan`: turn a GPU budget into a Chinchilla-sized Llama-style training run.

    lmforge plan --gpu-hours 8 --gpu h100 [--gpus 8] [--mfu 0.4 | --mfu-from LOG] [--json]
                 [--write-config configs/planned.yaml]

The rules, in order:

1. **Compute.** `C_budget = gpu_hours x 3600 x peak x MFU`, with the GPU's dense bf16 peak
   (`GPUS` in model/hardware.py) and the MFU given, measured (`--mfu-from`: the median `mfu` of a trainer
   `log.jsonl`, first steps skipped), or 0.40 (nanoGPT's GPT-2 124M on an H100).
2. **Shape.** Llama-style decoder, nanochat's depth/width rule: width about 64 x depth; here
   the aspect ratio width/depth may lie in [48, 96] with width a multiple of the head size
   (64 below width 1024, else 128), so that the candidate sizes are a few percent apart.
   Query heads = width / head size; key/value heads = a quarter of them (GQA 4:1, as
   Llama 3), else a half, else as many (MHA) when the head count is not divisible; SwiGLU hidden = 8/3 width rounded up to
   64 (model/llama.py's default); embeddings tied below width 4096 (Llama 3.2 1B/3B tie,
   8B does not). `params` counts every weight once, as `Transformer.num_params()` does.
3. **Chinchilla.** About 20 tokens per parameter (Hoffmann et al. 2022) and `C = 6 N D`.
   The plan takes the largest candidate whose `D = 20 N` tokens fit the budget, counting
   the FLOPs the hardware really does per token (`6 x matmul weights + 12 x layers x
   width x seq_len` for attention, PaLM's formula, which the trainer's MFU uses too), so
   the run never needs more than the GPU-hours given; `budget_used` says how much of them
   it does use. Because the candidates are fixed and sorted, params and tokens never
   decrease when the budget grows.
4. **Batch and learning rate**: DeepSeek LLM's compute-optimal fits (Bi et al. 2024,
   section 3.1): `B_tokens = 0.292 C^0.3271`, `lr = 0.3118 C^-0.1250`, with their
   `C = M D`, `M = 72 L d^2 + 6 L d T` non-embedding FLOPs per token. The batch is rounded
   to a power of two of sequences; the per-GPU micro-batch is the largest power of two whose
   activations fit in GPU memory next to weights, gradients and AdamW state (16 bytes per
   parameter; activations ~34 x width bytes per token per layer in bf16 with
   FlashAttention, Korthikanti et al. 2022, plus fp32 logits), the rest is gradient
   accumulation. Warmup 2% of the steps (at most 1,000); cosine to lr/10.
5. **Time and cost**: `tokens x FLOPs/token / (gpus x peak x MFU)`; cost at the
   `--usd-per-gpu-hour` given or the table's rough on-demand price.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.hardware import GPUS

class PlanError(ValueError):
    """A budget or log the planner cannot use; the message says which value."""


TOKENS_PER_PARAM = 20  # Chinchilla
ASPECT_RANGE = (48, 96)  # width / depth; nanochat fixes 64
DEFAULT_MFU = 0.40
MAX_DEPTH = 128


@dataclass(frozen=True)
class Shape:
    n_layers: int
    dim: int
    n_heads: int
    n_kv_heads: int
    hidden_dim: int
    vocab_size: int
    tie_embeddings: bool

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def params(self) -> int:
        """Every weight once, as ``Transformer.num_params()`` counts it."""
        return self._counts()[0]

    def non_embedding_params(self) -> int:
        return self._counts()[1]

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token, as ``Transformer.flops_per_token`` counts them."""
        _, _, at_zero, at_one = self._counts()
        return at_zero + seq_len * (at_one - at_zero)

    def _counts(self) -> tuple[float, ...]:
        # Layers are identical and attention FLOPs grow with the context, so every count is
        # linear in depth and FLOPs are linear in seq_len: the model's own counts for one
        # and two layers, at seq_len 0 and 1, give any depth and context without building it.
        one, two = (_model_counts(dataclasses.replace(self, n_layers=n)) for n in (1, 2))
        return tuple(a + (self.n_layers - 1) * (b - a) for a, b in zip(one, two))


@functools.lru_cache(maxsize=4096)
def _model_counts(shape: Shape) -> tuple[int, int, float, float]:
    """num_params, non-embedding params, flops_per_token(0) and (1) of a meta-device model."""
    import torch

    from model.llama import ModelConfig, Transformer

    config = ModelConfig(vocab_size=shape.vocab_size, dim=shape.dim, n_layers=shape.n_layers,
                         n_heads=shape.n_heads, n_kv_heads=shape.n_kv_heads, hidden_dim=shape.hidden_dim,
                         tie_embeddings=shape.tie_embeddings)
    with torch.device("meta"):
        model = Transformer(config)
    return (model.num_params(), model.num_params(exclude_embeddings=True), model.flops_per_token(0),
            model.flops_per_token(1))


def shape_for(n_layers: int, dim: int, vocab_size: int) -> Shape:
    head_dim = 64 if dim <= 1024 else 128
    n_heads = dim // head_dim
    group = next(g for g in (4, 2, 1) if n_heads % g == 0)
    hidden = 64 * math.ceil(int(8 * dim / 3) / 64)
    return Shape(n_layers, dim, n_heads, n_heads // group, hidden, vocab_size, tie_embeddings=dim < 4096)


def shapes_at_depth(depth: int, vocab_size: int) -> list[Shape]:
    """The shapes the depth/width rule allows at one depth, narrowest first."""
    low, high = ASPECT_RANGE[0] * depth, ASPECT_RANGE[1] * depth
    dims = range(64 * math.ceil(low / 64), high + 1, 64)
    return [shape_for(depth, dim, vocab_size) for dim in dims if dim <= 1024 or dim % 128 == 0]


def _preference(shape: Shape) -> tuple[int, float]:
    # Same size: prefer the aspect ratio nearest nanochat's 64.
    return shape.params(), abs(shape.dim / shape.n_layers - 64)


def candidate_shapes(vocab_size: int) -> list[Shape]:
    """Every shape the depth/width rule allows, smallest first."""
    return sorted((s for depth in range(1, MAX_DEPTH + 1) for s in shapes_at_depth(depth, vocab_size)),
                  key=_preference)


def measured_mfu(log_path: Path, skip: int = 10) -> float:
    """Median MFU of a trainer log (`log.jsonl`), its first `skip` steps (compile, warmup) left out."""
    if log_path.is_dir():
        log_path = log_path / "log.jsonl"
    values = []
    for line in log_path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if record.get("mfu") is not None and record.get("step", 0) > skip:
                values.append(record["mfu"])
    if not values:
        raise PlanError(f"{log_path}: no step after {skip} logs an mfu (CPU runs do not; "
                         "set train.peak_flops or pass --mfu)")
    return statistics.median(values)


def plan(gpu_hours: float, gpu: str = "h100", mfu: float = DEFAULT_MFU, gpus: int = 1,
         seq_len: int = 2048, vocab_size: int = 32_768,
         usd_per_gpu_hour: float | None = None) -> dict[str, Any]:
    """The training run a budget buys; see the module docstring for every rule."""
    if gpu not in GPUS:
        raise PlanError(f"unknown gpu {gpu!r} (known: {', '.join(GPUS)})")
    if gpu_hours <= 0 or gpus < 1 or not 0 < mfu <= 1:
        raise PlanError(f"need gpu_hours > 0, gpus >= 1 and 0 < mfu <= 1 "
                         f"(got {gpu_hours}, {gpus}, {mfu})")
    spec = GPUS[gpu]
    budget = gpu_hours * 3600 * spec.peak_bf16_flops * mfu

    def cost(shape: Shape) -> float:
        return TOKENS_PER_PARAM * shape.params() * shape.flops_per_token(seq_len)

    # Cost grows with width at a given depth, and the narrowest shape grows with depth: scan
    # until a depth's narrowest shape no longer fits (only the shapes looked at are counted).
    fitting = []
    for depth in range(1, MAX_DEPTH + 1):
        here = list(itertools.takewhile(lambda s: cost(s) <= budget, shapes_at_depth(depth, vocab_size)))
        if not here:
            break
        fitting += here
    if not fitting:
        smallest = shapes_at_depth(1, vocab_size)[0]
        need = cost(smallest) / (3600 * spec.peak_bf16_flops * mfu)
        raise PlanError(f"{gpu_hours} {gpu} GPU-hours at MFU {mfu} cannot train even the "
                         f"smallest model ({smallest.params():,} parameters): it needs "
                         f"{need:.3g} GPU-hours")
    shape = min(fitting, key=lambda s: (-s.params(), _preference(s)[1]))
    n = shape.params()

    non_embedding_flops = 72 * shape.n_layers * shape.dim ** 2 + 6 * shape.n_layers * shape.dim * seq_len
    deepseek_c = non_embedding_flops * TOKENS_PER_PARAM * n
    batch_tokens_target = 0.292 * deepseek_c ** 0.3271
    lr = 0.3118 * deepseek_c ** -0.1250
    global_seqs = max(gpus, 2 ** round(math.log2(max(1.0, batch_tokens_target / seq_len))))
    per_gpu = max(1, global_seqs // gpus)
    global_seqs = per_gpu * gpus
    micro = min(per_gpu, micro_batch_fit(shape, seq_len, spec.memory_gib))
    batch_tokens = global_seqs * seq_len
    steps = math.ceil(TOKENS_PER_PARAM * n / batch_tokens)
    tokens = steps * batch_tokens
    train_flops = tokens * shape.flops_per_token(seq_len)
    hours = train_flops / (gpus * spec.peak_bf16_flops * mfu) / 3600
    price = spec.usd_per_hour if usd_per_gpu_hour is None else usd_per_gpu_hour
    return {
        "gpu": gpu,
        "gpus": gpus,
        "gpu_hours_budget": gpu_hours,
        "peak_flops_per_gpu": spec.peak_bf16_flops,
        "mfu": mfu,
        "budget_flops": budget,
        "params": n,
        "non_embedding_params": shape.non_embedding_params(),
        "tokens": tokens,
        "tokens_per_param": round(tokens / n, 3),
        "compute_6nd": 6 * n * tokens,
        "train_flops": train_flops,
        "flops_per_token": shape.flops_per_token(seq_len),
        "model": {
            "n_layers": shape.n_layers, "dim": shape.dim, "n_heads": shape.n_heads,
            "n_kv_heads": shape.n_kv_heads, "hidden_dim": shape.hidden_dim,
            "head_dim": shape.head_dim, "vocab_size": shape.vocab_size,
            "tie_embeddings": shape.tie_embeddings, "max_seq_len": seq_len,
        },
        "seq_len": seq_len,
        "batch_tokens": batch_tokens,
        "batch_sequences": global_seqs,
        "micro_batch_per_gpu": micro,
        "grad_accum_steps": per_gpu // micro,
        "lr": float(f"{lr:.3g}"),
        "min_lr": float(f"{lr / 10:.3g}"),
        "warmup_steps": min(1000, max(1, round(0.02 * steps))),
        "steps": steps,
        "wall_hours": hours,
        "gpu_hours": hours * gpus,
        "budget_used": hours * gpus / gpu_hours,
        "usd_per_gpu_hour": price,
        "cost_usd": hours * gpus * price,
    }


def micro_batch_fit(shape: Shape, seq_len: int, memory_gib: float) -> int:
    """Largest power-of-two micro-batch whose activations fit beside the training state."""
    state = 16 * shape.params()  # bf16-autocast training keeps fp32 weights, grads, 2 Adam moments
    free = 0.9 * memory_gib * 2**30 - state
    per_seq = seq_len * (34 * shape.dim * shape.n_layers + 8 * shape.vocab_size)
    micro = 1
    while micro * 2 * per_seq <= free and micro < 1024:
        micro *= 2
    return micro


def training_preset(p: dict[str, Any], data_dir: str, out_dir: str) -> dict[str, Any]:
    """A model/config.py training config for the plan (what `--write-config` writes)."""
    m = p["model"]
    steps = p["steps"]
    return {
        "model": {k: m[k] for k in ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim",
                                    "max_seq_len", "tie_embeddings")},
        "data": {"dir": data_dir, "seq_len": p["seq_len"], "sampling": "random"},
        "train": {
            "out_dir": out_dir,
            "batch_size": p["micro_batch_per_gpu"],
            "batch_tokens": p["batch_tokens"],
            "max_steps": steps,
            "lr": p["lr"],
            "min_lr": p["min_lr"],
            "warmup_steps": p["warmup_steps"],
            "weight_decay": 0.1,
            "beta1": 0.9,
            "beta2": 0.95,
            "grad_clip": 1.0,
            "eval_every": max(1, steps // 50),
            "eval_batches": 20,
            "log_every": 10,
            "checkpoint_every": max(1, steps // 10),
            "precision": "bf16",
            "compile": True,
            "parallel": "ddp" if p["params"] < 1e9 else "fsdp",
            "peak_flops": p["peak_flops_per_gpu"],
        },
    }


def format_plan(p: dict[str, Any]) -> str:
    m = p["model"]
    lines = [
        f"budget      {p['gpu_hours_budget']:g} GPU-hours of {p['gpus']} x {p['gpu']} "
        f"({p['peak_flops_per_gpu'] / 1e12:.0f} TFLOP/s bf16 dense) at MFU {p['mfu']:.0%} "
        f"= {p['budget_flops']:.3g} FLOPs",
        f"model       {p['params'] / 1e6:,.1f}M parameters ({p['non_embedding_params'] / 1e6:,.1f}M "
        f"non-embedding): {m['n_layers']} layers, width {m['dim']}, {m['n_heads']} heads "
        f"({m['n_kv_heads']} KV, head {m['head_dim']}), SwiGLU {m['hidden_dim']}, vocab "
        f"{m['vocab_size']:,}{', tied embeddings' if m['tie_embeddings'] else ''}",
        f"data        {p['tokens'] / 1e9:,.3f}B tokens = {p['tokens_per_param']:.1f} tokens/param; "
        f"6ND = {p['compute_6nd']:.3g} FLOPs; with attention {p['train_flops']:.3g} FLOPs",
        f"batch       {p['batch_tokens']:,} tokens = {p['batch_sequences']} x {p['seq_len']}; "
        f"micro-batch {p['micro_batch_per_gpu']} per GPU x {p['grad_accum_steps']} accumulation",
        f"schedule    {p['steps']:,} steps, lr {p['lr']:.3g} (warmup {p['warmup_steps']}, cosine "
        f"to {p['min_lr']:.3g})",
        f"time        {p['wall_hours']:,.2f} h wall, {p['gpu_hours']:,.2f} GPU-hours "
        f"({p['budget_used']:.0%} of the budget), about ${p['cost_usd']:,.0f} at "
        f"${p['usd_per_gpu_hour']:.2f}/GPU-hour",
    ]
    return "\n".join(lines)
