"""Dedup benchmark: accuracy against exact Jaccard, signature speed, and a 1M-document scale run.

    python bench/dedup.py                 # all three parts
    python bench/dedup.py accuracy speed  # some of them
    python bench/dedup.py scale --scale-docs 200000

accuracy: 20k generated documents (10k random base texts of 100-300 words and one planted
  variant each, made by substituting words so that the 5-gram Jaccard lands uniformly in
  0.5-1.0; some variants are exact copies). Ground truth is the exact Jaccard of shingle
  sets; a pair is a duplicate when it is >= 0.8. Precision/recall/F1 are over pairs: a
  predicted pair is two documents in one output cluster. The lmforge runs go through the
  real stages (pipeline.run, local executor); datasketch's MinHashLSH with the same bands
  and rows is the reference.
speed: MinHash signatures per second on one core, on the same documents in the same run:
  lmforge's vectorized MinHasher, datatrove's MinhashDedupSignature (shingling + signature,
  its default English word tokenizer), and plain per-document datasketch MinHash.
scale: N (default 1M) short documents through ingest, exact_dedup and the four minhash
  phases (default params: exact verification), each phase in its own process: wall time
  and peak resident memory.

Timings depend on the machine and its load; they are printed, never asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, Python puts bench/ first on the path, where sibling benchmarks (e.g.
# bench/tokenize.py) shadow standard modules; the repository root replaces it.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
import os
import resource
import subprocess
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stages.dedup.minhash import MinHasher, optimal_bands  # noqa: E402

NGRAM = 5
THRESHOLD = 0.8


# ---------------------------------------------------------------- corpus generation

def make_vocab(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = {"".join(rng.choice(letters, rng.integers(3, 10))) for _ in range(size * 2)}
    return np.array(sorted(words)[:size])


def shingles(words: list[str]) -> set[tuple[str, ...]]:
    if len(words) < NGRAM:
        return {tuple(words)} if words else set()
    return {tuple(words[i: i + NGRAM]) for i in range(len(words) - NGRAM + 1)}


def jaccard(a: list[str], b: list[str]) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def planted_corpus(n_base: int, seed: int) -> tuple[list[str], list[tuple[int, int, float]]]:
    """Base texts and one variant each; returns (texts, planted (i, j, exact jaccard))."""
    rng = np.random.default_rng(seed)
    vocab = make_vocab(20000, seed)
    texts: list[str] = []
    planted = []
    for _ in range(n_base):
        length = int(rng.integers(100, 301))
        base = list(vocab[rng.integers(0, len(vocab), length)])
        target = rng.uniform(0.5, 1.0)
        # m random substitutions keep about (1 - m/L)^5 of the shingles; J = q / (2 - q).
        q = 2 * target / (1 + target)
        edits = int(round(length * (1 - q ** (1 / NGRAM))))
        variant = list(base)
        for position in rng.choice(length, edits, replace=False):
            variant[position] = vocab[rng.integers(0, len(vocab))]
        i = len(texts)
        texts += [" ".join(base), " ".join(variant)]
        planted.append((i, i + 1, jaccard(base, variant)))
    # Interleave so that a base and its variant land in different shards most of the time.
    order = np.random.default_rng(seed + 1).permutation(len(texts))
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    shuffled = [texts[k] for k in order]
    planted = [(int(min(position[i], position[j])), int(max(position[i], position[j])), s)
               for i, j, s in planted]
    return shuffled, planted


def write_jsonl(texts: list[str], directory: Path, files: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    per_file = -(-len(texts) // files)
    for f in range(files):
        with open(directory / f"part{f:03d}.jsonl", "w") as out:
            for index in range(f * per_file, min((f + 1) * per_file, len(texts))):
                out.write(json.dumps({"id": f"doc{index:07d}", "text": texts[index]}) + "\n")


# ---------------------------------------------------------------- accuracy

def pair_scores(predicted: set[tuple[int, int]], texts: list[str],
                truth: dict[tuple[int, int], float]) -> tuple[float, float, float]:
    truth = dict(truth)
    for pair in predicted - truth.keys():
        truth[pair] = jaccard(texts[pair[0]].split(), texts[pair[1]].split())
    positives = {p for p, s in truth.items() if s >= THRESHOLD}
    tp = len(predicted & positives)
    precision = tp / len(predicted) if predicted else 1.0
    recall = tp / len(positives) if positives else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def clusters_to_pairs(groups: dict[object, list[int]]) -> set[tuple[int, int]]:
    pairs = set()
    for members in groups.values():
        members = sorted(members)
        pairs |= {(a, b) for k, a in enumerate(members) for b in members[k + 1:]}
    return pairs


def lmforge_pairs(work: Path, variants: dict[str, dict]) -> dict[str, tuple[set, float]]:
    """Run the real stages once per variant (one config, shared ingest)."""
    from pipeline import run

    stages: dict = {"ingest": {"kind": "ingest", "params": {
        "paths": [str(work / "corpus" / "*.jsonl")], "id_field": "id", "shard_size": 2500}}}
    for name, v in variants.items():
        stages[f"{name}_sig"] = {"kind": "minhash_signatures", "inputs": ["ingest"],
                                 "params": v["signatures"]}
        stages[f"{name}_buckets"] = {"kind": "minhash_buckets", "inputs": [f"{name}_sig"],
                                     "params": v.get("buckets", {})}
        stages[f"{name}_clusters"] = {"kind": "minhash_clusters", "inputs": [f"{name}_buckets"]}
    run({"name": "bench-accuracy", "run_dir": str(work / "run"), "stages": stages}, executor="local")
    results = {}
    for name in variants:
        seconds = sum(json.loads((work / "run" / f"{name}_{s}" / "stats.json").read_text())["wall_seconds"]
                      for s in ("sig", "buckets", "clusters"))
        clusters = pq.read_table(work / "run" / f"{name}_clusters" / "clusters" / "clusters.parquet")
        groups: dict = {}
        shard_rows = _shard_offsets(work / "run" / f"{name}_buckets")
        for doc, kept in zip(clusters.column("doc").to_pylist(), clusters.column("kept").to_pylist()):
            groups.setdefault(kept, []).append(shard_rows[doc >> 32] + (doc & 0xFFFFFFFF))
        results[name] = (clusters_to_pairs(groups), seconds)
    return results


def _shard_offsets(buckets_dir: Path) -> list[int]:
    """Corpus position of each shard's first row (ingest names docs in file order)."""
    table = json.loads((buckets_dir / "meta" / "shards.json").read_text())
    offsets = []
    for shard in table["shards"]:
        first = pq.read_table(shard["shard"], columns=["id"]).column("id")[0].as_py()
        offsets.append(int(first.removeprefix("doc")))
    return offsets


