"""What SFT and DPO share: instruction data, example batches, and a Trainer for them.

Data files are a JSON array or JSON Lines. A record is one of

- Alpaca style: ``instruction``, optional ``input``, ``output`` (the user turn is the
  instruction, then a blank line and the input when there is one);
- chat style: ``messages``, a list of ``{"role", "content"}`` (see ``model/chat.py``);
- preference (DPO): a prompt (``instruction``/``input`` or ``prompt``, a string or a
  message list) plus ``chosen`` and ``rejected`` replies. The rasbt/LLMs-from-scratch
  preference file is Alpaca plus chosen/rejected.

A bad record is an error naming the file, the record number and the key. Validation
examples are either ``data.val_file`` or a ``val_fraction`` of the training file drawn by a
seeded permutation (the same split whatever the batch size or the run).

Batches: examples are truncated to ``seq_len + 1`` tokens, then either padded to the
longest in the batch (the default), or, with ``data.packing`` (SFT only), joined into rows of
at most ``seq_len`` inputs (``pack_rows``: first-fit decreasing, done once; the items that
``ExampleBatches`` shuffles and batches are then rows, and ``batch_size`` counts rows).
Either way no example attends to another: packed rows carry per-token positions that
restart at each example, from which the model builds its document mask. Targets are -100
where there is no loss. Batch ``i`` is a pure function of (seed, i): each epoch is a seeded
permutation of the items, so the resumable position is one integer, as in ``model/data.py``.

``PostTrainer`` is ``model.trainer.Trainer`` with two hooks overridden: ``build_model`` (an
existing checkpoint instead of a fresh init) and ``build_data`` (the batches above); SFT and
DPO add ``compute_loss`` (their loss and metrics, e.g. DPO reward margins) and
``eval_weight``. The training loop, NaN/Inf guard, checkpoints, resume, logging (JSONL +
TensorBoard), learning-rate schedule, optimizer and DDP/FSDP wrapping are the Trainer's.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.chat import ChatDataError, ChatTemplate, Message, check_messages
from model.checkpoint import CheckpointError, load_model, resolve_checkpoint
from model.config import TrainConfig, TrainConfigError, read_config
from model.trainer import Trainer

IGNORE = -100


@dataclass
class ChatDataConfig:
    """Instruction or preference data for post-training."""

    train_file: str = ""
    val_file: str | None = None  # None: hold out val_fraction of train_file
    val_fraction: float = 0.05
    split_seed: int = 0
    seq_len: int = 512  # tokens per example (longer ones are truncated)
    system_prompt: str | None = None  # prepended to every conversation that has none
    max_examples: int | None = None  # use only the first N training records
    packing: bool = False  # SFT: several examples per row of seq_len, attention kept within each

    def __post_init__(self) -> None:
        if not self.train_file:
            raise ValueError("data.train_file is required")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {self.seq_len}")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON array or JSON Lines file; errors name the file and line."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise ChatDataError(f"{path}: not valid JSON ({e})") from None
    else:
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ChatDataError(f"{path}:{number}: not valid JSON ({e})") from None
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise ChatDataError(f"{path}: record {i} is a {type(record).__name__}, expected an object")
    return records


def _text(record: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    if key not in record:
        if required:
            raise ChatDataError(f"{where}: missing key {key!r} (keys: {', '.join(sorted(record))})")
        return ""
    if not isinstance(record[key], str):
        raise ChatDataError(f"{where}: key {key!r} must be a string, got {type(record[key]).__name__}")
    return record[key]


def _with_system(messages: list[Message], system_prompt: str | None) -> list[Message]:
    if system_prompt is None or messages[0]["role"] == "system":
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def prompt_messages(record: dict[str, Any], where: str, system_prompt: str | None = None) -> list[Message]:
    """The conversation before the reply: from ``prompt`` (text or messages) or Alpaca keys."""
    if "prompt" in record:
        prompt = record["prompt"]
        messages = ([{"role": "user", "content": prompt}] if isinstance(prompt, str)
                    else check_messages(prompt, f"{where} key 'prompt'"))
    else:
        instruction = _text(record, "instruction", where)
        extra = _text(record, "input", where, required=False)
        messages = [{"role": "user", "content": f"{instruction}\n\n{extra}" if extra else instruction}]
    return _with_system(messages, system_prompt)


def sft_messages(record: dict[str, Any], where: str, system_prompt: str | None = None) -> list[Message]:
    """A whole conversation for SFT: ``messages``, or an Alpaca record's prompt + output."""
    if "messages" in record:
        messages = check_messages(record["messages"], f"{where} key 'messages'")
        if not any(m["role"] == "assistant" for m in messages):
            raise ChatDataError(f"{where}: 'messages' has no assistant turn, nothing to learn from")
        return _with_system(messages, system_prompt)
    reply = _text(record, "output", where)
    return [*prompt_messages(record, where, system_prompt), {"role": "assistant", "content": reply}]


