"""The training loop: a ``Trainer`` that owns model, optimizer, data and checkpoints.

One ``train_step()`` is one optimizer step over the accumulation micro-batches of each rank
(``batch_tokens`` global tokens, ``model/config.py``). A new kind of training overrides the
hooks and nothing else:

- ``build_model()``: the model, on ``self.device`` (pretraining: a fresh init sized to the
  token shards; post-training: a checkpoint);
- ``build_data()``: (train, validation) batch sources; a source has ``batch(i)``, a
  ``batch_index`` position, ``validation_batches(n)`` and ``state_dict()``, and may have
  ``data_end(n)`` (why the next n batches do not exist, or None: training stops before a
  step that lacks data) and ``stats()`` (host-side values added to the last record of each
  logged window, such as a mixture's per-source tokens, share and epochs);
- ``compute_loss(batch) -> (loss, metrics, tokens)``: the mean loss of a micro-batch, extra
  scalar tensors to log, and the tokens it processed (``forward_backward`` runs it and the
  backward pass; under pipeline parallelism the schedule does both, so it is not a hook);
- ``evaluate() -> dict``: validation scalars (by default the loss and metrics of
  ``compute_loss`` over the validation batches, each weighted by ``eval_weight(batch)``);
- ``evaluate_sets() -> dict``: held-out scores of the text sets and multiple-choice tasks
  that ``train.eval_text`` / ``train.eval_tasks`` name (``model/eval.py``: ``bpb/NAME``,
  ``acc/NAME``, ``acc_norm/NAME``), every ``eval_sets_every`` steps and at the last step;
  the files are read when the Trainer is built, so a bad one fails before training starts.

Choices that matter:

- AdamW with weight decay on matrices (embeddings and projections) only, never on norm
  gains; fused kernels on CUDA.
- Learning rate: linear warmup to ``lr`` over ``warmup_steps``, then cosine to ``min_lr`` at
  ``max_steps``. It is a pure function of the step, so the "scheduler state" is the step.
- bf16 autocast on CUDA, plain fp32 on CPU (so CPU runs are exactly reproducible); on CUDA,
  fp32 matmuls may use TF32 (``set_float32_matmul_precision("high")``).
- No host sync on a step that logs nothing: loss, metrics and gradient norm stay on the
  device, and a step whose loss or gradient norm is not finite is skipped on the device
  (``step_if_finite``: fused AdamW's ``found_inf``, else a ``torch.where`` restore). Every
  ``log_every`` steps (and at evaluation, checkpoint and the last step) ``read_steps()``
  reads the window's values in one transfer, writes one record per step, and times the
  window as a whole. ``max_bad_steps`` consecutive skipped steps halt training with
  ``TrainingHalted``, found when the window is read. Data is checked when it loads, not
  per step: ``ShardDataset`` refuses a shard with an id outside the vocabulary.
- On CUDA the next batch is copied from pinned memory on a side stream while the current
  step runs (``DeviceBatches``).
- Logs: one JSON object per step in ``OUT/log.jsonl`` (loss, lr, grad norm, tokens/s and MFU
  over the window, validation scalars when measured), a line printed every ``log_every``
  steps, and the same scalars to TensorBoard in ``OUT/tensorboard`` when tensorboard is
  installed. Rank 0 only.
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
from model.config import PretrainConfig, TrainConfigError, accumulation_steps
from model.data import ShardDataset, describe_shards
from model.mixture import MixtureDataset, describe_mixture, mixture_sources
from model.hardware import default_device, peak_flops_for
from model.llama import Transformer

Batch = tuple[torch.Tensor, ...]
# Record keys every step has; anything else a loss hook or evaluation adds is printed on a second line.
STANDARD_KEYS = ("step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "tokens", "val_loss", "skipped")


def _scalars(record: dict[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    """The numbers of a log record, nested ones as ``mixture/web/share``."""
    out = []
    for key, value in record.items():
        if isinstance(value, dict):
            out += _scalars(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((f"{prefix}{key}", value))
    return out


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


def _local(t: torch.Tensor) -> torch.Tensor:
    """The shard this rank holds of a DTensor (FSDP2), or the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


