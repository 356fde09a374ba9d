"""Dedup test helpers: planted near-duplicate corpora, shingle-set Jaccard, configs.

Test modules import these from here (`tests.stages.dedup.conftest`), never from each other.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow.parquet as pq


def shingle_set(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = text.split()
    return {tuple(words[i: i + n]) for i in range(len(words) - n + 1)}


def true_jaccard(a: str, b: str) -> float:
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / len(sa | sb)


def edited(words: list[str], fraction: float, rng: random.Random, vocab: list[str]) -> list[str]:
    out = list(words)
    for position in rng.sample(range(len(words)), round(fraction * len(words))):
        out[position] = rng.choice(vocab)
    return out


VOCAB = [f"w{i}" for i in range(4000)]


def planted_corpus(seed: int = 0) -> tuple[list[str], dict[str, tuple[int, ...]]]:
    """Texts in corpus order and the groups planted in them (indices)."""
    rng = random.Random(seed)
    texts: list[str] = []
    groups: dict[str, list[int]] = {"above": [], "below": [], "copies": [], "chain": []}

    def add(words: list[str]) -> int:
        texts.append(" ".join(words))
        return len(texts) - 1

    for _ in range(25):  # unique documents
        add([rng.choice(VOCAB) for _ in range(120)])
    for _ in range(12):  # 0.5% of words edited: Jaccard ~0.95, well above 0.8
        base = [rng.choice(VOCAB) for _ in range(200)]
        groups["above"].append((add(base), add(edited(base, 0.005, rng, VOCAB))))
    for _ in range(12):  # 15% edited: Jaccard ~0.3, well below
        base = [rng.choice(VOCAB) for _ in range(150)]
        groups["below"].append((add(base), add(edited(base, 0.15, rng, VOCAB))))
    for _ in range(4):  # exact copies, one with case and punctuation changed
        base = [rng.choice(VOCAB) for _ in range(30)]
        first = add(base)
        texts.append(texts[first].upper().replace(" ", ", "))
        groups["copies"].append((first, len(texts) - 1))
    # A~B and B~C, but A and C are not similar: 3 words edited at each step of 200.
    a = [rng.choice(VOCAB) for _ in range(200)]
    b, c = list(a), None
    for position in (20, 60, 100):
        b[position] = rng.choice(VOCAB)
    c = list(b)
    for position in (130, 160, 190):
        c[position] = rng.choice(VOCAB)
    groups["chain"].append((add(a), add(b), add(c)))
    order = list(range(len(texts)))
    rng.shuffle(order)  # twins land in different shards, in either order
    where = {old: new for new, old in enumerate(order)}
    shuffled = [texts[old] for old in order]
    return shuffled, {k: [tuple(where[i] for i in g) for g in v] for k, v in groups.items()}


def write_corpus(directory: Path, texts: list[str], files: int = 3) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    per_file = -(-len(texts) // files)
    for f in range(files):
        with open(directory / f"part{f}.jsonl", "w") as out:
            for i in range(f * per_file, min((f + 1) * per_file, len(texts))):
                out.write(json.dumps({"id": f"doc{i:04d}", "text": texts[i]}) + "\n")


def config(tmp_path: Path, buckets: dict | None = None, signatures: dict | None = None) -> dict:
    return {
        "name": "minhash",
        "run_dir": str(tmp_path / "run"),
        "stages": {
            "ingest": {"kind": "ingest", "params": {
                "paths": [str(tmp_path / "corpus" / "*.jsonl")], "id_field": "id", "shard_size": 20}},
            "signatures": {"kind": "minhash_signatures", "inputs": ["ingest"],
                           "params": {"partitions": 3, **(signatures or {})}},
            "buckets": {"kind": "minhash_buckets", "inputs": ["signatures"], "params": buckets or {}},
            "clusters": {"kind": "minhash_clusters", "inputs": ["buckets"]},
            "dedup": {"kind": "minhash_filter", "inputs": ["clusters", "ingest"]},
        },
    }


def read_all(stage_dir: Path, sub: str) -> list[dict]:
    rows = []
    for path in sorted((stage_dir / sub).glob("*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows
