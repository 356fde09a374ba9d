"""Dedup benchmark: accuracy against exact Jaccard, signature speed, a 1M-document scale run
and the memory bounds of the phases that see the whole corpus.

    python bench/dedup.py                 # accuracy, speed and scale
    python bench/dedup.py accuracy speed  # some of them
    python bench/dedup.py scale --scale-docs 200000
    python bench/dedup.py exact-memory clusters-memory --bound-docs 1000000

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
exact-memory: N (default 1M) documents through exact_dedup with 1, 4 and 16 partitions,
  each phase in its own process: the duplicates phase's peak RSS falls with the partition
  count (docs / partitions per task), the per-shard phases do not depend on N.
clusters-memory: synthetic minhash_buckets output (N clustered documents in clusters of
  4, 2 to 32 pair rows per document, 16 partition files) through one minhash_clusters
  task: peak RSS stays flat as pairs grow and grows with clustered documents.

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
        path = buckets_dir.parent / shard["shard"]  # relative to the run directory
        first = pq.read_table(path, columns=["id"]).column("id")[0].as_py()
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

PHASES = ["ingest", "exact.fingerprints", "exact.duplicates", "exact", "signatures", "buckets",
          "clusters", "filter"]


def write_scale_corpus(directory: Path, n: int, seed: int = 3) -> None:
    """n documents of 40 words; 10% copy an earlier one, half of those with the last word
    changed (5-gram Jaccard 35/37 = 0.95): exact and near copies."""
    rng = np.random.default_rng(seed)
    vocab = make_vocab(30000, seed)
    directory.mkdir(parents=True)
    chunk = 100_000
    for part, lo in enumerate(range(0, n, chunk)):
        size = min(chunk, n - lo)
        matrix = rng.integers(0, len(vocab), (size, 40))
        copies = rng.random(size) < 0.1
        sources = rng.integers(0, size, size)
        matrix[copies] = matrix[sources[copies]]
        edit = copies & (rng.random(size) < 0.5)
        matrix[edit, -1] = rng.integers(0, len(vocab), int(edit.sum()))
        texts = [" ".join(row) for row in vocab[matrix]]
        ids = [f"doc{lo + k:08d}" for k in range(size)]
        pq.write_table(pa.table({"id": ids, "text": texts}), directory / f"part{part:03d}.parquet")


def ingest_stage(work: Path) -> dict:
    return {"kind": "ingest", "params": {"paths": [str(work / "corpus" / "*.parquet")],
                                         "id_field": "id", "shard_size": 50000}}


def scale_config(work: Path) -> dict:
    return {"name": "bench-scale", "run_dir": str(work / "run"), "stages": {
        "ingest": ingest_stage(work),
        "exact": {"kind": "exact_dedup", "inputs": ["ingest"], "params": {"partitions": 16}},
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


def child(*argv: str) -> dict:
    """Run this script's child mode `argv` in a fresh process; its last line as JSON."""
    out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if out.returncode:
        print(out.stderr[-3000:])
        raise SystemExit(f"{argv} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def baseline_mb() -> float:
    return float(child("_baseline"))


def scale(args: argparse.Namespace) -> None:
    n = args.scale_docs
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        write_scale_corpus(work / "corpus", n)
        print(f"\n## scale: {n:,} documents of 40 words, ~10% exact or near copies "
              f"(generated in {time.perf_counter() - start:.0f}s), local executor, one process per phase")
        config_path = work / "config.json"
        config_path.write_text(json.dumps(scale_config(work)))
        print("| phase | wall s | docs/s | peak RSS MB | in | kept |\n|---|---|---|---|---|---|")
        for phase in PHASES:
            result = child("_phase", str(config_path), phase)
            c = result["counts"]
            print(f"| {phase} | {result['wall']:.1f} | {n / result['wall']:,.0f} | "
                  f"{result['peak_mb']:.0f} | {c['in']:,} | {c['kept']:,} |")
        print(f"(a process that only imports the engine peaks at {baseline_mb():.0f} MB)")


# ---------------------------------------------------------------- memory bounds

def exact_bound(args: argparse.Namespace) -> None:
    """exact_dedup's phases on one corpus with 1, 4 and 16 partitions, one process each."""
    n = args.bound_docs
    partitions = (1, 4, 16)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_scale_corpus(work / "corpus", n)
        stages: dict = {"ingest": ingest_stage(work)}
        for p in partitions:
            stages[f"exact_p{p}"] = {"kind": "exact_dedup", "inputs": ["ingest"],
                                     "params": {"partitions": p}}
        config_path = work / "config.json"
        config_path.write_text(json.dumps({"name": "bench-exact", "run_dir": str(work / "run"),
                                           "stages": stages}))
        child("_phase", str(config_path), "ingest")
        base = baseline_mb()
        print(f"\n## exact_dedup memory: {n:,} documents (shards of 50,000), peak RSS per phase "
              f"process; the engine alone: {base:.0f} MB")
        print("| partitions | fingerprints MB | duplicates MB | filter MB | duplicates s | "
              "docs per duplicates task | duplicates MB above the engine, per 1M docs in a task |"
              "\n|---|---|---|---|---|---|---|")
        for p in partitions:
            name = f"exact_p{p}"
            peaks = {}
            for phase in (f"{name}.fingerprints", f"{name}.duplicates", name):
                peaks[phase] = child("_phase", str(config_path), phase)
            dup = peaks[f"{name}.duplicates"]
            per_task = dup["counts"]["in"] / p
            print(f"| {p} | {peaks[f'{name}.fingerprints']['peak_mb']:.0f} | {dup['peak_mb']:.0f} | "
                  f"{peaks[name]['peak_mb']:.0f} | {dup['wall']:.1f} | {per_task:,.0f} | "
                  f"{(dup['peak_mb'] - base) / per_task * 1e6:.0f} |")


def write_pairs(work: Path, docs: int, pair_rows: int, files: int = 16) -> tuple[list[str], list[str]]:
    """Synthetic minhash_buckets output: `docs` documents in clusters of 4 over 20 id shards,
    every one in a pair (a star per cluster), and random pairs inside clusters up to
    `pair_rows`, spread over `files` partition files. Returns (pair files, shards)."""
    rng = np.random.default_rng(5)
    shards, per_shard = 20, -(-docs // 20)
    shard_paths = []
    for s in range(shards):
        rows = min(per_shard, docs - s * per_shard)
        path = work / f"shard{s:02d}.parquet"
        ids = pa.array([f"doc{s * per_shard + r:09d}" for r in range(rows)])
        pq.write_table(pa.table({"id": ids}), path)
        shard_paths.append(str(path))
    position = np.arange(docs, dtype=np.int64)
    refs = (np.uint64(1) << np.uint64(32)) * (position // per_shard).astype(np.uint64) + (
        position % per_shard).astype(np.uint64)
    members = rng.permutation(docs)  # cluster c is members[4c: 4c + 4]
    clusters = docs // 4
    star_b = members[: clusters * 4].reshape(clusters, 4)
    a = np.repeat(star_b[:, 0], 3)
    b = star_b[:, 1:].reshape(-1)
    extra = max(pair_rows - len(a), 0)
    c = rng.integers(0, clusters, extra)
    i, j = rng.integers(0, 4, extra), rng.integers(0, 4, extra)
    j = np.where(i == j, (j + 1) % 4, j)
    a = np.concatenate([a, star_b[c, i]])
    b = np.concatenate([b, star_b[c, j]])
    ra, rb = refs[a], refs[b]
    ra, rb = np.minimum(ra, rb), np.maximum(ra, rb)
    part = rng.integers(0, files, len(ra))
    pair_paths = []
    for f in range(files):
        mask = part == f
        path = work / f"pairs-p{f:05d}.parquet"
        pq.write_table(pa.table({"a": ra[mask], "b": rb[mask]}), path)
        pair_paths.append(str(path))
    return pair_paths, shard_paths


def run_clusters(spec_path: str) -> None:
    """Child process: one minhash_clusters task over the synthetic pairs."""
    from pipeline.stage import Task
    from stages.dedup.minhash_clusters import MinhashClusters, MinhashClustersParams

    spec = json.loads(Path(spec_path).read_text())
    stage = MinhashClusters("clusters", MinhashClustersParams(), Path(spec["stage_dir"]))
    task = Task(name="clusters", inputs=tuple(spec["pairs"]),
                payload=(("shards", tuple(spec["shards"])), ("shards_table", {"shards": []})))
    start = time.perf_counter()
    result = stage.run_task(task)
    print(json.dumps({"wall": time.perf_counter() - start, "peak_mb": peak_rss_mb(),
                      "info": result.info}))


def clusters_bound(args: argparse.Namespace) -> None:
    """minhash_clusters' peak RSS as pairs grow at fixed documents, and as documents grow."""
    d = args.bound_docs
    grid = [(d, 2 * d), (d, 8 * d), (d, 32 * d), (2 * d, 4 * d), (4 * d, 8 * d)]
    base = baseline_mb()
    print(f"\n## minhash_clusters memory: synthetic pairs (clusters of 4, 16 partition files), "
          f"one process per run; the engine alone: {base:.0f} MB")
    print("| clustered docs | pair rows | wall s | peak RSS MB | MB above the engine per 1M docs |"
          "\n|---|---|---|---|---|")
    for docs, pair_rows in grid:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            pairs, shards = write_pairs(work, docs, pair_rows)
            spec = work / "spec.json"
            spec.write_text(json.dumps({"pairs": pairs, "shards": shards,
                                        "stage_dir": str(work / "stage")}))
            result = child("_clusters", str(spec))
        assert result["info"]["docs_in_clusters"] == docs
        print(f"| {docs:,} | {result['info']['pair_rows']:,} | {result['wall']:.1f} | "
              f"{result['peak_mb']:.0f} | {(result['peak_mb'] - base) / docs * 1e6:.0f} |")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_phase":
        run_phase(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_clusters":
        run_clusters(sys.argv[2])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_baseline":
        import pipeline.runner  # noqa: F401  what every phase process imports before it works
        import scipy.sparse  # noqa: F401
        print(peak_rss_mb())
        return
    parts = {"accuracy": accuracy, "speed": speed, "scale": scale, "exact-memory": exact_bound,
             "clusters-memory": clusters_bound}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="*", default=["accuracy", "speed", "scale"],
                        choices=list(parts))
    parser.add_argument("--accuracy-docs", type=int, default=20000)
    parser.add_argument("--speed-docs", type=int, default=20000)
    parser.add_argument("--slow-docs", type=int, default=2000,
                        help="documents given to datatrove and datasketch (they are slow)")
    parser.add_argument("--scale-docs", type=int, default=1_000_000)
    parser.add_argument("--bound-docs", type=int, default=1_000_000,
                        help="documents of exact-memory; clustered documents of clusters-memory "
                             "(it also runs 2x and 4x that)")
    parser.add_argument("--no-datasketch", action="store_true",
                        help="skip the datasketch MinHashLSH accuracy reference")
    args = parser.parse_args()
    for part in args.parts:
        parts[part](args)


if __name__ == "__main__":
    main()
