"""Data mixtures: training batches drawn from several token-shard directories by weight.

A mixture is a list of sources, each a token-shard directory (``model/data.py``'s layout)
with a weight and an optional epoch limit (``data.mixture`` in a training config,
``model/config.py``; the ``pretrain`` stage's ``mixture`` param builds it from its
``tokenize`` inputs). ``MixtureDataset`` is a batch source like ``ShardDataset``: same
windows, same rank split, same ``batch(i)`` / ``batch_index`` / ``state_dict`` protocol.

Choices that matter:

- **Which source gives a row: smooth weighted round-robin, no randomness.** The global batch
  rows are one stream of samples; for each sample every active source's credit grows by its
  weight and the source with the most credit gives the sample and pays 1 (nginx's smooth
  WRR, the deterministic cousin of Megatron's blend index). After n samples each source has
  given weight * n of them to within a couple of samples, at any n, so the proportions hold
  in every stretch of training, not only on average.
- **Which window of a source.** ``sequential``: the source's next non-overlapping window
  (each token once per epoch, wrapping). ``random``: a uniform window start that is a pure
  function of (seed, source name, the source's sample number), drawn in blocks of
  ``RANDOM_BLOCK``, so adding a source does not change the others' streams.
- **Epochs** count non-overlapping windows: a source whose train shards hold T tokens has
  about T / seq_len windows per epoch, whatever the sampling. ``max_epochs`` caps the windows
  drawn from a source at ``floor(max_epochs * epoch_windows)``.
- **A source at its limit** (``on_exhausted``): ``drop`` (default) takes it out of the
  mixture once its last allowed window is drawn and renormalises the other weights (the
  log's ``mixture`` record shows ``exhausted_at_tokens``); when every source is out the data
  has ended. ``stop``: the data ends before the first batch that would need a window beyond
  any limit. ``data_end(n)`` says whether the next n batches exist; the trainer stops before
  a step that lacks one (and says why), never mid-step.
- **Determinism and resume.** Each rank plans the whole global batch (host arithmetic
  only, so every rank agrees with no communication) and takes its rows. The plan is a
  function of the sampler state (per source: samples drawn, credit, current weight), which
  ``state_dict`` saves as JSON beside the batch index, so a resumed run draws exactly the
  batches an uninterrupted one would. A checkpoint whose mixture differs (names, weights,
  limits, policy, seed, sampling, global batch) is refused, naming what changed.
- **One vocabulary.** Every source must agree on vocab_size and tokenizer sha256
  (``describe_mixture``); a mismatch is an error naming the source.
- **Host only, no device sync.** Planning is plain Python on the host between steps;
  ``bench/mixture_sampler.py`` measures it per step.

Memory: shards are memory-mapped, never read whole; the planner keeps the plans of the
batches between the handed-out position and the prefetched one (two integers per global
batch row), one block of random window ids per source, and one batch of tokens.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.data import SAMPLING, BatchStream, ShardDataset, describe_shards
from model.token_shards import TokenShardError

ON_EXHAUSTED = ("drop", "stop")
RANDOM_BLOCK = 4096  # random window ids drawn per source at a time


@dataclasses.dataclass(frozen=True)
class Source:
    """One source of a mixture: token shards, weight (relative), optional epoch limit."""

    name: str
    directory: str | Path
    weight: float
    max_epochs: float | None = None


def mixture_sources(mixture: dict[str, Any]) -> list[Source]:
    """``Source``s from a config's ``data.mixture`` (name -> ``MixtureSource``), in its order."""
    return [Source(name, s.dir, s.weight, s.max_epochs) for name, s in mixture.items()]


