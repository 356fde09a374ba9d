"""coherence_filter: word salad (words drawn independently) is dropped, natural text kept."""

from __future__ import annotations

import gzip
import json
import math
import random
import re
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import run
from stages.filters import coherence
from stages.filters.coherence import Table, Words, count_texts
from stages.filters.coherence_counts import sample_evenly

DATA = Path(__file__).resolve().parents[2] / "data"


def natural_texts() -> list[str]:
    """English verse (Hamlet in pieces of about 1,500 characters, more Shakespeare), scripture
    and technical prose (Python docs): filter_docs' English documents of 50 words or more."""
    hamlet = (DATA / "hamlet_excerpt.txt").read_text(encoding="utf-8")
    verse = [hamlet[i:i + 1500] for i in range(0, len(hamlet), 1500)]
    with gzip.open(DATA / "filter_docs.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    return verse + [d["text"] for d in docs
                    if not d["id"].startswith("tutor/") and len(d["text"].split()) >= 50]


def salad(rng: random.Random, vocabulary: Counter, n_words: int) -> str:
    """Words drawn from the corpus's own word frequencies, cut into sentences."""
    words = rng.choices(list(vocabulary), weights=list(vocabulary.values()), k=n_words)
    sentences = [" ".join(words[i:i + 12]).capitalize() + "." for i in range(0, n_words, 12)]
    return " ".join(sentences)


def corpus(seed: int = 0) -> tuple[dict[str, str], set[str], set[str]]:
    rng = random.Random(seed)
    natural = natural_texts()
    vocabulary = Counter(w for t in natural for w in re.findall(r"[a-z0-9]+", t.lower()))
    docs = {f"natural-{i}": t for i, t in enumerate(natural)}
    long_salad = {f"salad-{i}": salad(rng, vocabulary, rng.randint(120, 400)) for i in range(20)}
    short_salad = {f"short-{i}": salad(rng, vocabulary, 30) for i in range(3)}
    merged = {**docs, **long_salad, **short_salad}
    order = sorted(merged)
    rng.shuffle(order)
    return {k: merged[k] for k in order}, set(long_salad), set(short_salad)


def config(tmp_path: Path, docs: dict[str, str], **params) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in docs.items()))
    return {
        "name": "coherence",
        "run_dir": str(tmp_path / "run"),
        "stages": {
            "ingest": {"kind": "ingest", "params": {"paths": [str(path)], "id_field": "id",
                                                     "shard_size": 10}},
            "coherent": {"kind": "coherence_filter", "inputs": ["ingest"], "params": params},
        },
    }


def rows(stage_dir: Path, sub: str) -> list[dict]:
    return [row for shard in sorted((stage_dir / sub).glob("*.parquet"))
            for row in pq.read_table(shard).to_pylist()]


def test_word_salad_dropped_verse_and_prose_kept(tmp_path):
    docs, long_salad, short_salad = corpus()
    outcomes = {o.name: o.counts for o in run(config(tmp_path, docs))}
    counts = outcomes["coherent"]
    assert counts.n_in == len(docs) and counts.balanced() and not counts.errors
    assert dict(counts.dropped) == {"coherence:low_pmi": len(long_salad)}

    stage = tmp_path / "run" / "coherent"
    rejected = {r["id"]: r for r in rows(stage, "rejected")}
    assert set(rejected) == long_salad
    assert {r["reason"] for r in rejected.values()} == {"coherence:low_pmi"}
    kept = {r["id"]: r["coherence"] for r in rows(stage, "shards")}
    assert set(kept) == set(docs) - long_salad
    natural = [v for k, v in kept.items() if k.startswith("natural-")]
    # Salad scores below 0; natural text, verse, scripture and manual pages alike, above the
    # default 0.05 even in a corpus of 40,000 words (0.3 and more on the web-like crawl).
    assert max(r["coherence"] for r in rejected.values()) < 0 < 0.05 < min(natural)
    assert all(kept[k] < 0.3 for k in short_salad)  # too short to judge: scored, kept
    # Every shard was counted (4 shards < 64), every document once
    table = json.loads((tmp_path / "run" / "coherent.table" / "meta" / "counted.json").read_text())
    assert sum(table.values()) == len(docs)


def test_a_small_sample_still_separates(tmp_path):
    docs, long_salad, _ = corpus(seed=1)
    outcomes = {o.name: o.counts for o in run(config(tmp_path, docs, sample_shards=2,
                                                            sample_words=20_000))}
    assert outcomes["coherent.counts"].n_in < len(docs) / 2
    rejected = {r["id"]: r for r in rows(tmp_path / "run" / "coherent", "rejected")}
    assert long_salad <= set(rejected)
    # From a sample of 20 documents one natural document falls under the line: a list (the
    # cast of The Winter's Tale, a name per line), whose adjacent words say little of each other.
    others = [r["text"] for k, r in rejected.items() if k not in long_salad]
    assert len(others) <= 1
    assert all(len(t.split()) / len(t.splitlines()) < 4 for t in others)