def preference_triple(record: dict[str, Any], where: str,
                      system_prompt: str | None = None) -> tuple[list[Message], str, str]:
    """(prompt messages, chosen reply, rejected reply) of a preference record."""
    return (prompt_messages(record, where, system_prompt),
            _text(record, "chosen", where), _text(record, "rejected", where))


def split_records(config: ChatDataConfig) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """(train, val) lists of (where, record); ``where`` names file and record for errors."""
    records = read_records(config.train_file)
    if config.max_examples is not None:
        records = records[:config.max_examples]
    labelled = [(f"{config.train_file}: record {i}", r) for i, r in enumerate(records)]
    if config.val_file is not None:
        val = [(f"{config.val_file}: record {i}", r) for i, r in enumerate(read_records(config.val_file))]
        return labelled, val
    n_val = int(round(len(labelled) * config.val_fraction))
    order = np.random.default_rng(config.split_seed).permutation(len(labelled))
    val_ids = set(order[:n_val].tolist())
    return ([x for i, x in enumerate(labelled) if i not in val_ids],
            [x for i, x in enumerate(labelled) if i in val_ids])


def shift(ids: Sequence[int], mask: Sequence[bool], seq_len: int) -> tuple[list[int], list[int]]:
    """(inputs, targets) of one example truncated to ``seq_len + 1`` tokens; targets are the
    next ids where the mask says the next token carries loss, else -100."""
    ids, mask = list(ids[:seq_len + 1]), list(mask[:seq_len + 1])
    return ids[:-1], [t if m else IGNORE for t, m in zip(ids[1:], mask[1:])]


def pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of examples grouped into rows of at most ``capacity`` tokens, best-fit
    decreasing: longest first, each into the row with the least room that still fits it (at
    most 11/9 of the optimal row count plus one; in practice a few percent of padding).
    Deterministic; O(n log n) searches, so it packs 100k examples in about a second."""
    if any(n > capacity for n in lengths):
        raise ValueError(f"an example of {max(lengths)} tokens does not fit a row of {capacity}")
    rows: list[list[int]] = []
    open_rows: list[tuple[int, int]] = []  # (room left, row), sorted; full rows leave
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        at = bisect.bisect_left(open_rows, (lengths[i], -1))
        if at == len(open_rows):
            room, row = capacity, len(rows)
            rows.append([])
        else:
            room, row = open_rows.pop(at)
        rows[row].append(i)
        if room > lengths[i]:
            bisect.insort(open_rows, (room - lengths[i], row))
    return rows


class ExampleBatches:
    """Batches of pre-tokenized examples (or packed rows) for one rank, resumable by batch index.

    Args:
        examples: the items of a batch (an example, or a packed row), turned into tensors by ``collate``.
        collate: list of items -> tuple of tensors.
        batch_size: examples per batch on this rank.
        rank, world_size: this process's share of each global batch.
        seed: with the epoch number, fixes the order of the examples.
        shuffle: False keeps file order (validation).
    """

    def __init__(self, examples: list[Any], collate: Callable[[list[Any]], tuple[torch.Tensor, ...]],
                 batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True) -> None:
        if not examples:
            raise ChatDataError("no examples to batch")
        self.examples, self.collate = examples, collate
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.batch_index = 0
        self._orders: dict[int, np.ndarray] = {}

    def _example_at(self, position: int) -> Any:
        epoch, offset = divmod(position, len(self.examples))
        if not self.shuffle:
            return self.examples[offset]
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))}
        return self.examples[self._orders[epoch][offset]]

    def batch(self, batch_index: int) -> tuple[torch.Tensor, ...]:
        global_batch = self.batch_size * self.world_size
        first = batch_index * global_batch + self.rank * self.batch_size
        return self.collate([self._example_at(first + j) for j in range(self.batch_size)])

    def next_batch(self) -> tuple[torch.Tensor, ...]:
        out = self.batch(self.batch_index)
        self.batch_index += 1
        return out

    def validation_batches(self, num_batches: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """At most ``num_batches`` batches, each example once, the same every call."""
        n = len(self.examples)
        step = self.batch_size * self.world_size
        for start in range(0, min(n, num_batches * step), step):
            mine = self.examples[start + self.rank * self.batch_size:min(n, start + (self.rank + 1) * self.batch_size)]
            if mine:
                yield self.collate(mine)

    def state_dict(self) -> dict:
        return {"batch_index": self.batch_index, "seed": self.seed, "examples": len(self.examples),
                "global_batch": self.batch_size * self.world_size}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        for key in ("seed", "examples", "global_batch"):
            if state[key] != mine[key]:
                raise CheckpointError(f"data state was saved with {key}={state[key]!r}, this run has {mine[key]!r}")
        self.batch_index = int(state["batch_index"])


def sequence_logprobs(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per row, the summed log-probability of the target tokens (those not -100)."""
    logits = model(inputs).float()
    keep = targets != IGNORE
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logp * keep).sum(dim=-1)