def describe_mixture(sources: list[Source]) -> dict:
    """``describe_shards`` of the first source, after checking that every source has the same
    vocab_size and tokenizer hash; ``tokenizer``: the first tokenizer.json found."""
    first: tuple[Source, dict] | None = None
    tokenizer = None
    for source in sources:
        try:
            found = describe_shards(source.directory)
        except (OSError, TokenShardError) as e:
            raise TokenShardError(f"mixture source '{source.name}': {e}") from None
        tokenizer = tokenizer or found["tokenizer"]
        if first is None:
            first = (source, found)
            continue
        base, known = first
        if (found["vocab_size"], found["tokenizer_sha256"]) != (known["vocab_size"], known["tokenizer_sha256"]):
            raise TokenShardError(
                f"mixture source '{source.name}' ({source.directory}) has vocab_size {found['vocab_size']} and "
                f"tokenizer {found['tokenizer_sha256']}, but source '{base.name}' ({base.directory}) has "
                f"{known['vocab_size']} and {known['tokenizer_sha256']}: every source must be tokenized with "
                "the same tokenizer")
    assert first is not None, "a mixture has at least one source"
    return {**first[1], "tokenizer": tokenizer}


@dataclasses.dataclass
class _SamplerState:
    """Where the sample stream stands at the start of one batch (per source, in order)."""

    counts: list[int]  # windows drawn so far
    credits: list[float]  # smooth round-robin credit
    weights: list[float]  # current weights, summing to 1 over the active sources; 0: dropped
    exhausted_at: list[int | None]  # global samples drawn when the source was dropped

    def copy(self) -> _SamplerState:
        return _SamplerState(list(self.counts), list(self.credits), list(self.weights), list(self.exhausted_at))


