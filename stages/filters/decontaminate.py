"""`decontaminate`: drop documents that share a long word n-gram with evaluation files.

    decontam:
      kind: decontaminate
      inputs: [dedup]
      params:
        paths: [evals/mmlu/*.jsonl.gz, evals/heldout.txt]   # files, globs or fsspec URLs
        text_fields: [question, choices]                     # JSONL / Parquet fields read
        ngram: 13                                            # words, as GPT-3 and NeMo Curator

A document is dropped as `decontaminate:ngram` when at least `min_matches` of its word
n-grams (13 words by default) occur in any evaluation file. The whole document is removed,
as the issue asks and as GPT-3 did; NeMo Curator's task decontamination instead cuts the
contaminated span (with some words around it) and keeps the pieces, which saves text but
leaves the rest of a page that copied a benchmark in the corpus. Its rejected/ row carries,
in `metadata.decontaminate`: `file` (the evaluation file of the first matching n-gram, as
its path relative to the common folder of all evaluation files), `ngram` (that n-gram,
normalised) and `files` (every evaluation file with a match). Every document gets the score
column `decontaminate_matches`: how many of its n-gram positions matched, so `min_matches`
can be chosen from the output.

Normalisation, the same for documents and evaluation text: `str.lower()`, then the words are
the maximal runs of word characters (`re.findall(r"\\w+")`: Unicode letters, digits, `_`);
everything else (punctuation, symbols, whitespace) separates words and is dropped. So
"Hello, World!" and "hello world" are the same two words, and "don't" is `don t` on both
sides. There is no Unicode (NFKC) folding.

Evaluation files: `.txt` (the whole file is one text; n-grams run across its lines), JSONL
(`.jsonl`, `.json`, `.ndjson`, plain or compressed: `.gz`, `.bz2`, `.xz`, `.zst`) and
`.parquet`. Each field of `text_fields` that a record holds is a separate text (a list of
strings, such as answer choices, is one text per string); a record holding none of them, or
a line that is not JSON, is an error naming the file and line. A text shorter than `ngram`
words has no n-gram and so can match nothing. Evaluation files that give no n-gram at all
are an error, never a silent no-op (a wrong path or field would otherwise remove nothing).

The n-gram set is built from the files once per worker process (and once on the driver,
which checks it before any task; the local executor reuses that one): each word is hashed
to 64 bits (BLAKE2b), an n-gram's hash is a polynomial of its words' hashes modulo 2**64,
and the distinct hashes are kept as a sorted uint64 array, looked up with a binary search
over all of a document's n-grams at once. Built per worker rather than by a first phase
shared as a file: evaluation sets are small (Shakespeare's plays and the King James Bible,
43 files, give 1.35 M distinct 13-grams in 1.8 CPU seconds), so one more phase with its
own manifest and file would cost more than it saves, and the stage stays one unit. Two
different n-grams share a hash with probability 2**-64, so a billion document n-grams
against ten million evaluation n-grams give about 0.0005 false matches. Changing an
evaluation file (its size or modification time) or any param re-runs the stage. Speed,
measured on the demo corpus against that set: about 1,400 documents (5 MB) per second per
core.

Memory: 8 bytes per distinct evaluation n-gram plus 2 bytes for the index of its file (4
with over 65,535 files): 10 MB per million evaluation n-grams, held for as long as the
worker lives, plus the word-hash cache (at most 2**18 words, ~40 MB). Building the set
peaks higher for a moment, at about 55 bytes per n-gram occurrence (the hashes, the
permutation and sorted copy of their stable sort, the heap the words leave behind):
measured +220 MB for 4 M 13-grams. So one stage's evaluation files should hold under about
15 M n-grams to keep a worker under 1 GB; split a larger set over two stages. Evaluation
files stream: a `.txt` file in 1 MiB pieces, a JSONL line or a Parquet record batch at a
time. Per document: its words and three uint64 arrays of its word count.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from pipeline.documents import Document, Rejected
from pipeline.inputs import content_fingerprint, expand_paths, fingerprint_files
from pipeline.stage import FilterStage, Params, StageInput, Task

_WORD = re.compile(r"\w+")
# An odd 64-bit multiplier (the golden ratio's): n-gram hash = sum(word_hash * P**k) mod 2**64.
_P = np.uint64(0x9E3779B97F4A7C15)
_JSONL = (".jsonl", ".json", ".ndjson")
_COMPRESSIONS = ("", ".gz", ".bz2", ".xz", ".zst")
_TXT_PIECE = 1 << 20  # characters of a .txt file read at a time


class DecontaminateParams(Params):
    paths: list[str] = Field(min_length=1)  # evaluation/held-out files or globs: .txt, .jsonl(.gz), .parquet
    text_fields: list[str] = Field(default=["text"], min_length=1)  # JSONL/Parquet fields holding text
    ngram: int = Field(default=13, ge=1)  # words per n-gram (GPT-3, NeMo Curator: 13)
    min_matches: int = Field(default=1, ge=1)  # matching n-gram positions that drop a document


def normalized_words(text: str) -> list[str]:
    """The words both sides are compared on: lower case, runs of word characters."""
    return _WORD.findall(text.lower())


@lru_cache(maxsize=1 << 18)  # ~40 MB of the most recent distinct words per process
def _word_hash(word: str) -> int:
    digest = hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def ngram_hashes(words: list[str], n: int) -> np.ndarray:
    """The 64-bit hash of every n-gram of `words`, in order (empty if fewer than n words)."""
    m = len(words) - n + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    word_hashes = np.fromiter(map(_word_hash, words), dtype=np.uint64, count=len(words))
    hashes = word_hashes[:m].copy()
    for i in range(1, n):
        hashes *= _P  # wraps modulo 2**64, as intended
        hashes += word_hashes[i:i + m]
    return hashes


@dataclass(frozen=True)
class EvalNgrams:
    """The distinct n-gram hashes of the evaluation files, sorted, with the file of each."""

    hashes: np.ndarray  # uint64, sorted, distinct
    file_index: np.ndarray  # uint16 or uint32: index into `sources` of its first file
    sources: tuple[str, ...]

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions of `hashes` found in the set, their indices in the set)."""
        at = np.searchsorted(self.hashes, hashes)
        at[at == len(self.hashes)] = 0
        found = np.flatnonzero(self.hashes[at] == hashes)
        return found, at[found]