def brute_force_scores(texts: list[str], counted: list[bool]) -> list[float]:
    """The module docstring's formula with Python dicts, leave-one-out included."""
    docs = [re.findall(r"[a-z0-9]+", t.lower()) for t in texts]
    words, pairs = Counter(), Counter()
    for ws, c in zip(docs, counted):
        if c:
            words.update(ws)
            pairs.update(zip(ws, ws[1:]))
    w_total, p_total = sum(words.values()), sum(pairs.values())
    scores = []
    for ws, c in zip(docs, counted):
        own_w, own_p = (Counter(ws), Counter(zip(ws, ws[1:]))) if c else (Counter(), Counter())
        pmi = []
        for a, b in zip(ws, ws[1:]):
            c_ab = pairs[a, b] - own_p[a, b]
            c_a, c_b = words[a] - own_w[a], words[b] - own_w[b]
            c_ab -= 0.75  # Kneser-Ney's absolute discount
            pmi.append(math.log(c_ab * w_total**2 / (p_total * c_a * c_b)) if c_ab > 0 else 0.0)
        scores.append(sum(pmi) / len(pmi) if pmi else math.nan)
    return scores


def test_scores_match_the_formula_with_leave_one_out():
    docs, _, _ = corpus(seed=2)
    texts = list(docs.values())[:40]
    counted = np.array([i % 3 != 0 for i in range(len(texts))])  # some held out
    table, taken = count_texts([t for t, c in zip(texts, counted) if c])
    assert taken == counted.sum() == table.totals[2]
    got, n_words = table.scores(texts, counted)
    expected = brute_force_scores(texts, counted.tolist())
    assert np.allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert n_words.tolist() == [len(re.findall(r"[a-z0-9]+", t.lower())) for t in texts]


def test_chunks_bound_memory_and_change_nothing_but_the_cut_pairs(monkeypatch):
    texts = natural_texts()
    whole, _ = count_texts(texts)
    expected, _ = whole.scores(texts, np.ones(len(texts), bool))
    monkeypatch.setattr(coherence, "CHUNK_CHARS", 3000)  # many texts per chunk, long ones cut
    long = [i for i, t in enumerate(texts) if len(t) > 3000]
    assert long and len(long) < len(texts) - 10
    chunked, _ = count_texts(texts)
    assert chunked.totals[2] == len(texts)
    # Only pairs across a cut go missing: a few per long text.
    assert 0 < whole.totals[1] - chunked.totals[1] <= sum(len(texts[i]) // 1500 for i in long)
    got, _ = chunked.scores(texts, np.ones(len(texts), bool))
    short = np.setdiff1d(np.arange(len(texts)), long)
    assert np.allclose(got[short], expected[short], atol=0.02)
    assert np.allclose(got[long], expected[long], atol=0.02)  # own counts still taken out


def test_a_20_mb_document_is_scored_in_bounded_memory():
    rng = random.Random(0)
    vocabulary = [f"w{i}" for i in range(50_000)]
    text = " ".join(rng.choices(vocabulary, k=2_500_000))  # 17 MB of salad
    table, _ = count_texts([" ".join(rng.choices(vocabulary, k=300_000))])  # other salad
    tracemalloc.start()
    try:
        scores, n_words = table.scores([text], np.array([False]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n_words[0] == 2_500_000 and scores[0] < 0.05
    assert peak < 200 << 20  # word arrays of one 1M-character chunk at a time, not of 17 MB


def test_tables_add_up_and_round_trip(tmp_path):
    texts = natural_texts()
    whole = Table.of_words(Words(pa.array(texts)))
    halves = Table.merge([count_texts(texts[:20])[0], count_texts(texts[20:])[0]])
    for a, b in [(whole.words, halves.words), (whole.word_counts, halves.word_counts),
                 (whole.pair_counts, halves.pair_counts), (whole.totals[:2], halves.totals[:2])]:
        assert np.array_equal(a, b)
    entry = whole.save(tmp_path, tmp_path / "t.npz")
    loaded = Table.load(str(tmp_path / "t.npz"))
    assert entry.docs == len(texts) and np.array_equal(loaded.pairs, whole.pairs)


def test_sample_is_spread_and_bounded():
    assert sample_evenly(5, 64) == [0, 1, 2, 3, 4]
    assert sample_evenly(100, 4) == [0, 25, 50, 75]
    assert len(sample_evenly(1000, 64)) == 64
