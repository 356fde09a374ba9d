"""Deduplication math shared by the dedup stages: normalization, MinHash, LSH bands, clusters.

Everything here works on whole Arrow/numpy batches, never one Python object per word, which
is what makes the signature phase an order of magnitude faster than per-document MinHash.

Choices that decide the output (change one and every signature changes):
- Normalization (`normalize_texts`, stages/words.py): Unicode lowercase, then every run of characters that
  are not letters, digits or combining marks becomes one space. So case, punctuation and
  whitespace differences vanish; accents and non-Latin scripts are kept. Words are what
  lies between spaces (scripts written without spaces count as one word per run).
- Word hash: a position-weighted sum of the word's UTF-8 bytes with per-position 64-bit odd
  weights, mod 2^64, then the splitmix64 finalizer. Vectorized over Arrow buffers; the
  same word hashes the same in any batch, on any machine.
- Shingles: word `ngram`s (a document with fewer words than `ngram` is one shingle of all
  its words; a document with no words has none and is never a near-duplicate). Each
  shingle hashes to 32 bits.
- Permutations: multiply-add-shift, h_k(x) = ((a_k * x + b_k) mod 2^64) >> 32 with random
  64-bit a_k (odd), b_k from `seed` — Dietzfelbinger's strongly universal family for
  32-bit keys, computed in 64-bit numpy arithmetic. Signatures are uint32.
- LSH: `bands` x `rows` taken from the threshold by datasketch's optimum (weighted false
  positive + false negative area) unless given. A band key is a 64-bit mix of its rows.
- Candidate pairs: within a group of documents sharing a band key, each member is paired
  with the group's smallest document reference (a star, linear in the group size).
- Verification: `exact_jaccard` of two documents' distinct shingle hashes (sorted uint32
  sets, stored per shard by the signatures phase), all pairs of a chunk in one sort.
- Exact duplicates (`text_fingerprints`): 128 bits from the same normalized word sequence.
- Document references are `shard_index << 32 | row`: the smallest reference in a cluster
  is the document that comes first in corpus order, which is the one every stage keeps.

The module ends with the small file helpers the dedup phases share (committing .parquet,
.npy and .json files like doc shards, finding an upstream phase's files). It is shared by
the stages because stages never import each other.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.artifacts import FileEntry, commit_artifact, tmp_path_for
from pipeline.stage import StageInput
from stages.words import (
    hash_strings,
    normalize_texts,
    position_weights,
    splitmix64,
    words_of,
)

SHINGLE_CHUNK = 16384  # shingles per permutation block: num_perm x this x 8 bytes of scratch
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def doc_ref(shard_index: int, rows: np.ndarray) -> np.ndarray:
    """Corpus-order references of rows of one shard (uint64)."""
    return (np.uint64(shard_index) << np.uint64(32)) | rows.astype(np.uint64)


def ref_shard(refs: np.ndarray) -> np.ndarray:
    return (refs >> np.uint64(32)).astype(np.int64)


def ref_row(refs: np.ndarray) -> np.ndarray:
    return (refs & np.uint64(0xFFFFFFFF)).astype(np.int64)


def shingle_hashes(word_hashes: np.ndarray, counts: np.ndarray, ngram: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of word n-grams per document: (hashes as uint64, shingles per document).

    A document with fewer than `ngram` words gives one shingle of all its words.
    """
    rng = np.random.default_rng([seed, 0x5EED])
    weights = rng.integers(1, 2**63, size=ngram, dtype=np.uint64) | np.uint64(1)
    total = len(word_hashes)
    ends = np.repeat(np.cumsum(counts), counts)  # end (exclusive) of each word's document
    positions = np.arange(total, dtype=np.int64)
    padded = np.concatenate([word_hashes, np.zeros(ngram, dtype=np.uint64)])
    acc = np.zeros(total, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(ngram):
            inside = (positions + k) < ends
            acc += np.where(inside, padded[k: k + total] * weights[k], np.uint64(0))
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    valid = (positions + ngram <= ends) | ((positions == starts) & (ends - starts < ngram))
    per_doc = np.where(counts >= ngram, counts - ngram + 1, np.minimum(counts, 1))
    return splitmix64(acc[valid]) >> np.uint64(32), per_doc


class MinHasher:
    """MinHash signatures of many documents at once (uint32, shape (docs, num_perm))."""

    def __init__(self, num_perm: int, ngram: int, seed: int):
        self.num_perm = num_perm
        self.ngram = ngram
        self.seed = seed
        rng = np.random.default_rng([seed, num_perm])
        self.a = (rng.integers(0, 2**64, size=num_perm, dtype=np.uint64) | np.uint64(1))[:, None]
        self.b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64)[:, None]

    def shingles(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(32-bit shingle hashes as uint64, shingles per document) of raw texts."""
        word_hashes, counts = words_of(normalize_texts(texts))
        return shingle_hashes(word_hashes, counts, self.ngram, self.seed)

    def signatures(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(signatures, shingles per document) of raw texts; empty documents are all-max."""
        shingles, per_doc = self.shingles(texts)
        return self.signatures_of_shingles(shingles, per_doc), per_doc

    def signatures_of_shingles(self, shingles: np.ndarray, per_doc: np.ndarray) -> np.ndarray:
        n = len(per_doc)
        sig = np.full((n, self.num_perm), _M64, dtype=np.uint64)
        doc_starts = np.cumsum(per_doc) - per_doc
        owner = np.repeat(np.arange(n), per_doc)
        scratch = np.empty((self.num_perm, min(SHINGLE_CHUNK, max(len(shingles), 1))), np.uint64)
        for lo in range(0, len(shingles), SHINGLE_CHUNK):
            hi = min(lo + SHINGLE_CHUNK, len(shingles))
            block = scratch[:, : hi - lo]
            with np.errstate(over="ignore"):
                np.multiply(self.a, shingles[lo:hi], out=block)
                np.add(block, self.b, out=block)
            # Segments of this block: each one document (a document may span blocks).
            inner = doc_starts[(doc_starts > lo) & (doc_starts < hi) & (per_doc > 0)]
            seg_starts = np.concatenate([[lo], inner]) - lo
            docs = owner[seg_starts + lo]
            partial = np.minimum.reduceat(block, seg_starts, axis=1).T
            sig[docs] = np.minimum(sig[docs], partial)
        # The shift commutes with the minimum, so it is applied once per signature value.
        return (sig >> np.uint64(32)).astype(np.uint32)


@functools.lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int, false_positive_weight: float = 0.5,
                  false_negative_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimizing the weighted false positive/negative areas (datasketch's)."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, false_positive_weight, false_negative_weight)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """A 64-bit key per (document, band): shape (docs, bands)."""
    n = len(signatures)
    cube = signatures[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    weights = splitmix64(np.arange(rows, dtype=np.uint64) + np.uint64(0xB4D)) | np.uint64(1)
    with np.errstate(over="ignore"):
        mixed = (cube * weights).sum(axis=2, dtype=np.uint64)
    return splitmix64(mixed)


def candidate_pairs(band: np.ndarray, key: np.ndarray, doc: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (anchor, member) of documents sharing a band key, unique, sorted.

    The anchor is the smallest reference of its group; each other member pairs with it.
    """
    if len(doc) == 0:
        empty = np.empty(0, dtype=np.uint64)
        return empty, empty
    order = np.lexsort((doc, key, band))
    band, key, doc = band[order], key[order], doc[order]
    new_group = np.ones(len(doc), dtype=bool)
    new_group[1:] = (band[1:] != band[:-1]) | (key[1:] != key[:-1])
    anchor_index = np.maximum.accumulate(np.where(new_group, np.arange(len(doc)), 0))
    member = ~new_group & (doc != doc[anchor_index])
    return unique_pairs(doc[anchor_index][member], doc[member])


def unique_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (a, b) pairs sorted by a then b."""
    if len(a) == 0:
        return a.astype(np.uint64), b.astype(np.uint64)
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    keep = np.ones(len(a), dtype=bool)
    keep[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[keep], b[keep]


def shingle_sets(shingles: np.ndarray, per_doc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each document's distinct shingle hashes, sorted: (uint32 values, offsets (docs + 1))."""
    owner = np.repeat(np.arange(len(per_doc), dtype=np.uint64), per_doc)
    keys = np.sort((owner << np.uint64(32)) | shingles)
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    sizes = np.bincount((keys >> np.uint64(32)).astype(np.int64), minlength=len(per_doc))
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32), offsets


def gather_sets(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """The shingle sets of `rows` (values may be memory-mapped): (concatenated, sizes)."""
    starts, sizes = offsets[rows], offsets[rows + 1] - offsets[rows]
    first = np.cumsum(sizes) - sizes
    index = np.repeat(starts - first, sizes) + np.arange(int(sizes.sum()), dtype=np.int64)
    return np.asarray(values[index]), sizes


def exact_jaccard(a_owner: np.ndarray, a_values: np.ndarray, b_owner: np.ndarray,
                  b_values: np.ndarray, pairs: int) -> np.ndarray:
    """Jaccard of `pairs` pairs of shingle sets, all at once.

    Each side is given as values (distinct within a set) and the pair each value belongs to.
    """
    keys = np.concatenate([
        (a_owner.astype(np.uint64) << np.uint64(32)) | a_values.astype(np.uint64),
        (b_owner.astype(np.uint64) << np.uint64(32)) | b_values.astype(np.uint64),
    ])
    keys.sort()
    shared = keys[1:][keys[1:] == keys[:-1]] >> np.uint64(32)
    inter = np.bincount(shared.astype(np.int64), minlength=pairs)
    union = np.bincount(a_owner, minlength=pairs) + np.bincount(b_owner, minlength=pairs) - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Share of equal signature values, row by row."""
    return (sig_a == sig_b).mean(axis=1)


def connected_clusters(a: np.ndarray, b: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Union-find over pairs: (docs, kept member of each doc's cluster, cluster size).

    Only documents that appear in a pair are returned, sorted; the kept member of a
    cluster is its smallest reference (first in corpus order). minhash_clusters does the
    same one batch of pairs at a time.
    """
    docs = sorted_distinct(np.concatenate([a, b]))
    parent = np.arange(len(docs))
    union_pairs(parent, np.searchsorted(docs, a), np.searchsorted(docs, b))
    labels = cluster_roots(parent)
    return docs, docs[labels], np.bincount(labels, minlength=len(docs))[labels].astype(np.int64)


def union_pairs(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Join the clusters of index pairs (a[i], b[i]) in the union-find forest `parent`.

    Start with `parent = arange(n)`. A cluster's root is always its smallest index: the
    roots a batch of pairs touches are joined by scipy's connected components and all
    point to the smallest root of their component. Work and scratch memory follow the
    batch, not n; the queried paths are compressed on the way.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    root_a, root_b = _roots(parent, a), _roots(parent, b)
    parent[a], parent[b] = root_a, root_b
    differ = root_a != root_b
    if not differ.any():
        return
    root_a, root_b = root_a[differ], root_b[differ]
    ends = np.concatenate([root_a, root_b])
    roots = sorted_distinct(ends)
    inverse = np.searchsorted(roots, ends)
    m = len(roots)
    graph = coo_matrix((np.ones(len(root_a), dtype=np.int8),
                        (inverse[: len(root_a)], inverse[len(root_a):])), shape=(m, m))
    _, component = connected_components(graph, directed=False)
    # roots are sorted, so the first root of each component is its smallest index.
    order = np.argsort(component, kind="stable")
    first = order[np.flatnonzero(np.diff(component[order], prepend=-1))]
    parent[roots] = roots[first[component]]


def sorted_distinct(values: np.ndarray) -> np.ndarray:
    """np.unique by sorting. numpy 2's np.unique hashes, which is slow on references
    (`shard << 32 | row`: few distinct low bits), ~100x slower than a sort at 1M values."""
    values = np.sort(values)
    if len(values) < 2:
        return values
    return values[np.concatenate([[True], values[1:] != values[:-1]])]


def _roots(parent: np.ndarray, x: np.ndarray) -> np.ndarray:
    up = parent[x]
    while True:
        higher = parent[up]
        if (higher == up).all():
            return up
        up = higher


def cluster_roots(parent: np.ndarray) -> np.ndarray:
    """Every index's root (its cluster's smallest index), by pointer jumping."""
    while True:
        higher = parent[parent]
        if (higher == parent).all():
            return parent
        parent = higher


def text_fingerprints(texts: pa.Array, urls: pa.Array | None = None) -> np.ndarray:
    """128-bit fingerprints (uint64 pairs) of normalized texts, optionally with their URLs.

    Two texts get the same fingerprint when they have the same normalized word sequence
    (the words MinHash sees): a position-weighted sum of word hashes under two weight sets.
    """
    word_hashes, counts = words_of(normalize_texts(texts))
    n = len(counts)
    first = np.cumsum(counts) - counts
    position = np.arange(len(word_hashes), dtype=np.int64) - np.repeat(first, counts)
    weights = position_weights(int(counts.max()) if n else 0)[position]
    sums = np.zeros((n, 2), dtype=np.uint64)
    has_words = counts > 0
    with np.errstate(over="ignore"):
        for column, w in enumerate((weights, splitmix64(weights) | np.uint64(1))):
            if has_words.any():
                sums[has_words, column] = np.add.reduceat(word_hashes * w, first[has_words])
            sums[:, column] += counts.astype(np.uint64) * np.uint64(0x9FB21C651E98DF25 + column)
        if urls is not None:
            url_hash = hash_strings(urls)
            sums[:, 0] ^= splitmix64(url_hash)
            sums[:, 1] ^= splitmix64(url_hash ^ np.uint64(0xA0761D6478BD642F))
    return splitmix64(sums)


# Files the minhash stages hand to each other. Each is written under a temporary name and
# committed (fsync, rename, sha256) like any doc shard.

DEDUP_PARQUET_OPTIONS = dict(compression="zstd", use_dictionary=False, write_statistics=True)


def commit_table(stage_dir: Path, final: Path, table: pa.Table,
                 row_group_size: int | None = None) -> FileEntry:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(final)
    pq.write_table(table, tmp, row_group_size=row_group_size, **DEDUP_PARQUET_OPTIONS)
    return commit_artifact(stage_dir, tmp, final, docs=table.num_rows)


def commit_row_groups(stage_dir: Path, final: Path, schema: pa.Schema,
                      tables: Iterable[pa.Table]) -> FileEntry:
    """A .parquet file written one table (one row group) at a time, so it is never whole
    in memory; the bytes are those of `commit_table` with row groups of the tables' size."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(final)
    rows = 0
    with pq.ParquetWriter(tmp, schema, **DEDUP_PARQUET_OPTIONS) as writer:
        for table in tables:
            writer.write_table(table, row_group_size=max(table.num_rows, 1))
            rows += table.num_rows
    return commit_artifact(stage_dir, tmp, final, docs=rows)


def commit_array(stage_dir: Path, final: Path, array: np.ndarray) -> FileEntry:
    """An .npy file: memory-mappable, so a reader touches only the rows it needs."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(final)
    with open(tmp, "wb") as f:
        np.save(f, array)
    return commit_artifact(stage_dir, tmp, final, docs=len(array))


def commit_json(stage_dir: Path, final: Path, obj: Any) -> FileEntry:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(final)
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    return commit_artifact(stage_dir, tmp, final)


def files_under(stage_input: StageInput, folder: str) -> list[str]:
    return [f for f in stage_input.files if Path(f).parent.name == folder]


def run_relative(stage_dir: Path, path: str) -> str:
    """A file of this run (an input shard) relative to the run directory. Dedup metadata
    records shards so: the same bytes wherever the run directory is (a local folder, a
    URL), and `in_run` turns them back into paths."""
    root = str(stage_dir.parent).rstrip("/") + "/"
    if not path.startswith(root):
        raise ValueError(f"{path} is not in the run directory {root}")
    return path[len(root):]


def in_run(stage_dir: Path, relative: str) -> str:
    return str(stage_dir.parent / relative)


def read_shards_table(stage_input: StageInput) -> dict[str, Any]:
    """The `meta/shards.json` an upstream dedup stage committed (see minhash_buckets)."""
    paths = [f for f in files_under(stage_input, "meta") if Path(f).name == SHARDS_TABLE]
    if not paths:
        raise ValueError(f"stage '{stage_input.name}': no meta/{SHARDS_TABLE} in its manifest")
    return json.loads(storage.read_text(paths[0]))


SHARDS_TABLE = "shards.json"