@lru_cache(maxsize=1)  # one evaluation set per worker: the memory bound above
def load_eval_ngrams(files: tuple[tuple[str, str], ...], fingerprint: str,
                     text_fields: tuple[str, ...], n: int) -> EvalNgrams:
    """Build the n-gram set of `files` ((url, source) pairs); `fingerprint` (their sizes and
    times) is part of the cache key so that a worker sees an edited file afresh."""
    del fingerprint
    parts: list[np.ndarray] = []
    ends = []  # where each file's hashes end in the concatenation
    total = 0
    for url, _ in files:
        pending: list[np.ndarray] = []  # per-text arrays, joined in groups: an array costs ~100 B
        for hashes in _file_ngrams(url, text_fields, n):
            pending.append(hashes)
            total += len(hashes)
            if len(pending) == 4096:
                parts.append(np.concatenate(pending))
                pending = []
        parts += pending
        ends.append(total)
    if not total:
        raise ValueError(f"no {n}-word n-gram in the evaluation files "
                         f"({', '.join(s for _, s in files)}): they hold no text of at "
                         f"least {n} words, so nothing could ever match")
    all_hashes = np.concatenate(parts)
    del parts
    # return_index gives each distinct hash's first occurrence: the first file, sorted by path.
    hashes, first = np.unique(all_hashes, return_index=True)
    del all_hashes
    dtype = np.uint16 if len(files) <= 1 << 16 else np.uint32
    file_index = np.searchsorted(np.array(ends), first, side="right").astype(dtype)
    del first
    return EvalNgrams(hashes, file_index, tuple(s for _, s in files))


def _file_ngrams(url: str, text_fields: tuple[str, ...], n: int) -> Iterator[np.ndarray]:
    name = url.lower()
    if name.endswith(".parquet"):
        yield from _parquet_ngrams(url, text_fields, n)
    elif any(name.endswith(e + c) for e in _JSONL for c in _COMPRESSIONS):
        yield from _jsonl_ngrams(url, text_fields, n)
    elif any(name.endswith(".txt" + c) for c in _COMPRESSIONS):
        yield from _txt_ngrams(url, n)
    else:
        raise ValueError(f"{url}: not an evaluation file type lmforge reads "
                         "(.txt, .jsonl/.json/.ndjson, optionally compressed, or .parquet)")