@torch.no_grad()
def step_if_finite(optimizer: torch.optim.Optimizer, finite: torch.Tensor) -> None:
    """``optimizer.step()`` when the 0-d bool tensor ``finite`` is true, else no change at all
    (parameters, moments and step counts), decided on the device without reading ``finite``.

    Fused AdamW/Adam take a ``found_inf`` flag and skip in the kernel. Otherwise the step runs
    and every tensor it touched is put back with ``torch.where``; state the step created (the
    first step's moments) goes back to the zeros AdamW starts from.
    """
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = (~finite).float()
        optimizer.step()
        return
    stepped = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]

    def touched(p: torch.Tensor) -> list[torch.Tensor]:
        return [t for t in (p, *optimizer.state[p].values()) if isinstance(t, torch.Tensor)]

    before = {id(t): _local(t).clone() for p in stepped for t in touched(p)}
    optimizer.step()
    for p in stepped:
        for t in touched(p):
            local = _local(t)
            old = before.get(id(t))
            old = old if old is not None else torch.zeros_like(local)
            local.copy_(torch.where(finite.to(local.device), local, old))


class DeviceBatches:
    """The batches of a data source, in order, on the training device.

    The source's ``batch_index`` counts the batches handed out, so its ``state_dict`` is
    exact whatever is in flight. On CUDA the next batch is read, pinned and copied on a side
    stream while the current one trains; on CPU a batch is made when asked.
    """

    def __init__(self, source: Any, device: torch.device) -> None:
        self.source, self.device = source, device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._ahead: tuple[int, Batch] | None = None

    def _fetch(self, index: int) -> Batch:
        batch = self.source.batch(index)
        if self.stream is None:
            return tuple(t.to(self.device) for t in batch)
        with torch.cuda.stream(self.stream):
            return tuple(t.pin_memory().to(self.device, non_blocking=True) for t in batch)

    def next(self) -> Batch:
        index = self.source.batch_index
        ahead, self._ahead = self._ahead, None
        batch = ahead[1] if ahead is not None and ahead[0] == index else self._fetch(index)
        self.source.batch_index = index + 1
        if self.stream is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self.stream)
            for t in batch:
                t.record_stream(current)
            data_end = getattr(self.source, "data_end", None)
            if data_end is None or data_end(1) is None:  # no batch to prefetch past the end of the data
                self._ahead = (index + 1, self._fetch(index + 1))
        return batch


@dataclasses.dataclass
class _PendingStep:
    """One optimizer step's values, still on the device."""

    step: int
    lr: float
    values: dict[str, torch.Tensor]  # loss and metrics, averaged over micro-batches and ranks
    grad_norm: torch.Tensor
    finite: torch.Tensor
    tokens: int | torch.Tensor  # all ranks