class MixtureDataset(BatchStream):
    """Batches of (inputs, targets), each int64 of shape (batch_size, seq_len), for one rank,
    drawn from several sources by weight (see the module docstring).

    Args:
        sources: the mixture; weights are normalised.
        split: "train" or "val"; a source without shards of the split is an error.
        seq_len, batch_size, rank, world_size, seed: as ``ShardDataset``.
        sampling: "random" or "sequential", for every source.
        on_exhausted: "drop" or "stop" (module docstring).
    """

    def __init__(self, sources: list[Source], split: str, seq_len: int, batch_size: int, rank: int = 0,
                 world_size: int = 1, sampling: str = "random", seed: int = 0, on_exhausted: str = "drop") -> None:
        if sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
        if on_exhausted not in ON_EXHAUSTED:
            raise ValueError(f"on_exhausted must be one of {ON_EXHAUSTED}, got {on_exhausted!r}")
        names = [s.name for s in sources]
        if not sources or len(set(names)) != len(names):
            raise ValueError(f"a mixture needs one or more sources with distinct names, got {names}")
        self.sources = sources
        self.datasets = []
        for source in sources:
            try:
                self.datasets.append(ShardDataset(source.directory, split, seq_len, batch_size, rank, world_size,
                                                  sampling, seed))
            except (OSError, TokenShardError) as e:
                raise TokenShardError(f"mixture source '{source.name}': {e}") from None
        total = sum(s.weight for s in sources)
        self.targets = [s.weight / total for s in sources]
        self.limits = []
        for source, data in zip(sources, self.datasets):
            limit = math.inf if source.max_epochs is None else math.floor(source.max_epochs * data.epoch_windows)
            if limit < 1:
                raise TokenShardError(f"mixture source '{source.name}': max_epochs {source.max_epochs} of "
                                      f"{data.epoch_windows} windows per epoch allows no window at all")
            self.limits.append(limit)
        self.split, self.seq_len, self.batch_size = split, seq_len, batch_size
        self.rank, self.world_size, self.global_batch = rank, world_size, batch_size * world_size
        self.sampling, self.seed, self.on_exhausted = sampling, seed, on_exhausted
        self._streams = [zlib.crc32(s.name.encode()) for s in sources]
        self._blocks: dict[int, tuple[int, np.ndarray]] = {}  # source -> (block number, window ids)
        self.batch_index = 0
        self._reset(0, _SamplerState([0] * len(sources), [0.0] * len(sources), list(self.targets),
                                     [None] * len(sources)))

    @classmethod
    def validation(cls, sources: list[Source], seq_len: int, batch_size: int, rank: int = 0, world_size: int = 1,
                   seed: int = 0) -> MixtureDataset | None:
        """The validation mixture: the sources that have val shards, same weights (renormalised),
        sequential windows, no epoch limits; None when no source has val shards."""
        has_val = [dataclasses.replace(s, max_epochs=None) for s in sources
                   if any(Path(s.directory).glob("val-*.bin"))]
        if not has_val:
            return None
        return cls(has_val, "val", seq_len, batch_size, rank, world_size, sampling="sequential", seed=seed)

    # -- planning: which (source, sample) fills each global row -----------------------------

    def _reset(self, batch_index: int, state: _SamplerState) -> None:
        self._base = batch_index  # the earliest batch this dataset can plan
        self._states = {batch_index: state}  # the state at the start of batch i
        self._plans: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # batch i -> (source, sample) per row
        self._end: tuple[int, str] | None = None  # first batch that cannot be built, and why

    def _plan_batch(self, state: _SamplerState) -> tuple[np.ndarray, np.ndarray] | str:
        """The rows of the next global batch, advancing ``state``; or why the data has ended."""
        counts, credits, weights = state.counts, state.credits, state.weights
        active = [j for j, w in enumerate(weights) if w > 0]
        sources, samples = [], []
        for _ in range(self.global_batch):
            if not active:
                return "every source reached its epoch limit"
            for j in active:
                credits[j] += weights[j]
            pick = max(active, key=credits.__getitem__)  # the first on ties
            if counts[pick] >= self.limits[pick]:  # only under "stop": "drop" removed it at its limit
                return (f"source '{self.sources[pick].name}' reached its epoch limit "
                        f"({self.sources[pick].max_epochs} epochs = {self.limits[pick]:,} windows)")
            credits[pick] -= 1.0
            sources.append(pick)
            samples.append(counts[pick])
            counts[pick] += 1
            if counts[pick] == self.limits[pick] and self.on_exhausted == "drop":
                state.exhausted_at[pick] = sum(counts)
                active.remove(pick)
                left = sum(self.targets[j] for j in active)
                for j in range(len(weights)):
                    weights[j] = self.targets[j] / left if j in active else 0.0
                    credits[j] = 0.0
        return np.array(sources, dtype=np.int64), np.array(samples, dtype=np.int64)

    def _plan(self, batch_index: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The plan of a batch (planning forward as needed); None past the end of the data."""
        if self._end is not None and batch_index >= self._end[0]:
            return None
        if batch_index in self._plans:
            return self._plans[batch_index]
        if batch_index < self._base:
            raise TokenShardError(f"batch {batch_index} is before batch {self._base}, where this mixture was "
                                  "restored from a checkpoint")
        i = max(b for b in self._states if b <= batch_index)
        state = self._states[i].copy()
        while i <= batch_index:
            plan = self._plan_batch(state)
            if isinstance(plan, str):
                self._end = (i, plan)
                return None
            self._plans[i] = plan
            i += 1
            self._states[i] = state.copy()
        # Keep what the handed-out position and the batches ahead of it need (and the base).
        for table in (self._plans, self._states):
            for b in [b for b in table if b < self.batch_index and b != self._base]:
                del table[b]
        return self._plans[batch_index]

    def _state_at(self, batch_index: int) -> _SamplerState:
        if batch_index not in self._states:
            if self._plan(batch_index - 1) is None:
                raise TokenShardError(f"batch {batch_index} is past the end of the data")
        return self._states[batch_index]

    def data_end(self, num_batches: int = 1) -> str | None:
        """None when the next ``num_batches`` batches (from ``batch_index``) exist, else why not."""
        for i in range(self.batch_index, self.batch_index + num_batches):
            if self._plan(i) is None:
                assert self._end is not None
                return f"the training data runs out after {self._end[0]:,} batches: {self._end[1]}"
        return None

    # -- batches --------------------------------------------------------------------------

    def _random_ids(self, j: int, samples: np.ndarray) -> np.ndarray:
        ids = np.empty(len(samples), dtype=np.int64)
        for n, k in enumerate(samples):
            block, offset = divmod(int(k), RANDOM_BLOCK)
            cached = self._blocks.get(j)
            if cached is None or cached[0] != block:
                rng = np.random.default_rng([self.seed, self._streams[j], block])
                cached = (block, rng.integers(0, self.datasets[j].num_windows, size=RANDOM_BLOCK))
                self._blocks[j] = cached
            ids[n] = cached[1][offset]
        return ids

    def batch(self, batch_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number ``batch_index`` for this rank; does not move the position. Past the end of
        the data (``data_end``): ``TokenShardError``."""
        plan = self._plan(batch_index)
        if plan is None:
            raise TokenShardError(self.data_end(batch_index - self.batch_index + 1) or "no such batch")
        rows = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        sources, samples = plan[0][rows], plan[1][rows]
        tokens = np.empty((self.batch_size, self.seq_len + 1), dtype=np.int64)
        for j in np.unique(sources):
            mine = sources == j
            data = self.datasets[j]
            ids = (samples[mine] % data.num_windows if self.sampling == "sequential"
                   else self._random_ids(int(j), samples[mine]))
            tokens[mine] = data.windows(ids)
        window_tokens = torch.from_numpy(tokens)
        return window_tokens[:, :-1], window_tokens[:, 1:]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while self.data_end() is None:
            yield self.next_batch()

    def validation_batches(self, num_batches: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``num_batches`` batches (fewer if the data ends), the same every call."""
        for i in range(num_batches):
            if self._plan(i) is None:
                return
            yield self.batch(i)

    # -- what was drawn, and resume ---------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """What the batches handed out so far drew, per source: ``tokens``, ``share`` of all
        windows, ``epochs``, current ``weight``, configured ``target`` share, and
        ``exhausted_at_tokens`` (all sources' tokens when it was dropped, or None)."""
        state = self._state_at(self.batch_index)
        total = sum(state.counts)
        return {"mixture": {
            source.name: {"tokens": count * self.seq_len, "share": count / total if total else 0.0,
                          "epochs": count / data.epoch_windows if data.epoch_windows else 0.0,
                          "weight": weight, "target": target,
                          "exhausted_at_tokens": None if at is None else at * self.seq_len}
            for source, data, count, weight, target, at in zip(
                self.sources, self.datasets, state.counts, state.weights, self.targets, state.exhausted_at)}}

    def state_dict(self) -> dict:
        state = self._state_at(self.batch_index)
        return {"batch_index": self.batch_index, "sampling": self.sampling, "seed": self.seed,
                "global_batch": self.global_batch, "on_exhausted": self.on_exhausted,
                "sources": [{"name": s.name, "weight": s.weight, "max_epochs": s.max_epochs, "count": count,
                             "credit": credit, "current_weight": weight, "exhausted_at": at}
                            for s, count, credit, weight, at in zip(self.sources, state.counts, state.credits,
                                                                    state.weights, state.exhausted_at)]}

    def load_state_dict(self, state: dict) -> None:
        if "sources" not in state:
            raise TokenShardError("data state was saved by a run on one directory (data.dir); this run reads a "
                                  "mixture (data.mixture)")
        mine = self.state_dict()
        for key in ("sampling", "seed", "global_batch", "on_exhausted"):
            if state[key] != mine[key]:
                raise TokenShardError(f"data state was saved with {key}={state[key]!r}, this run has {mine[key]!r}")
        saved = [(s["name"], s["weight"], s["max_epochs"]) for s in state["sources"]]
        now = [(s.name, s.weight, s.max_epochs) for s in self.sources]
        if saved != now:
            raise TokenShardError(f"data state was saved with the mixture (name, weight, max_epochs) {saved}, this "
                                  f"run has {now}; a resumed run keeps its mixture (train into a new out_dir to "
                                  "change it)")
        sources = state["sources"]
        self.batch_index = int(state["batch_index"])
        self._reset(self.batch_index, _SamplerState(
            [int(s["count"]) for s in sources], [float(s["credit"]) for s in sources],
            [float(s["current_weight"]) for s in sources], [s["exhausted_at"] for s in sources]))
