"""The pretraining loop: a ``Trainer`` that owns model, optimizer, data and checkpoints.

One ``train_step()`` is one optimizer step over ``grad_accum_steps`` micro-batches per rank.
Choices that matter:

- AdamW with weight decay on matrices (embeddings and projections) only, never on norm
  gains; fused kernels on CUDA.
- Learning rate: linear warmup to ``lr`` over ``warmup_steps``, then cosine to ``min_lr`` at
  ``max_steps``. It is a pure function of the step, so the "scheduler state" is the step.
- bf16 autocast on CUDA, plain fp32 on CPU (so CPU runs are exactly reproducible).
- NaN/Inf guard: a step whose loss or gradient norm is not finite is skipped (no update, the
  data still advances); ``max_bad_steps`` in a row halt training with ``TrainingHalted``.
- Logs: one JSON object per step in ``OUT/log.jsonl`` (loss, lr, grad norm, tokens/s, MFU,
  validation loss when measured), a line printed every ``log_every`` steps, and the same
  scalars to TensorBoard in ``OUT/tensorboard`` when tensorboard is installed. Rank 0 only.
- Checkpoints in ``OUT/checkpoints`` (``model/checkpoint.py``); with ``resume`` a new
  Trainer on the same ``out_dir`` continues from the newest complete one, and on CPU the
  losses then equal those of an uninterrupted run bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from model import parallel
from model.char_text import prepare_char_shards
from model.checkpoint import latest_checkpoint, read_checkpoint, save_checkpoint
from model.config import PretrainConfig, TrainConfigError
from model.data import ShardDataset, describe_shards
from model.hardware import default_device, peak_flops_for
from model.llama import Transformer

class TrainingHalted(RuntimeError):
    """Too many consecutive non-finite steps."""


def cosine_lr(step: int, lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


class Trainer:
    """Build everything a run needs from a ``PretrainConfig``; resume if a checkpoint exists."""

    def __init__(self, config: PretrainConfig) -> None:
        self.config = config
        tc = config.train
        self.world = parallel.init_distributed(default_device(tc.device).type)
        self.device = default_device(tc.device, self.world.local_rank)
        self.bf16 = tc.precision == "bf16" or (tc.precision == "auto" and self.device.type == "cuda")
        self.out_dir = Path(tc.out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"

        data_dir = self._prepare_data()
        shards = describe_shards(data_dir)
        self.tokenizer_path = shards["tokenizer"]
        model_config = config.model
        if model_config.vocab_size is None:
            model_config = dataclasses.replace(model_config, vocab_size=shards["vocab_size"])
        elif model_config.vocab_size < shards["vocab_size"]:
            raise TrainConfigError(f"model.vocab_size {model_config.vocab_size} is smaller than the shards' "
                             f"vocab_size {shards['vocab_size']} in {data_dir}")
        if config.data.seq_len > model_config.max_seq_len:
            raise TrainConfigError(f"data.seq_len {config.data.seq_len} exceeds model.max_seq_len {model_config.max_seq_len}")
        self.model_config = model_config

        # Same seed on every rank: FSDP2 shards each rank's own (identical) initialisation.
        torch.manual_seed(tc.seed)
        model = Transformer(model_config).to(self.device)
        self.flops_per_token = model.flops_per_token(config.data.seq_len)
        self.num_params = model.num_params()
        self.model = parallel.parallelize(model, self.world, tc.parallel, tc.compile, self.bf16)
        self.optimizer = self._build_optimizer()
        self.peak_flops = peak_flops_for(self.device, tc.peak_flops)

        data_args = dict(seq_len=config.data.seq_len, batch_size=tc.batch_size, rank=self.world.rank,
                         world_size=self.world.world_size, seed=tc.seed)
        self.train_data = ShardDataset(data_dir, "train", sampling=config.data.sampling, **data_args)
        has_val = any(Path(data_dir).glob("val-*.bin"))
        self.val_data = ShardDataset(data_dir, "val", sampling="sequential", **data_args) if has_val else None

        self.step = 0
        self.bad_steps = 0
        self.tokens_seen = 0
        self._tensorboard = None
        if tc.resume and (latest := latest_checkpoint(self.checkpoint_dir)) is not None:
            self.load_state_dict(read_checkpoint(latest))
            self._print(f"resumed from {latest} at step {self.step}")

    def _prepare_data(self) -> Path:
        dc = self.config.data
        if dc.dir is not None:
            return Path(dc.dir)
        data_dir = self.out_dir / "data"
        if self.world.is_main:
            prepare_char_shards(dc.text_files, data_dir, dc.val_fraction)
        parallel.barrier()
        return data_dir

    def _build_optimizer(self) -> torch.optim.Optimizer:
        tc = self.config.train
        params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=tc.lr, betas=(tc.beta1, tc.beta2),
                                 fused=self.device.type == "cuda")

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _print(self, message: str) -> None:
        if self.world.is_main:
            print(message, flush=True)

    def lr_at(self, step: int) -> float:
        tc = self.config.train
        return cosine_lr(step, tc.lr, tc.min_lr, tc.warmup_steps, tc.max_steps)

    def train_step(self) -> dict[str, Any]:
        """One optimizer step; returns its log record."""
        tc = self.config.train
        start = time.perf_counter()
        self.model.train()
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(tc.grad_accum_steps):
            inputs, targets = self.train_data.next_batch()
            inputs = inputs.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            with parallel.gradient_sync(self.model, enabled=micro == tc.grad_accum_steps - 1), self._autocast():
                loss = self.model(inputs, targets) / tc.grad_accum_steps
                loss.backward()
            loss_sum += loss.detach()
        # Clipping at +inf still returns the global norm (and, sharded, it is a collective).
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip or float("inf"))
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        loss_value = parallel.all_reduce_mean(loss_sum).item()
        grad_norm_value = grad_norm.item()
        finite = math.isfinite(loss_value) and math.isfinite(grad_norm_value)
        if finite:
            self.optimizer.step()
            self.bad_steps = 0
        else:
            self.bad_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        tokens = tc.batch_size * tc.grad_accum_steps * self.config.data.seq_len * self.world.world_size
        self.tokens_seen += tokens
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        tokens_per_s = tokens / elapsed
        mfu = (self.flops_per_token * tokens_per_s / (self.peak_flops * self.world.world_size)
               if self.peak_flops else None)
        record = {"step": self.step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm_value,
                  "tokens_per_s": tokens_per_s, "mfu": mfu, "tokens": self.tokens_seen}
        if not finite:
            record["skipped"] = True
            if self.bad_steps >= tc.max_bad_steps:
                raise TrainingHalted(
                    f"halting at step {self.step}: {self.bad_steps} consecutive steps had a non-finite loss "
                    f"or gradient (last loss {loss_value}, grad norm {grad_norm_value}, lr {lr:.3g}); lower "
                    f"train.lr, check the data, or resume from an earlier checkpoint in {self.checkpoint_dir}")
        return record

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean validation loss over ``eval_batches`` fixed batches (None without val shards)."""
        if self.val_data is None:
            return None
        self.model.eval()
        total = torch.zeros((), device=self.device)
        n = self.config.train.eval_batches
        for inputs, targets in self.val_data.validation_batches(n):
            with self._autocast():
                total += self.model(inputs.to(self.device), targets.to(self.device)).float()
        return parallel.all_reduce_mean(total / n).item()

    def train(self, stop_at: int | None = None) -> list[dict[str, Any]]:
        """Train to ``max_steps`` (or stop after step ``stop_at``); returns this call's records."""
        tc = self.config.train
        last = tc.max_steps if stop_at is None else min(stop_at, tc.max_steps)
        records = []
        if self.world.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self._print(f"training {self.num_params / 1e6:.2f}M parameters on {self.world.world_size} x "
                    f"{self.device.type}, steps {self.step} -> {last}")
        if self.world.is_main and self._tensorboard is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # optional; the JSONL log has everything
                pass
            else:
                self._tensorboard = SummaryWriter(str(self.out_dir / "tensorboard"))
        saved_at = None
        while self.step < last:
            record = self.train_step()
            if tc.eval_every and (self.step % tc.eval_every == 0 or self.step == tc.max_steps):
                record["val_loss"] = self.evaluate()
            self._log(record)
            records.append(record)
            if tc.checkpoint_every and self.step % tc.checkpoint_every == 0:
                self.save_checkpoint()
                saved_at = self.step
        if records and saved_at != self.step:
            self.save_checkpoint()
        return records

    def _log(self, record: dict[str, Any]) -> None:
        if not self.world.is_main:
            return
        with open(self.out_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(key, value, record["step"])
        if record["step"] % self.config.train.log_every == 0 or "val_loss" in record or record.get("skipped"):
            mfu = f" mfu {record['mfu'] * 100:.1f}%" if record["mfu"] is not None else ""
            val = f" val {record['val_loss']:.4f}" if record.get("val_loss") is not None else ""
            skipped = " SKIPPED (non-finite)" if record.get("skipped") else ""
            print(f"step {record['step']:6d} loss {record['loss']:.4f}{val} lr {record['lr']:.2e} "
                  f"grad {record['grad_norm']:.3f} {record['tokens_per_s']:,.0f} tok/s{mfu}{skipped}",
                  file=sys.stdout, flush=True)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs (a collective under DDP/FSDP: every rank must call it)."""
        rng = {"torch_cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["torch_cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "step": self.step,
            "bad_steps": self.bad_steps,
            "tokens_seen": self.tokens_seen,
            "scheduler": {"kind": "warmup_cosine", "lr": self.config.train.lr, "min_lr": self.config.train.min_lr,
                          "warmup_steps": self.config.train.warmup_steps, "max_steps": self.config.train.max_steps},
            "data": self.train_data.state_dict(),
            "config": dataclasses.asdict(self.config),
            "model": parallel.full_model_state(self.model),
            "optimizer": parallel.full_optimizer_state(self.model, self.optimizer),
            "rng": rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        parallel.load_full_state(self.model, self.optimizer, state["model"], state["optimizer"])
        self.step = int(state["step"])
        self.bad_steps = int(state["bad_steps"])
        self.tokens_seen = int(state["tokens_seen"])
        self.train_data.load_state_dict(state["data"])
        torch.set_rng_state(state["rng"]["torch_cpu"])
        if self.device.type == "cuda" and "torch_cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["torch_cuda"], self.device)

    def save_checkpoint(self) -> Path | None:
        state = self.state_dict()
        path = None
        if self.world.is_main:
            path = save_checkpoint(self.checkpoint_dir, state, self.model_config, self.tokenizer_path,
                                   keep=self.config.train.keep_checkpoints)
        parallel.barrier()
        return path

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
        parallel.close_distributed()