def datasketch_pairs(texts: list[str], num_perm: int, bands: int, rows: int) -> tuple[set, float]:
    from datasketch import MinHash, MinHashLSH

    start = time.perf_counter()
    lsh = MinHashLSH(num_perm=num_perm, params=(bands, rows))
    parent = list(range(len(texts)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for index, text in enumerate(texts):
        m = MinHash(num_perm=num_perm, seed=1)
        m.update_batch([" ".join(s).encode() for s in shingles(text.split())])
        for other in lsh.query(m):
            ra, rb = find(index), find(other)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        lsh.insert(index, m)
    groups: dict = {}
    for index in range(len(texts)):
        groups.setdefault(find(index), []).append(index)
    return clusters_to_pairs({k: v for k, v in groups.items() if len(v) > 1}), time.perf_counter() - start


def accuracy(args: argparse.Namespace) -> None:
    texts, planted = planted_corpus(args.accuracy_docs // 2, seed=7)
    truth = {(i, j): s for i, j, s in planted}
    sims = np.array([s for _, _, s in planted])
    print(f"\n## accuracy: {len(texts)} documents, {len(planted)} planted pairs, exact 5-gram Jaccard "
          f"{sims.min():.2f}-{sims.max():.2f}, {int((sims >= THRESHOLD).sum())} pairs >= {THRESHOLD}")
    b, r = optimal_bands(THRESHOLD, 128)
    balanced = {"num_perm": 128, "false_positive_weight": 0.5, "false_negative_weight": 0.5}
    rb, rr = optimal_bands(THRESHOLD, 128, 0.05, 0.95)
    variants = {
        f"LSH only, b={b} r={r}, verify off": {"signatures": balanced, "buckets": {"verify": "off"}},
        f"b={b} r={r} + exact verify": {"signatures": balanced},
        f"default: b={rb} r={rr} + exact verify": {"signatures": {}},
        f"b={rb} r={rr} + estimated verify": {"signatures": {"keep_signatures": True},
                                             "buckets": {"verify": "estimated"}},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_jsonl(texts, work / "corpus", files=8)
        keyed = {f"v{k}": v for k, v in enumerate(variants.values())}
        ours = lmforge_pairs(work, keyed)
    rows = []
    for label, key in zip(variants, keyed):
        predicted, seconds = ours[key]
        rows.append((f"lmforge {label}", *pair_scores(predicted, texts, truth), seconds))
    if not args.no_datasketch:
        predicted, seconds = datasketch_pairs(texts, 128, b, r)
        rows.append((f"datasketch MinHashLSH (b={b}, r={r})", *pair_scores(predicted, texts, truth),
                     seconds))
    print(f"| method | precision | recall | F1 | seconds |\n|---|---|---|---|---|")
    for label, p, rc, f1, seconds in rows:
        print(f"| {label} | {p:.3f} | {rc:.3f} | {f1:.3f} | {seconds:.1f} |")


# ---------------------------------------------------------------- speed

def speed(args: argparse.Namespace) -> None:
    texts, _ = planted_corpus(args.speed_docs // 2, seed=11)
    words = np.mean([len(t.split()) for t in texts])
    print(f"\n## speed: signatures of {len(texts)} documents ({words:.0f} words on average), one core")
    rows = []
    hasher = MinHasher(128, NGRAM, 1)
    array = pa.array(texts)
    start = time.perf_counter()
    for lo in range(0, len(texts), 1024):
        hasher.signatures(array.slice(lo, 1024))
    ours = len(texts) / (time.perf_counter() - start)
    rows.append(("lmforge MinHasher (numpy, 128 perm)", len(texts), ours))
    subset = texts[: args.slow_docs]
    try:
        from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

        step = MinhashDedupSignature(tempfile.mkdtemp(), MinhashConfig())  # 14 x 8 = 112 hashes
        step.get_signature(step.get_shingles(subset[0]))  # loads the word tokenizer
        start = time.perf_counter()
        for text in subset:
            step.get_signature(step.get_shingles(text))
        rows.append(("datatrove MinhashDedupSignature (112 hashes)", len(subset),
                     len(subset) / (time.perf_counter() - start)))
    except ImportError as exc:
        print(f"datatrove is not installed ({exc}); `pip install -e .[filter]` adds it")
    from datasketch import MinHash

    start = time.perf_counter()
    for text in subset:
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([" ".join(s).encode() for s in shingles(text.lower().split())])
    rows.append(("datasketch MinHash per document (128 perm)", len(subset),
                 len(subset) / (time.perf_counter() - start)))
    print("| implementation | documents | docs/s per core | lmforge speed-up |\n|---|---|---|---|")
    for label, n, rate in rows:
        print(f"| {label} | {n} | {rate:,.0f} | {ours / rate:.1f}x |")


# ---------------------------------------------------------------- scale

PHASES = ["ingest", "exact_dedup", "signatures", "buckets", "clusters", "filter"]


def scale_config(work: Path) -> dict:
    return {"name": "bench-scale", "run_dir": str(work / "run"), "stages": {
        "ingest": {"kind": "ingest", "params": {"paths": [str(work / "corpus" / "*.parquet")],
                                                "id_field": "id", "shard_size": 50000}},
        "exact_dedup": {"kind": "exact_dedup", "inputs": ["ingest"]},
        "signatures": {"kind": "minhash_signatures", "inputs": ["ingest"], "params": {"partitions": 16}},
        "buckets": {"kind": "minhash_buckets", "inputs": ["signatures"]},
        "clusters": {"kind": "minhash_clusters", "inputs": ["buckets"]},
        "filter": {"kind": "minhash_filter", "inputs": ["ingest", "clusters"]},
    }}


def run_phase(config_path: str, phase: str) -> None:
    """Child process: run the config up to `phase` (earlier phases are cached)."""
    from pipeline import run

    config = json.loads(Path(config_path).read_text())
    start = time.perf_counter()
    outcomes = run(config, executor="local", until=phase)
    wall = time.perf_counter() - start
    print(json.dumps({"wall": wall, "peak_mb": peak_rss_mb(), "counts": outcomes[-1].counts.to_dict()}))


def peak_rss_mb() -> float:
    """This process's peak resident memory. Not ru_maxrss: on Linux that survives exec, so a
    child would report its parent's peak (the generated corpus) instead of its own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scale(args: argparse.Namespace) -> None:
    n = args.scale_docs
    rng = np.random.default_rng(3)
    vocab = make_vocab(30000, 3)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "corpus").mkdir()
        start = time.perf_counter()
        words_per_doc = 40
        dup_share = 0.1
        chunk = 100_000
        for part, lo in enumerate(range(0, n, chunk)):
            size = min(chunk, n - lo)
            matrix = rng.integers(0, len(vocab), (size, words_per_doc))
            # 10% of documents copy an earlier one; half of those change their last word
            # (5-gram Jaccard 35/37 = 0.95 for 40 words): exact and near copies.
            copies = rng.random(size) < dup_share
            sources = rng.integers(0, size, size)
            matrix[copies] = matrix[sources[copies]]
            edit = copies & (rng.random(size) < 0.5)
            matrix[edit, -1] = rng.integers(0, len(vocab), int(edit.sum()))
            texts = [" ".join(row) for row in vocab[matrix]]
            ids = [f"doc{lo + k:08d}" for k in range(size)]
            pq.write_table(pa.table({"id": ids, "text": texts}), work / "corpus" / f"part{part:03d}.parquet")
            del texts, ids, matrix
        print(f"\n## scale: {n:,} documents of {words_per_doc} words, ~{dup_share:.0%} exact or near copies "
              f"(generated in {time.perf_counter() - start:.0f}s), local executor, one process per phase")
        config_path = work / "config.json"
        config_path.write_text(json.dumps(scale_config(work)))
        print("| phase | wall s | docs/s | peak RSS MB | in | kept |\n|---|---|---|---|---|---|")
        for phase in PHASES:
            out = subprocess.run(
                [sys.executable, __file__, "_phase", str(config_path), phase],
                capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
            if out.returncode:
                print(out.stderr[-3000:])
                raise SystemExit(f"phase {phase} failed")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            c = result["counts"]
            print(f"| {phase} | {result['wall']:.1f} | {n / result['wall']:,.0f} | "
                  f"{result['peak_mb']:.0f} | {c['in']:,} | {c['kept']:,} |")
        baseline = subprocess.run(
            [sys.executable, __file__, "_baseline"], capture_output=True, text=True)
        print(f"(a process that only imports the engine peaks at {float(baseline.stdout):.0f} MB)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_phase":
        run_phase(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_baseline":
        import pipeline.runner  # noqa: F401  what every phase process imports before it works
        import scipy.sparse  # noqa: F401
        print(peak_rss_mb())
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", default=["accuracy", "speed", "scale"],
                        choices=["accuracy", "speed", "scale"])
    parser.add_argument("--accuracy-docs", type=int, default=20000)
    parser.add_argument("--speed-docs", type=int, default=20000)
    parser.add_argument("--slow-docs", type=int, default=2000,
                        help="documents given to datatrove and datasketch (they are slow)")
    parser.add_argument("--scale-docs", type=int, default=1_000_000)
    parser.add_argument("--no-datasketch", action="store_true",
                        help="skip the datasketch MinHashLSH accuracy reference")
    args = parser.parse_args()
    for part in args.parts:
        {"accuracy": accuracy, "speed": speed, "scale": scale}[part](args)


if __name__ == "__main__":
    main()