@dataclass
class PostTrainConfig:
    """Fields every post-training config has; SFT and DPO configs add theirs."""

    init_from: str = ""  # checkpoint directory, or a run / checkpoints directory (newest)
    data: ChatDataConfig = field(default_factory=lambda: ChatDataConfig())  # raises: train_file is required
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if not self.init_from:
            raise ValueError("init_from (the checkpoint to start from) is required")


class PostTrainer(Trainer):
    """A Trainer that starts from ``config.init_from`` and trains on chat examples.

    It overrides the Trainer's ``build_model`` and ``build_data`` hooks; subclasses supply
    ``examples(records) -> examples``, ``collate``, ``compute_loss`` and ``eval_weight``.
    """

    measures_mfu = False  # padding varies per batch and DPO adds reference passes

    def build_model(self) -> torch.nn.Module:
        self.init_checkpoint = resolve_checkpoint(self.config.init_from)
        self.tokenizer_path = self.init_checkpoint / "tokenizer.json"
        if not self.tokenizer_path.is_file():
            raise CheckpointError(f"{self.init_checkpoint}: no tokenizer.json, the chat template needs one")
        self.template = ChatTemplate.from_file(self.tokenizer_path)
        model = load_model(self.init_checkpoint, self.device)
        if self.config.data.seq_len > model.config.max_seq_len:
            raise TrainConfigError(f"data.seq_len {self.config.data.seq_len} exceeds the model's max_seq_len "
                                   f"{model.config.max_seq_len} ({self.init_checkpoint})")
        return model

    def build_data(self) -> tuple[ExampleBatches, ExampleBatches | None]:
        tc = self.config.train
        train_records, val_records = split_records(self.config.data)
        batch_args = dict(batch_size=tc.batch_size, rank=self.world.rank, world_size=self.world.world_size,
                          seed=tc.seed)
        train_examples = self.examples(train_records)
        val_examples = self.examples(val_records) if val_records else []
        self.example_counts = {"train": len(train_examples), "val": len(val_examples)}
        train = ExampleBatches(self.batch_items(train_examples), self.collate, **batch_args)
        val = (ExampleBatches(self.batch_items(val_examples), self.collate, shuffle=False, **batch_args)
               if val_records else None)
        rows = (f" in {len(train.examples)} and {len(val.examples) if val else 0} packed rows"
                if self.config.data.packing else "")
        self._print(f"{len(train_examples)} training and {len(val_examples)} validation examples{rows} "
                    f"from {self.config.data.train_file}")
        return train, val

    def examples(self, records: list[tuple[str, dict]]) -> list[Any]:
        raise NotImplementedError

    def batch_items(self, examples: list[Any]) -> list[Any]:
        """What ``ExampleBatches`` shuffles and batches: the examples themselves by default."""
        return examples

    def collate(self, examples: list[Any]) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError


def run(trainer_class: type[PostTrainer], config_class: type, config_path: str) -> None:
    """Parse, build, train, close: the body of ``lmforge sft`` and ``lmforge dpo``."""
    trainer = trainer_class(read_config(config_class, config_path))
    try:
        trainer.train()
    finally:
        trainer.close()