class Trainer:
    """Build everything a run needs from its config; resume if a checkpoint exists."""

    measures_mfu = True  # False where flops_per_token does not describe a step

    def __init__(self, config: PretrainConfig) -> None:
        self.config = config
        tc = config.train
        self.world = parallel.init_distributed(default_device(tc.device).type, getattr(config, "parallel", None))
        self.device = default_device(tc.device, self.world.local_rank)
        self.bf16 = tc.precision == "bf16" or (tc.precision == "auto" and self.device.type == "cuda")
        self.out_dir = Path(tc.out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        if self.device.type == "cuda":
            torch.set_float32_matmul_precision("high")
        if tc.compile and tc.coordinate_descent_tuning:
            import torch._inductor.config as inductor_config

            inductor_config.coordinate_descent_tuning = True

        # Same seed on every rank: FSDP2 shards each rank's own (identical) initialisation.
        torch.manual_seed(tc.seed)
        model = self.build_model()
        self.model_config = model.config
        self.flops_per_token = model.flops_per_token(config.data.seq_len)
        self.num_params = model.num_params()
        self.model = parallel.parallelize(model, self.world, tc.parallel, tc.compile, self.bf16,
                                          getattr(config, "parallel", None), config.data.seq_len)
        if isinstance(self.model, parallel.PipelineModel) and type(self).compute_loss is not Trainer.compute_loss:
            raise TrainConfigError(f"{type(self).__name__} computes its own loss, which a pipeline schedule "
                                   "cannot run; use parallel.pp: 1")
        self.optimizer = self._build_optimizer()
        self.peak_flops = peak_flops_for(self.device, tc.peak_flops) if self.measures_mfu else None
        self.grad_accum_steps = accumulation_steps(tc, config.data.seq_len, self.world.dp)

        self.train_data, self.val_data = self.build_data()
        self._batches = DeviceBatches(self.train_data, self.device)
        self._eval_sets = self._read_eval_sets()
        self.step = 0
        self.bad_steps = 0
        self._tokens_read = 0  # tokens of the steps already read to the host
        self._pending: list[_PendingStep] = []
        self._window_start = 0.0
        self._halt: str | None = None
        self._data_end: str | None = None  # why the training data has no next step
        self._tensorboard = None
        if tc.resume and (latest := latest_checkpoint(self.checkpoint_dir)) is not None:
            self.load_state_dict(read_checkpoint(latest))
            self._print(f"resumed from {latest} at step {self.step}")

    # -- hooks --------------------------------------------------------------------------

    def build_model(self) -> Transformer:
        """A fresh model whose vocabulary fits the token shards (``self.data_dir``, or every
        source of ``data.mixture``)."""
        self.data_dir = self._prepare_data()
        mixture = self.config.data.mixture
        shards = describe_mixture(mixture_sources(mixture)) if mixture else describe_shards(self.data_dir)
        self.tokenizer_path = shards["tokenizer"]
        model_config = self.config.model
        if model_config.vocab_size is None:
            model_config = dataclasses.replace(model_config, vocab_size=shards["vocab_size"])
        elif model_config.vocab_size < shards["vocab_size"]:
            raise TrainConfigError(f"model.vocab_size {model_config.vocab_size} is smaller than the shards' "
                                   f"vocab_size {shards['vocab_size']} in {self.data_dir or 'data.mixture'}")
        seq_len = self.config.data.seq_len
        if seq_len > model_config.max_seq_len:
            raise TrainConfigError(f"data.seq_len {seq_len} exceeds model.max_seq_len {model_config.max_seq_len}")
        return Transformer(model_config).to(self.device)

    def build_data(self) -> tuple[Any, Any | None]:
        """(train, validation) windows of the token shards; no validation without val shards."""
        dc, tc = self.config.data, self.config.train
        data_args = dict(seq_len=dc.seq_len, batch_size=tc.batch_size, rank=self.world.dp_rank,
                         world_size=self.world.dp, seed=tc.seed)
        if dc.mixture:
            sources = mixture_sources(dc.mixture)
            return (MixtureDataset(sources, "train", sampling=dc.sampling, on_exhausted=dc.on_exhausted, **data_args),
                    MixtureDataset.validation(sources, **data_args))
        train = ShardDataset(self.data_dir, "train", sampling=dc.sampling, **data_args)
        has_val = any(Path(self.data_dir).glob("val-*.bin"))
        return train, ShardDataset(self.data_dir, "val", sampling="sequential", **data_args) if has_val else None

    def compute_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor], int | torch.Tensor]:
        """Next-token cross-entropy over every position of a window batch."""
        inputs, targets = batch
        return self.model(inputs, targets), {}, inputs.numel()

    def forward_backward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor], int | torch.Tensor]:
        """``compute_loss`` of a micro-batch and the backward pass of its share of the step's
        loss; a pipeline schedule (``parallel.pp`` > 1) runs both over its own microbatches."""
        if isinstance(self.model, parallel.PipelineModel):
            inputs, targets = batch
            return self.model.forward_backward(inputs, targets, self.grad_accum_steps), {}, inputs.numel()
        loss, metrics, tokens = self.compute_loss(batch)
        (loss / self.grad_accum_steps).backward()
        return loss, metrics, tokens

    def eval_weight(self, batch: Batch) -> float | torch.Tensor:
        """How much a validation batch counts in ``evaluate``'s averages (all batches alike here)."""
        return 1.0

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """``val_loss`` and ``val_<metric>`` over at most ``eval_batches`` validation batches
        (averages weighted by ``eval_weight``); empty without validation data."""
        if self.val_data is None:
            return {}
        self.model.eval()
        sums: dict[str, torch.Tensor] = {}
        total_weight: float | torch.Tensor = 0.0
        for batch in self.val_data.validation_batches(self.config.train.eval_batches):
            batch = tuple(t.to(self.device) for t in batch)
            weight = self.eval_weight(batch)
            with self._autocast():
                loss, metrics, _ = self.compute_loss(batch)
            for key, value in {"loss": loss, **metrics}.items():
                sums[key] = sums.get(key, 0) + value.float() * weight
            total_weight += weight
        return {f"val_{key}": parallel.all_reduce_mean(value / total_weight).item() for key, value in sums.items()}

    @torch.no_grad()
    def evaluate_sets(self) -> dict[str, float]:
        """Bits per byte of each ``eval_text`` set and accuracies of each ``eval_tasks`` task
        (``model/eval.py``); empty when none are named. Every rank runs the same batches."""
        if self._eval_sets is None:
            return {}
        from model.eval import Evaluator

        texts, tasks, tokenizer = self._eval_sets
        self.model.eval()
        evaluator = Evaluator(self.model, tokenizer, self.model_config.max_seq_len, self.device,
                              self.config.train.batch_size)
        with self._autocast():
            return evaluator.scores(texts, tasks)

    # -- the loop -------------------------------------------------------------------------

    def _read_eval_sets(self) -> tuple[dict, dict, Any] | None:
        """(text sets, tasks, tokenizer) that ``evaluate_sets`` scores, read once; None without any."""
        tc = self.config.train
        if not tc.eval_text and not tc.eval_tasks:
            return None
        from tokenizers import Tokenizer

        from model.eval import read_task, read_text_set

        tokenizer_path = getattr(self, "tokenizer_path", None)
        if tokenizer_path is None:
            raise TrainConfigError("train.eval_text / train.eval_tasks need a tokenizer.json beside the training "
                                   "data to encode the text, and there is none")
        return ({name: read_text_set(path) for name, path in tc.eval_text.items()},
                {name: read_task(path) for name, path in tc.eval_tasks.items()},
                Tokenizer.from_file(str(tokenizer_path)))

    def _at_eval_sets(self) -> bool:
        """Whether this step scores the held-out sets: every ``eval_sets_every`` and the last step."""
        every = self.config.train.eval_sets_every
        last = self.step == self.config.train.max_steps or self._data_end is not None
        return self._eval_sets is not None and (last or bool(every and self.step % every == 0))

    def _prepare_data(self) -> Path | None:
        dc = self.config.data
        if dc.mixture:
            return None
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

    @property
    def tokens_seen(self) -> int:
        """Tokens trained on so far, all ranks (reads pending token counts when they are tensors)."""
        return self._tokens_read + sum(int(p.tokens) for p in self._pending)

    def train_step(self) -> None:
        """One optimizer step. Nothing is read back to the host: ``read_steps()`` does that."""
        if not self._pending:
            self._window_start = time.perf_counter()
        self.model.train()
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        sums: dict[str, torch.Tensor] = {}
        tokens: int | torch.Tensor = 0
        for micro in range(self.grad_accum_steps):
            batch = self._batches.next()
            with parallel.gradient_sync(self.model, enabled=micro == self.grad_accum_steps - 1), self._autocast():
                loss, metrics, micro_tokens = self.forward_backward(batch)
            tokens = tokens + micro_tokens
            for key, value in {"loss": loss, **metrics}.items():
                sums[key] = sums.get(key, 0) + value.detach().float() / self.grad_accum_steps
        # Clipping at +inf still returns the global norm (and, sharded, it is a collective).
        grad_norm = parallel.clip_grad_norm_(self.model, self.config.train.grad_clip or float("inf"))
        values = {key: parallel.all_reduce_mean(value) for key, value in sums.items()}
        finite = torch.isfinite(values["loss"]) & torch.isfinite(grad_norm)
        step_if_finite(self.optimizer, finite)
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self._pending.append(_PendingStep(self.step, lr, values, grad_norm.detach(), finite,
                                          tokens * self.world.dp))

    def read_steps(self, evaluate: bool = False, evaluate_sets: bool = False) -> list[dict[str, Any]]:
        """Read the steps run since the last call to the host (one transfer), log one record per
        step, and return them. ``evaluate`` / ``evaluate_sets``: add ``evaluate()``'s /
        ``evaluate_sets()``'s scalars to the last record, measured after the window's clock
        stops. Raises ``TrainingHalted`` (after logging) when ``max_bad_steps`` consecutive
        steps were skipped."""
        if not self._pending:
            return []
        pending, self._pending = self._pending, []
        keys = list(pending[0].values)
        table = torch.stack([torch.stack([*(p.values[k] for k in keys), p.grad_norm.float(), p.finite.float()])
                             for p in pending]).tolist()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the optimizer's last kernels belong to the window
        elapsed = time.perf_counter() - self._window_start
        tokens = [int(p.tokens) for p in pending]
        tokens_per_s = sum(tokens) / elapsed
        mfu = (self.flops_per_token * tokens_per_s / (self.peak_flops * self.world.world_size)
               if self.peak_flops else None)
        records = []
        for p, row, step_tokens in zip(pending, table, tokens):
            self._tokens_read += step_tokens
            *scalars, grad_norm, finite = row
            scalars = dict(zip(keys, scalars))
            record = {"step": p.step, "loss": scalars.pop("loss"), **scalars, "lr": p.lr, "grad_norm": grad_norm,
                      "tokens_per_s": tokens_per_s, "mfu": mfu, "tokens": self._tokens_read}
            if finite:
                self.bad_steps = 0
            else:
                record["skipped"] = True
                self.bad_steps += 1
                if self.bad_steps >= self.config.train.max_bad_steps and self._halt is None:
                    self._halt = (
                        f"halting at step {p.step}: {self.bad_steps} consecutive steps had a non-finite loss or "
                        f"gradient (last loss {record['loss']}, grad norm {grad_norm}, lr {p.lr:.3g}); lower "
                        f"train.lr, check the data, or resume from an earlier checkpoint in {self.checkpoint_dir}")
            records.append(record)
        if evaluate:
            records[-1].update(self.evaluate())
        if evaluate_sets:
            records[-1].update(self.evaluate_sets())
        if hasattr(self.train_data, "stats"):
            records[-1].update(self.train_data.stats())
        if self._data_end is not None:
            records[-1]["data_end"] = self._data_end
        self._log(records)
        if self._halt is not None:
            raise TrainingHalted(self._halt)
        return records

    def _read_now(self, at_eval: bool, last: int) -> bool:
        tc = self.config.train
        return (at_eval or self.step % tc.log_every == 0 or self.step == last
                or bool(tc.checkpoint_every and self.step % tc.checkpoint_every == 0))

    def train(self, stop_at: int | None = None) -> list[dict[str, Any]]:
        """Train to ``max_steps`` (or stop after step ``stop_at``); returns this call's records."""
        tc = self.config.train
        last = tc.max_steps if stop_at is None else min(stop_at, tc.max_steps)
        records: list[dict[str, Any]] = []
        if self.world.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self._print(f"training {self.num_params / 1e6:.2f}M parameters on {self.world.world_size} x "
                    f"{self.device.type}, steps {self.step} -> {last}, {self.grad_accum_steps} micro-batch(es) "
                    "per rank per step")
        if self.world.is_main and self._tensorboard is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # optional; the JSONL log has everything
                pass
            else:
                self._tensorboard = SummaryWriter(str(self.out_dir / "tensorboard"))
        saved_at = None
        data_end = getattr(self.train_data, "data_end", None)
        if data_end is not None:
            self._data_end = data_end(self.grad_accum_steps)
        while self.step < last and self._data_end is None:
            self.train_step()
            if data_end is not None:  # the next step's batches are planned now, on the host
                self._data_end = data_end(self.grad_accum_steps)
            at_eval = bool(tc.eval_every and (self.step % tc.eval_every == 0 or self.step == tc.max_steps
                                              or self._data_end is not None))
            at_sets = self._at_eval_sets()
            if self._read_now(at_eval or at_sets, last) or self._data_end is not None:
                records += self.read_steps(evaluate=at_eval, evaluate_sets=at_sets)
            if tc.checkpoint_every and self.step % tc.checkpoint_every == 0:
                self.save_checkpoint()
                saved_at = self.step
        if self._data_end is not None:
            self._print(f"stopping at step {self.step}: {self._data_end}")
        if records and saved_at != self.step:
            self.save_checkpoint()
        return records

    def _log(self, records: list[dict[str, Any]]) -> None:
        if not self.world.is_main or not records:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "log.jsonl", "a") as f:
            f.writelines(json.dumps(record) + "\n" for record in records)
        for record in records:
            if self._tensorboard is not None:
                for key, value in _scalars(record):
                    if key != "step":
                        self._tensorboard.add_scalar(key, value, record["step"])
            if record["step"] % self.config.train.log_every == 0 or "val_loss" in record or record.get("skipped"):
                mfu = f" mfu {record['mfu'] * 100:.1f}%" if record["mfu"] is not None else ""
                val = f" val {record['val_loss']:.4f}" if record.get("val_loss") is not None else ""
                skipped = " SKIPPED (non-finite)" if record.get("skipped") else ""
                print(f"step {record['step']:6d} loss {record['loss']:.4f}{val} lr {record['lr']:.2e} "
                      f"grad {record['grad_norm']:.3f} {record['tokens_per_s']:,.0f} tok/s{mfu}{skipped}",
                      file=sys.stdout, flush=True)
                extra = {k: v for k, v in record.items() if k not in STANDARD_KEYS and isinstance(v, (int, float))}
                if extra:
                    print("       " + " ".join(f"{k} {v:.4f}" for k, v in extra.items()), file=sys.stdout, flush=True)
                if "mixture" in record:
                    print("       mixture " + ", ".join(
                        f"{name} {s['share']:.1%} ({s['epochs']:.2f} ep{', exhausted' if s['exhausted_at_tokens'] else ''})"
                        for name, s in record["mixture"].items()), file=sys.stdout, flush=True)

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
        self._tokens_read = int(state["tokens_seen"])
        self._pending = []
        self.train_data.load_state_dict(state["data"])
        torch.set_rng_state(state["rng"]["torch_cpu"])
        if self.device.type == "cuda" and "torch_cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["torch_cuda"], self.device)

    def save_checkpoint(self) -> Path | None:
        """Read and log any pending steps, then write a checkpoint (rank 0); returns its path."""
        self.read_steps()
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