def _txt_ngrams(url: str, n: int) -> Iterator[np.ndarray]:
    carry: list[str] = []  # the last n-1 words read: n-grams run across pieces
    cut_word = ""  # a word the end of the piece before may have cut in two
    with fsspec.open(url, "rt", encoding="utf-8", compression="infer") as f:
        while True:
            piece = f.read(_TXT_PIECE)
            text = cut_word + piece
            cut = len(text)
            if piece:  # hold back a trailing run of word characters (`\w` is exactly these)
                while cut and (text[cut - 1].isalnum() or text[cut - 1] == "_"):
                    cut -= 1
                cut = cut or len(text)  # one word longer than a piece: split it
            text, cut_word = text[:cut], text[cut:]
            words = carry + normalized_words(text)
            yield ngram_hashes(words, n)
            carry = words[max(0, len(words) - (n - 1)):] if n > 1 else []
            if not piece:
                return


def _record_texts(record: Any, text_fields: tuple[str, ...], where: str) -> list[str]:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: a record is not a JSON object")
    texts = []
    for name in text_fields:
        value = record.get(name)
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            texts += [v for v in value if isinstance(v, str)]
    if not any(name in record for name in text_fields):
        raise ValueError(f"{where}: the record has none of the fields {list(text_fields)} "
                         f"(it has {sorted(record)[:10]})")
    return texts


def _jsonl_ngrams(url: str, text_fields: tuple[str, ...], n: int) -> Iterator[np.ndarray]:
    with fsspec.open(url, "rt", encoding="utf-8", compression="infer") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{url}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not JSON ({exc.msg})") from None
            for text in _record_texts(record, text_fields, where):
                yield ngram_hashes(normalized_words(text), n)


def _parquet_ngrams(url: str, text_fields: tuple[str, ...], n: int) -> Iterator[np.ndarray]:
    with fsspec.open(url, "rb") as raw:
        parquet = pq.ParquetFile(raw)
        names = set(parquet.schema_arrow.names)
        columns = [c for c in text_fields if c in names]
        if not columns:
            raise ValueError(f"{url}: none of the columns {list(text_fields)} "
                             f"(it has {sorted(names)[:10]})")
        for batch in parquet.iter_batches(batch_size=1024, columns=columns):
            for record in batch.to_pylist():
                for text in _record_texts(record, text_fields, url):
                    yield ngram_hashes(normalized_words(text), n)


class Decontaminate(FilterStage):
    kind = "decontaminate"
    version = 1
    Params = DecontaminateParams
    score_columns = {"decontaminate_matches": pa.int64()}

    def files(self) -> tuple[tuple[str, str], ...]:
        return tuple(expand_paths(self.params.paths, f"stage '{self.name}': params.paths"))

    def fingerprint(self) -> Any:
        # by content: the evaluation files are small, and a copy of them (a data folder
        # restored or synced with new times) must not re-run every arm's training after this
        return content_fingerprint(list(self.files()))

    def eval_ngrams(self) -> EvalNgrams:
        files = self.files()
        p = self.params
        try:
            return load_eval_ngrams(files, json.dumps(fingerprint_files(list(files))),
                                    tuple(p.text_fields), p.ngram)
        except ValueError as exc:
            raise ValueError(f"stage '{self.name}': {exc}") from None

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        self.eval_ngrams()  # a bad or empty evaluation set fails here, before any task
        return super().tasks(inputs)

    def apply(self, doc: Document) -> Document | Rejected:
        if getattr(self, "_ngrams", None) is None:
            self._ngrams = self.eval_ngrams()
        n = self.params.ngram
        words = normalized_words(doc.text)
        found, at = self._ngrams.lookup(ngram_hashes(words, n))
        doc.columns["decontaminate_matches"] = len(found)
        if len(found) < self.params.min_matches:
            return doc
        sources = self._ngrams.sources
        first = int(found[0])
        doc.metadata["decontaminate"] = {
            "file": sources[self._ngrams.file_index[at[0]]],
            "ngram": " ".join(words[first:first + n]),
            "files": sorted({sources[i] for i in self._ngrams.file_index[at].tolist()}),
        }
        return Rejected(doc, "decontaminate:ngram")
