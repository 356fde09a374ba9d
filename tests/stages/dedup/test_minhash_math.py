"""MinHash math (stages/dedup/minhash.py) against plain-Python references."""

from __future__ import annotations

import random
import tracemalloc

import numpy as np
import pyarrow as pa
import pytest

from stages.dedup import minhash
from stages.dedup.minhash import (
    MinHasher,
    candidate_pairs,
    cluster_roots,
    connected_clusters,
    exact_jaccard,
    gather_sets,
    optimal_bands,
    shingle_sets,
    text_fingerprints,
    union_pairs,
)
from stages import words
from stages.words import hash_strings, normalize_texts, text_slices, words_of
from tests.stages.dedup.conftest import edited, true_jaccard


def test_normalization_folds_case_punctuation_and_whitespace():
    hasher = MinHasher(64, 3, seed=1)
    texts = pa.array([
        "The quick, brown fox jumps!",
        "the QUICK brown\n\tfox -- jumps",
        "Ünïcode “quoted” — 中文 text",
        "ünïcode quoted 中文 TEXT.",
        "the quick brown fox sleeps",
    ])
    sig, per_doc = hasher.signatures(texts)
    assert (sig[0] == sig[1]).all()
    assert (sig[2] == sig[3]).all()
    assert not (sig[0] == sig[4]).all()
    assert per_doc.tolist() == [3, 3, 2, 2, 3]


def test_words_never_cross_document_boundaries():
    texts = pa.array(["ab", "", "cd", "!!", "abcd", "ab cd"])
    hashes, counts = words_of(normalize_texts(texts))
    assert counts.tolist() == [1, 0, 1, 0, 1, 2]
    ab, cd, abcd, ab2, cd2 = hashes.tolist()
    assert ab == ab2 and cd == cd2 and abcd not in (ab, cd)


def test_signature_does_not_depend_on_batch_or_chunking(monkeypatch):
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(500)]
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 60))) for _ in range(30)]
    texts[5] = "one two"  # fewer words than ngram: one shingle of all of them
    hasher = MinHasher(32, 5, seed=9)
    together, _ = hasher.signatures(pa.array(texts))
    # Blocks smaller than most documents: documents span several permutation blocks.
    monkeypatch.setattr(minhash, "SHINGLE_CHUNK", 7)
    for i, text in enumerate(texts):
        alone, per_doc = hasher.signatures(pa.array([text]))
        assert (alone[0] == together[i]).all(), i
    assert per_doc.tolist() == [len(texts[-1].split()) - 4 if len(texts[-1].split()) >= 5 else 1]
    empty, per_doc = hasher.signatures(pa.array([""]))
    assert per_doc.tolist() == [0] and (empty == np.iinfo(np.uint32).max).all()


def test_estimated_jaccard_is_unbiased_against_exact():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(5000)]
    hasher = MinHasher(256, 5, seed=1)
    errors = []
    for _ in range(150):
        base = [rng.choice(vocab) for _ in range(200)]
        variant = edited(base, rng.uniform(0.0, 0.15), rng, vocab)
        a, b = " ".join(base), " ".join(variant)
        sig, _ = hasher.signatures(pa.array([a, b]))
        errors.append((sig[0] == sig[1]).mean() - true_jaccard(a, b))
    errors = np.array(errors)
    assert abs(errors.mean()) < 0.01  # unbiased
    assert errors.std() < 1.2 * np.sqrt(0.25 / 256)  # no worse than ideal MinHash


def test_optimal_bands_match_datasketch():
    from datasketch import MinHashLSH

    for threshold, num_perm in [(0.8, 128), (0.7, 256), (0.9, 64)]:
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        assert optimal_bands(threshold, num_perm) == (lsh.b, lsh.r)


def test_candidate_pairs_are_stars_on_the_smallest_document():
    band = np.array([0, 0, 0, 1, 1, 0, 1], dtype=np.uint16)
    key = np.array([7, 7, 7, 7, 7, 8, 9], dtype=np.uint64)
    doc = np.array([30, 10, 20, 30, 10, 40, 20], dtype=np.uint64)
    a, b = candidate_pairs(band, key, doc)
    # band 0 key 7: {10, 20, 30} -> (10,20), (10,30); band 1 key 7 repeats (10,30); singletons none.
    assert list(zip(a.tolist(), b.tolist())) == [(10, 20), (10, 30)]


