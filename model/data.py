"""Training batches from a directory of token shards.

Directory convention: ``DIR/train-*.bin`` and ``DIR/val-*.bin`` are token shards (see
``model/token_shards.py``) for the training and validation splits, read in sorted file-name
order; ``DIR/tokenizer.json``, when present, is the tokenizer the ids come from, and its
sha256 must equal the hash in every shard header. All shards of a directory must agree on
vocab size and tokenizer hash. A ``ShardDataset`` checks, when it is built, that every token
id of its shards is below their vocab size (one vectorised pass over each memory-mapped
shard, ``TokenShard.check_token_ids``), so an id the embedding does not have is an error
naming the shard before training starts, never a device-side failure or a per-step check.

A training example is a window of ``seq_len + 1`` consecutive tokens (inputs and targets
shifted by one); windows may cross document boundaries, as in GPT-2/nanoGPT pretraining,
but never shard boundaries. Two ways to pick windows:

- ``random``: window starts drawn uniformly over every valid start in every shard;
- ``sequential``: the token stream cut into consecutive non-overlapping windows, wrapping
  around after the last one (packing; every token seen once per epoch).

Batches are a pure function of (seed, batch index): batch ``i`` draws ``world_size *
batch_size`` windows and rank ``r`` takes rows ``r*batch_size .. (r+1)*batch_size``. So
ranks are disjoint, a 2-rank run sees exactly the windows of a 1-rank run with twice the
batch, and the resumable position is a single integer (``state_dict``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from model.token_shards import TokenShard, TokenShardError, file_sha256

SAMPLING = ("random", "sequential")


def shard_paths(directory: str | Path, split: str) -> list[Path]:
    """The shard files of one split, in the order they are read."""
    paths = sorted(Path(directory).glob(f"{split}-*.bin"))
    if not paths:
        raise FileNotFoundError(f"no {split}-*.bin token shards in {directory}")
    return paths


def describe_shards(directory: str | Path) -> dict:
    """vocab_size and tokenizer hash shared by every shard of ``directory``; checks they agree."""
    shards = [TokenShard(p) for split in ("train", "val") for p in sorted(Path(directory).glob(f"{split}-*.bin"))]
    if not shards:
        raise FileNotFoundError(f"no train-*.bin or val-*.bin token shards in {directory}")
    first = shards[0]
    for shard in shards[1:]:
        if (shard.vocab_size, shard.tokenizer_sha256) != (first.vocab_size, first.tokenizer_sha256):
            raise TokenShardError(f"{shard.path}: vocab_size {shard.vocab_size} / tokenizer {shard.tokenizer_sha256} "
                             f"differ from {first.path} ({first.vocab_size} / {first.tokenizer_sha256})")
    tokenizer = Path(directory) / "tokenizer.json"
    if tokenizer.exists() and first.tokenizer_sha256 and file_sha256(tokenizer) != first.tokenizer_sha256:
        raise TokenShardError(f"{tokenizer} has sha256 {file_sha256(tokenizer)} but the shards were written "
                         f"with tokenizer {first.tokenizer_sha256}")
    return {"vocab_size": first.vocab_size, "tokenizer_sha256": first.tokenizer_sha256,
            "tokenizer": tokenizer if tokenizer.exists() else None}


class BatchStream:
    """Numbered batches (`batch(i)`, which subclasses define) read from a position,
    `batch_index`, that a checkpoint saves: a resumed run continues with the same batches."""

    batch_index: int = 0

    def batch(self, batch_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch at the current position; advances it."""
        out = self.batch(self.batch_index)
        self.batch_index += 1
        return out


class ShardDataset(BatchStream):
    """Batches of (inputs, targets), each int64 of shape (batch_size, seq_len), for one rank.

    Args:
        directory: folder of token shards, see the module docstring.
        split: "train" or "val".
        seq_len: tokens per example.
        batch_size: examples per batch on this rank.
        rank, world_size: this process's share of each global batch.
        sampling: "random" or "sequential".
        seed: with the batch index, fixes every random window.
    """

    def __init__(self, directory: str | Path, split: str, seq_len: int, batch_size: int,
                 rank: int = 0, world_size: int = 1, sampling: str = "random", seed: int = 0) -> None:
        if sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
        self.shards = [TokenShard(p) for p in shard_paths(directory, split)]
        for shard in self.shards:
            shard.check_token_ids()
        self.split, self.seq_len, self.batch_size = split, seq_len, batch_size
        self.rank, self.world_size = rank, world_size
        self.sampling, self.seed = sampling, seed
        lengths = np.array([len(s) for s in self.shards], dtype=np.int64)
        # Random: any start with seq_len+1 tokens after it. Sequential: stride seq_len, so
        # consecutive windows share one token (last target = next window's first input).
        per_shard = np.maximum(lengths - seq_len, 0) if sampling == "random" else np.maximum((lengths - 1) // seq_len, 0)
        self._cumulative = np.cumsum(per_shard)
        self.num_windows = int(self._cumulative[-1])
        # One epoch = the non-overlapping windows, whatever the sampling (what a mixture counts).
        self.epoch_windows = int(np.maximum((lengths - 1) // seq_len, 0).sum())
        if self.num_windows == 0:
            raise TokenShardError(f"{split} shards in {directory} hold {lengths.sum()} tokens, "
                             f"too few for one window of {seq_len + 1}")
        self.batch_index = 0

    def _window_ids(self, batch_index: int) -> np.ndarray:
        global_batch = self.batch_size * self.world_size
        if self.sampling == "random":
            ids = np.random.default_rng([self.seed, batch_index]).integers(0, self.num_windows, size=global_batch)
        else:
            ids = (batch_index * global_batch + np.arange(global_batch)) % self.num_windows
        return ids[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]

    def windows(self, window_ids: np.ndarray) -> np.ndarray:
        """The tokens of windows ``window_ids`` (each in [0, num_windows)), int64 of shape
        (len(window_ids), seq_len + 1)."""
        rows = []
        for window in window_ids:
            shard_id = int(np.searchsorted(self._cumulative, window, side="right"))
            local = int(window - (self._cumulative[shard_id - 1] if shard_id else 0))
            start = local if self.sampling == "random" else local * self.seq_len
            rows.append(self.shards[shard_id].tokens[start:start + self.seq_len + 1])
        return np.stack(rows).astype(np.int64)

    def batch(self, batch_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number ``batch_index`` for this rank; does not move the position."""
        window_tokens = torch.from_numpy(self.windows(self._window_ids(batch_index)))
        return window_tokens[:, :-1], window_tokens[:, 1:]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.next_batch()

    def validation_batches(self, num_batches: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``num_batches`` batches, the same every call (the position is untouched)."""
        for i in range(num_batches):
            yield self.batch(i)

    def state_dict(self) -> dict:
        return {"batch_index": self.batch_index, "sampling": self.sampling, "seed": self.seed,
                "global_batch": self.batch_size * self.world_size}

    def load_state_dict(self, state: dict) -> None:
        if "sources" in state:
            raise TokenShardError("data state was saved by a mixture of sources (data.mixture); this run reads "
                                  "one directory (data.dir)")
        mine = self.state_dict()
        for key in ("sampling", "seed", "global_batch"):
            if state[key] != mine[key]:
                raise TokenShardError(f"data state was saved with {key}={state[key]!r}, this run has {mine[key]!r}")
        self.batch_index = int(state["batch_index"])
