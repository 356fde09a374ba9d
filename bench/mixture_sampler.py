"""What a data mixture costs per batch, beside one token-shard directory (model/mixture.py).

    python bench/mixture_sampler.py [--seq-len 1024] [--batch-size 16] [--world-size 8] [--batches 200]

Writes three synthetic token-shard sets (uint16, 8M tokens each) into a temp folder, then
times, per batch of one rank: ``ShardDataset.batch`` on one set, ``MixtureDataset.batch``
over the three (weights 0.7/0.2/0.1) and the mixture's planning alone (which source gives
each row of the global batch: host Python over world_size * batch_size rows), for random
and sequential windows. Prints milliseconds per batch; never passes or fails.
Memory: the shards are memory-mapped; one batch of tokens at a time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from model.data import ShardDataset
from model.mixture import MixtureDataset, Source
from model.token_shards import write_token_shard


def write_set(directory: Path, seed: int, tokens: int = 8_000_000, vocab_size: int = 32_768) -> Path:
    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    docs = np.array_split(rng.integers(0, vocab_size, tokens, dtype=np.uint16), 2000)
    write_token_shard(directory / "train-00000.bin", docs, vocab_size)
    return directory


def per_batch_ms(fn, batches: int) -> float:
    fn(0)  # warm: page cache, first random block
    start = time.perf_counter()
    for i in range(1, batches + 1):
        fn(i)
    return 1000 * (time.perf_counter() - start) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=16, help="rows per rank")
    parser.add_argument("--world-size", type=int, default=8, help="ranks the global batch is planned for")
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()
    shape = dict(seq_len=args.seq_len, batch_size=args.batch_size, world_size=args.world_size)
    with tempfile.TemporaryDirectory() as tmp:
        sets = [write_set(Path(tmp) / name, seed) for seed, name in enumerate(("web", "books", "code"))]
        sources = [Source(d.name, d, w) for d, w in zip(sets, (0.7, 0.2, 0.1))]
        print(f"rank batch {args.batch_size} x {args.seq_len} tokens, global batch "
              f"{args.batch_size * args.world_size} rows, {args.batches} batches")
        for sampling in ("random", "sequential"):
            single = ShardDataset(sets[0], "train", sampling=sampling, **shape)
            mixture = MixtureDataset(sources, "train", sampling=sampling, **shape)
            planner = MixtureDataset(sources, "train", sampling=sampling, **shape)
            one = per_batch_ms(single.batch, args.batches)
            mixed = per_batch_ms(mixture.batch, args.batches)
            plan = per_batch_ms(planner._plan, args.batches)
            print(f"{sampling:>10}: one directory {one:.3f} ms/batch, mixture {mixed:.3f} ms/batch "
                  f"(planning {plan:.3f} ms of it), overhead {mixed - one:+.3f} ms")


if __name__ == "__main__":
    main()
