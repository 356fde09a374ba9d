"""What the coherence_* stages share: word-pair statistics and the coherence score.

The coherence of a document is the mean pointwise mutual information of its adjacent
words, in nats, under word and word-pair counts taken from the corpus itself:

    score = 1/P * sum over adjacent pairs (a, b) of
                log( (c(a,b) - D) * W^2 / (P_total * c(a) * c(b)) )

where c(a) counts word a and c(a,b) the pair "a b" in the counted sample, W and P_total are
the sample's words and pairs, and P is the document's number of pairs. D = 0.75 is
Kneser-Ney's absolute discount: a pair seen once, as any two words may be by chance, counts
a quarter. A pair seen no more than that (apart from this document) adds 0: no evidence
either way. Counts are
leave-one-out: a document that was itself counted is scored against the sample minus its
own words and pairs, so every document is scored as if it were held out.

Why it separates word salad: words drawn independently of each other (machine-made
"articles", keyword soup) have no more pairs in common with the corpus than chance, and
their mean PMI is about 0 or below; in natural text adjacent words depend on each other
("of the", "I am", "it is"), and its mean PMI is the mutual information of adjacent words,
0.5-3 nats on the corpora we measured, even for text of a kind the corpus does not hold
(docs/benchmarks.md, "Coherence"). CCNet filters by perplexity under a reference language
model for the same reason; this score needs no reference data and no model training.

Words are the normalized words MinHash sees (stages/words.py: lowercase, split on
everything that is not a letter, digit or mark) identified by a 64-bit hash, and pairs by a
64-bit hash of the two; tables are exact counts per hash (a collision of two 64-bit hashes
in a sample of millions is about 1e-7 likely), so no count is inflated by bucket sharing.

A table (`counts/<shard>.npz` of coherence_counts, `table.npz` of coherence_table) holds
four sorted arrays: `words` (uint64 hashes) with `word_counts` (uint32), `pairs` with
`pair_counts`, and `totals` = [words, pairs, documents counted]. About 12 bytes per distinct
word or pair; a sample of S words has at most S distinct pairs.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline import storage
from pipeline.artifacts import FileEntry, commit_artifact, tmp_path_for
from stages.words import groups_under, normalize_texts, splitmix64, words_of

REJECT_LOW_COHERENCE = "coherence:low_pmi"
# Characters of text turned into word arrays at once: word hashing holds about 40 bytes per
# character of its input, so a chunk costs about 40 MB whatever the documents' sizes.
CHUNK_CHARS = 1 << 20
MERGE_EVERY = 16  # chunk tables held before they are summed
TABLE_FILE = "table.npz"  # coherence_table writes it, coherence_keep reads it
DISCOUNT = 0.75
_PAIR_MIX = np.uint64(0x9E3779B97F4A7C15)
_MAX_COUNT = np.iinfo(np.uint32).max


class Words:
    """The normalized words of a batch of texts: hashes in order, and each word's text."""

    def __init__(self, texts: pa.Array):
        self.hashes, self.per_doc = words_of(normalize_texts(texts))
        self.doc_of_word = np.repeat(np.arange(len(self.per_doc)), self.per_doc)

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pair hashes, index of each pair's first word, document of each pair)."""
        if len(self.hashes) < 2:
            empty = np.empty(0, dtype=np.int64)
            return np.empty(0, dtype=np.uint64), empty, empty
        same_doc = self.doc_of_word[:-1] == self.doc_of_word[1:]
        left = np.flatnonzero(same_doc)
        with np.errstate(over="ignore"):
            keys = splitmix64(self.hashes[left] * _PAIR_MIX + self.hashes[left + 1])
        return keys, left, self.doc_of_word[left]