def test_connected_clusters_follow_chains_and_keep_the_smallest():
    a = np.array([5, 7, 100, 3], dtype=np.uint64)
    b = np.array([7, 9, 200, 9], dtype=np.uint64)
    docs, kept, sizes = connected_clusters(a, b)
    assert docs.tolist() == [3, 5, 7, 9, 100, 200]
    assert kept.tolist() == [3, 3, 3, 3, 100, 100]
    assert sizes.tolist() == [4, 4, 4, 4, 2, 2]


def test_union_pairs_in_any_batches_matches_a_plain_union_find():
    rng = np.random.default_rng(0)
    n = 400
    a = rng.integers(0, n, 300)
    b = rng.integers(0, n, 300)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist()):
        rx, ry = find(x), find(y)
        parent[max(rx, ry)] = min(rx, ry)  # the root is always the smallest member
    expected = [find(x) for x in range(n)]
    assert len(set(expected)) < n - 100  # many joins, long chains among them
    for batch in (1, 7, 64, 300):
        parent = np.arange(n, dtype=np.int32)
        for lo in range(0, len(a), batch):
            union_pairs(parent, a[lo: lo + batch], b[lo: lo + batch])
        assert cluster_roots(parent).tolist() == expected, batch


def test_exact_jaccard_of_gathered_sets_matches_python_sets():
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(5, 40))) for _ in range(12)]
    texts[3] = texts[2]
    hasher = MinHasher(16, 5, seed=2)
    values, offsets = shingle_sets(*hasher.shingles(pa.array(texts)))
    pairs = [(0, 1), (2, 3), (4, 9), (11, 0)]
    rows_a = np.array([p[0] for p in pairs])
    rows_b = np.array([p[1] for p in pairs])
    a_values, a_sizes = gather_sets(values, offsets, rows_a)
    b_values, b_sizes = gather_sets(values, offsets, rows_b)
    got = exact_jaccard(np.repeat(np.arange(4), a_sizes), a_values,
                        np.repeat(np.arange(4), b_sizes), b_values, 4)
    expected = [true_jaccard(texts[i], texts[j]) for i, j in pairs]
    assert got == pytest.approx(expected)
    assert got[1] == 1.0


def test_text_fingerprints_equal_exactly_for_equal_normalized_text():
    texts = pa.array(["Hello, World!", "hello world", "hello  world  again", "world hello", "", "..."])
    fp = text_fingerprints(texts)
    assert (fp[0] == fp[1]).all()
    assert (fp[4] == fp[5]).all()  # no words at all
    distinct = {tuple(row) for row in fp[[0, 2, 3, 4]].tolist()}
    assert len(distinct) == 4
    with_url = text_fingerprints(texts.slice(0, 2), pa.array(["http://a", "http://b"]))
    assert not (with_url[0] == with_url[1]).all()


def test_word_hashes_do_not_depend_on_the_block_they_are_hashed_in(monkeypatch):
    rng = random.Random(3)
    texts = pa.array([" ".join("".join(rng.choice("abcxyz09é") for _ in range(rng.randint(1, 30)))
                               for _ in range(rng.randint(0, 60))) for _ in range(100)]
                     + ["x" * 5000, "", None])
    expected = words_of(normalize_texts(texts)), hash_strings(texts)
    monkeypatch.setattr(words, "SPAN_BLOCK", 7)  # words cut across blocks everywhere
    got = words_of(normalize_texts(texts)), hash_strings(texts)
    assert np.array_equal(got[0][0], expected[0][0]) and np.array_equal(got[0][1], expected[0][1])
    assert np.array_equal(got[1], expected[1])


def test_text_slices_bound_bytes_and_keep_order():
    texts = pa.array(["a" * 30, "b" * 30, "c" * 100, "d" * 10, None, "e" * 10])
    slices = list(text_slices(texts, max_bytes=64))
    assert [s.to_pylist() for s in slices] == [
        ["a" * 30, "b" * 30], ["c" * 100], ["d" * 10, None, "e" * 10]]
    assert [len(s) for s in text_slices(pa.array([], pa.string()))] == [0]


def test_signatures_of_a_32_mb_batch_stay_bounded():
    rng = random.Random(0)
    vocabulary = [f"word{i}" for i in range(20_000)]
    texts = pa.array([" ".join(rng.choices(vocabulary, k=4000)) for _ in range(800)])  # 30 MB
    hasher = MinHasher(128, 5, 0)
    tracemalloc.start()
    try:
        for piece in text_slices(texts):
            hasher.signatures(piece)
            text_fingerprints(piece)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 250 << 20  # 1.38 GB when the whole batch was hashed at once
