"""The pretraining config: strict dataclasses loaded from YAML.

Four sections, ``model`` (``ModelConfig`` from ``model/llama.py``), ``data``, ``train`` and
``parallel`` (how the ranks of a torchrun job split the work, ``model/parallel.py``);
every key has a default, so a preset names only what it changes. An unknown key, a value of
the wrong type or a value out of range is an error that names the file and the key, raised
before anything is built. Relative paths are taken from the current directory (run from the
repository root).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.llama import ModelConfig


class TrainConfigError(ValueError):
    """A training config (pretraining, SFT, DPO) that does not fit its schema, or does not fit
    the data or checkpoint it names; the message names the file and the key."""


@dataclass
class MixtureSource:
    """One source of a data mixture: a token-shard directory, its weight, an epoch limit."""

    dir: str | None = None  # folder of train-*.bin / val-*.bin, as DataConfig.dir
    weight: float = 1.0  # relative; the weights of a mixture are normalised to sum to 1
    max_epochs: float | None = None  # at most this many passes over the source; None: no limit

    def __post_init__(self) -> None:
        if not self.dir:
            raise ValueError("dir is required (the source's token-shard folder)")
        if not self.weight > 0:
            raise ValueError(f"weight must be > 0, got {self.weight}")
        if self.max_epochs is not None and not self.max_epochs > 0:
            raise ValueError(f"max_epochs must be > 0, got {self.max_epochs}")


@dataclass
class DataConfig:
    """Where tokens come from: a token-shard directory, a weighted mixture of several
    (``model/mixture.py``), or text files tokenized per character."""

    dir: str | None = None  # folder of train-*.bin / val-*.bin (model/data.py)
    mixture: dict[str, MixtureSource] | None = None  # source name -> token shards, weight, epoch limit
    on_exhausted: str = "drop"  # a source at its epoch limit: "drop" it (renormalise) or "stop" training
    text_files: list[str] | None = None  # character-level path (model/char_text.py)
    val_fraction: float = 0.1  # character-level path only: last fraction of the text
    seq_len: int = 256
    sampling: str = "random"  # "random" windows or "sequential" packing

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.dir, self.mixture, self.text_files)) != 1:
            raise ValueError("set exactly one of dir (token shards), mixture (several token-shard folders "
                             "with weights) and text_files (character level)")
        if self.mixture is not None and not self.mixture:
            raise ValueError("mixture needs at least one source")
        if self.on_exhausted not in ("drop", "stop"):
            raise ValueError(f"on_exhausted must be 'drop' or 'stop', got {self.on_exhausted!r}")
        if self.sampling not in ("random", "sequential"):
            raise ValueError(f"sampling must be 'random' or 'sequential', got {self.sampling!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")


@dataclass
class TrainConfig:
    """Optimisation, logging and checkpointing.

    ``batch_size`` is the micro-batch: sequences per rank per forward pass. ``batch_tokens``
    is the global batch, tokens per optimizer step over all ranks; the Trainer derives the
    gradient accumulation from it and the world size (an error when it does not divide), so
    the same config trains the same way on 1 or 8 GPUs. None: one micro-batch per rank.
    """

    out_dir: str = "runs/train"
    batch_size: int = 8
    batch_tokens: int | None = None
    max_steps: int = 1000
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables clipping (the norm is still logged)
    eval_every: int = 100  # 0 disables periodic validation
    eval_batches: int = 20
    # Held-out scores (model/eval.py), logged as bpb/NAME, acc/NAME, acc_norm/NAME:
    eval_text: dict[str, str] = field(default_factory=dict)  # name -> text file, bits per byte
    eval_tasks: dict[str, str] = field(default_factory=dict)  # name -> multiple-choice JSONL
    eval_sets_every: int = 0  # steps between them (and at max_steps); 0: at max_steps only
    log_every: int = 10
    checkpoint_every: int = 500  # 0: only at the end
    keep_checkpoints: int = 3
    max_bad_steps: int = 5  # consecutive non-finite steps before halting
    seed: int = 1337
    device: str = "auto"  # auto: cuda when available, else cpu
    precision: str = "auto"  # auto: bf16 autocast on cuda, fp32 on cpu
    compile: bool = False
    coordinate_descent_tuning: bool = False  # inductor searches kernel configs: slower compile, faster steps
    parallel: str = "ddp"  # with several processes: "ddp" or "fsdp" (FSDP2 fully_shard)
    resume: bool = True  # continue from the newest complete checkpoint in out_dir
    peak_flops: float | None = None  # for MFU; None: known GPUs only

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_steps", "keep_checkpoints", "max_bad_steps", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.parallel not in ("ddp", "fsdp"):
            raise ValueError(f"parallel must be 'ddp' or 'fsdp', got {self.parallel!r}")
        if self.batch_tokens is not None and self.batch_tokens < 1:
            raise ValueError(f"batch_tokens must be >= 1, got {self.batch_tokens}")
        if self.eval_sets_every < 0:
            raise ValueError(f"eval_sets_every must be >= 0, got {self.eval_sets_every}")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr} is above lr {self.lr}")


PIPELINE_SCHEDULES = ("1f1b", "interleaved_1f1b")


@dataclass
class ParallelConfig:
    """How the ranks of a torchrun job divide the work (``model/parallel.py``).

    ``dp x tp x pp`` must equal WORLD_SIZE: ``tp`` ranks split each matmul (tensor
    parallelism, sequence parallelism on the norms), ``pp`` groups of them run consecutive
    layers (pipeline parallelism), and ``dp`` copies of that see different data. With
    ``tp`` or ``pp`` above 1 the ``dp`` ranks shard with FSDP2; with both at 1,
    ``train.parallel`` picks DDP or FSDP2 as before. ``pp_microbatches`` splits each rank's
    micro-batch of ``train.batch_size`` sequences for the pipeline schedule.
    """

    dp: int = -1  # -1: WORLD_SIZE / (tp * pp)
    tp: int = 1
    pp: int = 1
    pp_schedule: str = "1f1b"  # "1f1b" (one stage per rank) or "interleaved_1f1b" (two)
    pp_microbatches: int | None = None  # None: one per pipeline stage

    def __post_init__(self) -> None:
        for name in ("tp", "pp"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.dp == 0 or self.dp < -1:
            raise ValueError(f"dp must be >= 1, or -1 for WORLD_SIZE / (tp * pp), got {self.dp}")
        if self.pp_schedule not in PIPELINE_SCHEDULES:
            raise ValueError(f"pp_schedule must be one of {', '.join(PIPELINE_SCHEDULES)}, got {self.pp_schedule!r}")
        if self.pp_microbatches is not None and self.pp_microbatches < 1:
            raise ValueError(f"pp_microbatches must be >= 1, got {self.pp_microbatches}")

    @property
    def stages_per_rank(self) -> int:
        return 2 if self.pp_schedule == "interleaved_1f1b" else 1

    def degrees(self, world_size: int) -> tuple[int, int, int]:
        """(dp, tp, pp) for ``world_size`` ranks; TrainConfigError when they do not multiply to it."""
        dp = world_size // (self.tp * self.pp) if self.dp == -1 else self.dp
        if dp * self.tp * self.pp != world_size:
            shown = "WORLD_SIZE / (tp * pp)" if self.dp == -1 else str(self.dp)
            raise TrainConfigError(
                f"parallel: dp {shown} x tp {self.tp} x pp {self.pp} must equal WORLD_SIZE {world_size} (the number "
                f"of torchrun processes, --nnodes x --nproc_per_node); change parallel.dp/tp/pp or the process count")
        return dp, self.tp, self.pp


@dataclass
class PretrainConfig:
    """A whole pretraining run: model shape, data, optimisation and the parallel layout."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(dir="data"))
    train: TrainConfig = field(default_factory=TrainConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_type(value, inner, where)
    if origin is list:
        if not isinstance(value, list):
            raise TrainConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return [_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise TrainConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return {_check_type(k, args[0], f"{where} key"): _check_type(v, args[1], _join(where, str(k)))
                for k, v in value.items()}
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, where)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is an int subclass; a YAML `true` where a number belongs is a mistake.
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise TrainConfigError(f"{where}: expected {annotation.__name__}, got {type(value).__name__} {value!r}")
    return value


def _join(where: str, key: str) -> str:
    return f"{where} {key}" if where.endswith(":") else f"{where}.{key}"


def from_dict(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, strictly; ``where`` prefixes every error."""
    if not isinstance(data, dict):
        raise TrainConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise TrainConfigError(f"{where}: unknown key {key!r} (known: {', '.join(names)})")
        if dataclasses.is_dataclass(hints[key]):
            kwargs[key] = from_dict(hints[key], value, _join(where, key))
        else:
            kwargs[key] = _check_type(value, hints[key], _join(where, key))
    try:
        return cls(**kwargs)
    except ValueError as e:
        if isinstance(e, TrainConfigError):
            raise
        raise TrainConfigError(f"{where}: {e}") from None


def read_config(cls: type, path: str | Path) -> Any:
    """Parse the YAML file ``path`` into dataclass ``cls``, strictly; errors name ``path`` and the key."""
    import yaml  # only the config file needs it; the model runs without

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise TrainConfigError(f"{path}: not valid YAML ({e})") from None
    return from_dict(cls, data, f"{path}:")


def load_pretrain_config(path: str | Path) -> PretrainConfig:
    """Parse a YAML pretraining config; errors name ``path`` and the offending key."""
    return read_config(PretrainConfig, path)


def accumulation_steps(train: TrainConfig, seq_len: int, world_size: int) -> int:
    """Micro-batches per rank per optimizer step: ``train.batch_tokens`` over the tokens one
    micro-batch step takes on all ranks; TrainConfigError when that does not divide."""
    per_micro_step = train.batch_size * seq_len * world_size
    if train.batch_tokens is None:
        return 1
    if train.batch_tokens % per_micro_step:
        raise TrainConfigError(
            f"train.batch_tokens {train.batch_tokens:,} is not a multiple of batch_size {train.batch_size} x "
            f"seq_len {seq_len} x {world_size} rank(s) = {per_micro_step:,} tokens per micro-step; change "
            f"batch_tokens, batch_size or the number of ranks")
    return train.batch_tokens // per_micro_step