class Table:
    """Exact counts of words and word pairs (sorted hashes, uint32 counts), and the totals."""

    def __init__(self, words: np.ndarray, word_counts: np.ndarray, pairs: np.ndarray,
                 pair_counts: np.ndarray, totals: np.ndarray):
        self.words, self.word_counts = words, word_counts
        self.pairs, self.pair_counts = pairs, pair_counts
        self.totals = totals.astype(np.int64)

    @classmethod
    def empty(cls) -> Table:
        none = np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.uint32)
        return cls(*none, *none, np.zeros(3, dtype=np.int64))

    @classmethod
    def of_words(cls, words: Words) -> Table:
        pair_keys, _, _ = words.pairs()
        w, wc = np.unique(words.hashes, return_counts=True)
        p, pc = np.unique(pair_keys, return_counts=True)
        totals = np.array([len(words.hashes), len(pair_keys), len(words.per_doc)], np.int64)
        return cls(w, _clip(wc), p, _clip(pc), totals)

    @classmethod
    def merge(cls, tables: list[Table]) -> Table:
        """The sum of tables (counts saturate at 2^32 - 1)."""
        if not tables:
            return cls.empty()
        w, wc = _sum_counts([t.words for t in tables], [t.word_counts for t in tables])
        p, pc = _sum_counts([t.pairs for t in tables], [t.pair_counts for t in tables])
        return cls(w, wc, p, pc, np.sum([t.totals for t in tables], axis=0))

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.words, self.word_counts, self.pairs, self.pair_counts))

    def save(self, stage_dir: Path, final: Path) -> FileEntry:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_path_for(final)
        with open(tmp, "wb") as f:
            np.savez(f, words=self.words, word_counts=self.word_counts, pairs=self.pairs,
                     pair_counts=self.pair_counts, totals=self.totals)
        return commit_artifact(stage_dir, tmp, final, docs=int(self.totals[2]))

    @classmethod
    def load(cls, path: str) -> Table:
        with storage.open_input(path) as f:
            data = f.read()
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = [z[k] for k in ("words", "word_counts", "pairs", "pair_counts", "totals")]
        except (KeyError, ValueError, OSError) as exc:
            raise ValueError(f"{path}: not a coherence table: {exc}") from None
        table = cls(*arrays)
        if (len(table.words) != len(table.word_counts) or len(table.pairs) != len(table.pair_counts)
                or table.totals.shape != (3,)):
            raise ValueError(f"{path}: a coherence table whose arrays do not match")
        return table

    def scores(self, texts: list[str], counted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(each text's coherence: mean adjacent-word PMI, nats, NaN with no pair; its words).

        `counted[i]` says text i is in this table's sample: its own words and pairs are
        taken out of the counts before it is scored (leave-one-out).
        """
        coherence = np.full(len(texts), np.nan)
        n_words = np.zeros(len(texts), dtype=np.int64)
        for lo, hi in groups_under([len(t) for t in texts], CHUNK_CHARS):
            if hi - lo == 1 and len(texts[lo]) > CHUNK_CHARS:  # one long text, piece by piece
                own = _long_text_table(texts[lo]) if counted[lo] else None
                total, pairs = 0.0, 0
                for piece in _pieces(texts[lo]):
                    words = Words(pa.array([piece], pa.string()))
                    sums, n = self._pair_sums(words, counted[lo:hi], own)
                    total, pairs = total + float(sums[0]), pairs + int(n[0])
                    n_words[lo] += int(words.per_doc[0])
                coherence[lo] = total / pairs if pairs else np.nan
                continue
            words = Words(pa.array(texts[lo:hi], pa.string()))
            sums, n = self._pair_sums(words, counted[lo:hi], None)
            with np.errstate(invalid="ignore", divide="ignore"):
                coherence[lo:hi] = np.where(n > 0, sums / np.maximum(n, 1), np.nan)
            n_words[lo:hi] = words.per_doc
        return coherence, n_words

    def _pair_sums(self, words: Words, counted: np.ndarray,
                   own: Table | None) -> tuple[np.ndarray, np.ndarray]:
        """(summed PMI, pairs) of each text of `words`; `own`: the counts of the one text
        `words` is a piece of, when that text is longer than one chunk."""
        n_docs = len(words.per_doc)
        keys, left, pair_doc = words.pairs()
        if not len(keys):
            return np.zeros(n_docs), np.zeros(n_docs, dtype=np.int64)
        c_ab = _lookup(self.pairs, self.pair_counts, keys)
        c_w = _lookup(self.words, self.word_counts, words.hashes)
        if counted.any():
            if own is not None:
                own_pair = _lookup(own.pairs, own.pair_counts, keys)
                own_word = _lookup(own.words, own.word_counts, words.hashes)
            else:
                own_pair = _own_counts(keys, pair_doc)
                own_word = _own_counts(words.hashes, words.doc_of_word)
            c_ab = c_ab - np.where(counted[pair_doc], own_pair, 0)
            c_w = c_w - np.where(counted[words.doc_of_word], own_word, 0)
        c_a, c_b = c_w[left], c_w[left + 1]
        c_ab = c_ab - DISCOUNT
        seen = (c_ab > 0) & (c_a > 0) & (c_b > 0)
        pmi = np.zeros(len(keys))
        if seen.any():  # then the totals are positive
            w_total, p_total = float(self.totals[0]), float(self.totals[1])
            pmi[seen] = (np.log(c_ab[seen]) + 2 * np.log(w_total) - np.log(p_total)
                         - np.log(c_a[seen]) - np.log(c_b[seen]))
        return (np.bincount(pair_doc, weights=pmi, minlength=n_docs),
                np.bincount(pair_doc, minlength=n_docs))


def count_texts(texts: list[str], budget: int | None = None) -> tuple[Table, int]:
    """(the counts of the first texts, how many): texts in order, each counted whole, while
    fewer than `budget` words have been counted (all of them with no budget)."""
    tables: list[Table] = []
    counted_words, taken = 0, 0
    for lo, hi in groups_under([len(t) for t in texts], CHUNK_CHARS):
        if budget is not None and counted_words >= budget:
            break
        if hi - lo == 1 and len(texts[lo]) > CHUNK_CHARS:
            table, k = _long_text_table(texts[lo]), 1
        else:
            words = Words(pa.array(texts[lo:hi], pa.string()))
            k = hi - lo
            if budget is not None:
                before = counted_words + np.cumsum(words.per_doc) - words.per_doc
                k = int(np.searchsorted(before, budget, side="left"))
                if k < hi - lo:
                    words = Words(pa.array(texts[lo:lo + k], pa.string()))
            table = Table.of_words(words)
        tables.append(table)
        counted_words += int(table.totals[0])
        taken += k
        if len(tables) >= MERGE_EVERY:
            tables = [Table.merge(tables)]
    table = Table.merge(tables)
    table.totals[2] = taken
    return table, taken


def _long_text_table(text: str) -> Table:
    """The counts of one text longer than a chunk, piece by piece."""
    table = Table.merge([Table.of_words(Words(pa.array([p], pa.string()))) for p in _pieces(text)])
    table.totals[2] = 1
    return table


def _pieces(text: str) -> list[str]:
    """A text cut into pieces of at most CHUNK_CHARS characters, at a space or line break in
    the last half of each where there is one. Pairs across a cut are neither counted nor
    scored (one pair in a million words)."""
    pieces, start = [], 0
    while len(text) - start > CHUNK_CHARS:
        end = start + CHUNK_CHARS
        cut = max(text.rfind(" ", end - CHUNK_CHARS // 2, end), text.rfind("\n", end - CHUNK_CHARS // 2, end))
        end = cut if cut > start else end
        pieces.append(text[start:end])
        start = end
    pieces.append(text[start:])
    return pieces


def _clip(counts: np.ndarray) -> np.ndarray:
    return np.minimum(counts, _MAX_COUNT).astype(np.uint32)


def _sum_counts(keys: list[np.ndarray], counts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    all_keys = np.concatenate(keys)
    unique, inverse = np.unique(all_keys, return_inverse=True)
    sums = np.bincount(inverse, weights=np.concatenate(counts).astype(np.float64),
                       minlength=len(unique))
    return unique, _clip(sums.astype(np.int64))


def _lookup(keys: np.ndarray, counts: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Count of each query hash in a sorted table (0 when absent), as int64."""
    if not len(keys):
        return np.zeros(len(query), dtype=np.int64)
    at = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[at] == query, counts[at].astype(np.int64), 0)


def _own_counts(keys: np.ndarray, doc: np.ndarray) -> np.ndarray:
    """How often each key occurs in its own document (per occurrence)."""
    with np.errstate(over="ignore"):
        per_doc = splitmix64(keys ^ (doc.astype(np.uint64) * _PAIR_MIX))
    _, inverse, counts = np.unique(per_doc, return_inverse=True, return_counts=True)
    return counts[inverse.reshape(-1)].astype(np.int64)
