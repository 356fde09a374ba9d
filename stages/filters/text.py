"""Text helpers shared by the filter stages: a fast word splitter and repetition counts.

`split_words` reproduces the tokenizer datatrove's filters use (a blank spaCy English
pipeline) in plain Python, about 15x faster: text is cut at whitespace; a chunk that is a
plain word (most of them) is a token; otherwise spaCy's rules apply to the chunk: prefix
characters come off the front, suffix characters off the end (`.` only after a lower-case
letter, a digit or a closing bracket), and the middle splits only at spaCy's infixes (`...`,
a hyphen or comma between letters, `a/b`, `a=b`, `end.Next`), so `f(x`, `x=1`, `3.14` and
`foo@bar.com` stay whole as in spaCy. English contractions split as spaCy's exceptions do
(`don't` -> `do n't`, `cannot` -> `can not`, `it's` -> `it 's`) and its abbreviations keep
their period (`Mr.`, `e.g.`, `U.S.`). On 300 real documents 70% tokenize identically and
0.2% of spaCy's tokens differ; bench/filters.py and tests/stages/test_heuristic_datatrove.py
measure how often the filters' decisions agree with datatrove's. A chunk's tokens depend on
the chunk alone, so they are cached per worker (chunks up to 64 characters, at most 2**18
of them, ~50 MB): a document is then split at C speed, one dict lookup per chunk, and
spaCy's rules run only on chunks not seen before.

`WordNgrams` holds a document's word n-grams as integer ids for Gopher's repetition
statistics (the most frequent n-gram, the characters in repeated n-grams): ids of size n
come from sorting pairs (id of the first n-1 words, id of the last word) at only the
positions where both (n-1)-grams inside repeat, so no tuple or string is built per position and
each size is computed once per document for both statistics. Memory per document: a few
int64 arrays as long as its word count.

`count_sentences` reproduces spaCy's rule-based `sentencizer` on those tokens: a sentence
ends after a token made of sentence-final punctuation once a token that is not punctuation
follows. `sentences_in_lines` counts it for every line of a document at once (C4 counts per
line), vectorized over each word's part in the rule (`word_kinds`, cached per word). The
punctuation sets are datatrove's own (`datatrove.utils.text`), copied here so the filters
do not import datatrove at run time.

`fasttext_line` and `load_fasttext` are shared by the fastText stages (langid, the quality
classifier's training and filtering), so that training and scoring see text the same way.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from itertools import chain, count
from pathlib import Path

import numpy as np

# datatrove.utils.text's PUNCTUATION and TERMINAL_PUNCTUATION (the Unicode sentence
# terminals), copied so that the filters' definitions match datatrove's character for
# character without importing it.
_PUNCTUATION = "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»" + "".join(
    map(chr, (x for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b)))
)
TERMINAL_PUNCTUATION = frozenset(
    '!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964\u0965\u104a\u104b\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803\u1809\u1944\u1945\u1aa8\u1aa9\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c\u1c7e\u1c7f\u203c\u203d\u2047\u2048\u2049\u2e2e\u2e3c\u2e53\u2e54\u3002\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877\ua8ce\ua8cf\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff01\uff0e\uff1f\uff61\U00010a56\U00010a57\U00010f55\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89\U00011047\U00011048\U000110be\U000110bf\U000110c0\U000110c1\U00011141\U00011142\U00011143\U000111c5\U000111c6\U000111cd\U000111de\U000111df\U00011238\U00011239\U0001123b\U0001123c\U000112a9\U0001144b\U0001144c\U000115c2\U000115c3\U000115c9\U000115ca\U000115cb\U000115cc\U000115cd\U000115ce\U000115cf\U000115d0\U000115d1\U000115d2\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7\U00011641\U00011642\U0001173c\U0001173d\U0001173e\U00011944\U00011946\U00011a42\U00011a43\U00011a9b\U00011a9c\U00011c41\U00011c42\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016a6e\U00016a6f\U00016af5\U00016b37\U00016b38\U00016b44\U00016e98\U0001bc9f\U0001da88'
)
PUNCTUATION_SET = frozenset(_PUNCTUATION) | TERMINAL_PUNCTUATION

# spaCy's English tokenizer keeps these abbreviations whole (with their final period).
_ABBREVIATIONS = frozenset(
    f"{a}." for a in (
        "Adm Ala Apr Ariz Ark Aug Bros Calif Co Colo Conn Corp Dec Del Dr Feb Fla Ga Gen Gov Ia "
        "Id Ill Inc Ind Jan Jr Jul Jun Kan Kans Ky La Ltd Mar Mass Md Messrs Mich Minn Miss Mo "
        "Mont Mr Mrs Ms Mt Neb Nebr Nev Nov Oct Okla Ore Pa Prof Rep Rev Sen Sep Sept St Tenn "
        "Va Wash Wis co vs e.g i.e a.m p.m Ph.D E.g I.e v.s"
    ).split()
)
# spaCy's English contractions written without an apostrophe, split as it splits them
# (generated from spacy.lang.en.tokenizer_exceptions; capitalised forms follow the rule).
_CONTRACTIONS = (
    "10|am 10|pm 11|am 11|pm 12|am 12|pm 1|am 1|pm 2|am 2|pm 3|am 3|pm 4|am 4|pm 5|am 5|pm "
    "6|am 6|pm 7|am 7|pm 8|am 8|pm 9|am 9|pm ai|nt are|nt can|not ca|nt ca|nt|ve could|nt "
    "could|nt|ve could|ve dare|nt did|nt did|nt|ve does|nt does|nt|ve do|nt do|nt|ve gon|na "
    "got|ta had|nt had|nt|ve has|nt have|nt he|d he|d|ve he|ll|ve he|s how|d how|d|ve "
    "how|ll how|ll|ve how|re how|s how|ve i|d i|d|ve i|ll|ve i|m i|m|a is|nt it|d it|d|ve "
    "it|ll it|ll|ve i|ve may|nt may|nt|ve might|nt might|nt|ve might|ve must|nt must|nt|ve "
    "must|ve need|nt need|nt|ve not|ve ought|nt ought|nt|ve sha|nt sha|nt|ve she|d|ve "
    "she|ll|ve she|s should|nt should|nt|ve should|ve that|d that|d|ve that|ll that|ll|ve "
    "that|s there|d there|d|ve there|ll there|ll|ve there|re there|s there|ve these|d "
    "these|d|ve these|ll these|ll|ve these|re these|ve they|d they|d|ve they|ll they|ll|ve "
    "they|re they|ve this|d this|d|ve this|ll this|ll|ve this|s those|d those|d|ve those|ll "
    "those|ll|ve those|re those|ve was|nt we|d we|d|ve we|ll|ve were|nt we|ve what|d "
    "what|d|ve what|ll what|ll|ve what|re what|s what|ve when|d when|d|ve when|ll "
    "when|ll|ve when|re when|s when|ve where|d where|d|ve where|ll where|ll|ve where|re "
    "where|s where|ve who|d who|d|ve who|ll who|ll|ve who|s who|ve why|d why|d|ve why|ll "
    "why|ll|ve why|re why|s why|ve wo|nt wo|nt|ve would|nt would|nt|ve would|ve y|all you|d "
    "you|d|ve you|ll you|ll|ve you|re you|ve "
).split()
_SPLIT_WORDS = {
    form: pieces
    for entry in _CONTRACTIONS
    for pieces in [entry.split("|")]
    for form, pieces in (
        ("".join(pieces), pieces),
        ("".join(pieces).capitalize(), [pieces[0].capitalize(), *pieces[1:]]),
    )
}
_NT_VERBS = frozenset(
    "ai are ca could dare did do does had has have is may might must need ought sha should "
    "was were wo would".split()
)
_CLITIC_HOSTS = frozenset(
    "he how i it she that there these they this those we what when where who why you could "
    "might must should would".split()
)
_CLITICS = tuple(q + c for q in "'’" for c in ("d", "ll", "re", "ve", "m"))

# spaCy's English prefixes and suffixes (the single characters it strips from the start and
# the end of a whitespace-separated chunk; '.', '%' and '+' are suffixes only in context).
_QUOTES = "\"'`‘’“”«»‚„‹›「」『』"
_PREFIXES = frozenset("!\"#$%&'()*,:;<=>?[]_`{}§—–£€¥+（【《" + _QUOTES)
_SUFFIXES = frozenset("!\"#&'()*,:;<>?[]_`{}—–。，、；：？！）】》" + _QUOTES)
_SIMPLE_PUNCT = re.compile(r"([^\W_]+)([,;:!?)\]\"])")
_URL = re.compile(r"(?:(?:https?|ftp)://|www\.)\S+$|[\w.+-]+@[\w-]+(?:\.[\w-]+)+$", re.IGNORECASE)


def _is_url(text: str) -> bool:
    # Every URL or e-mail address _URL matches holds '/', '.' or '@': test those first.
    return ("." in text or "/" in text or "@" in text) and _URL.match(text) is not None

_PERIOD_SUFFIX_AFTER = re.compile(r"[a-zß-ÿ0-9%\-+²\"'”’)\]]$|[A-ZÀ-Þ][A-ZÀ-Þ]$")
# What spaCy splits inside a chunk: ellipses, 1-2, lower.Upper, a,b, well-known, a/b a=b
# (The leading lookahead only skips, cheaply, the positions where no alternative can start.)
_INFIXES = re.compile(
    r"(?=[.…+\-*^,~–—:<>=/])"
    r"(\.\.+|…"
    r"|(?<=[0-9])[+\-*^](?=[0-9-])"
    r"|(?<=[a-zß-ÿ'\"”“`‘´’])\.(?=[A-ZÀ-Þ])"
    r"|(?<=[^\W\d_]),(?=[^\W\d_])"
    r"|(?<=[^\W\d_])(?:---|--|——|-|–|—|~)(?=[^\W\d_])"
    r"|(?<=[^\W_])[:<>=/](?=[^\W\d_]))"
)


# Chunk -> its tokens, shared by every document a worker filters. Words repeat (Zipf), so
# after a few documents almost every chunk is found here and a document is split at C speed
# (`str.split`, one dict lookup per chunk, `chain`); only new chunks run the rules below.
# Chunks up to _CACHED_CHUNK_CHARS characters are kept, and the table is replaced by an
# empty one once it holds _CACHED_CHUNKS entries: ~50 MB per worker (measured: ~200 bytes
# an entry). Between replacements entries are only added, so threads sharing the table
# never lose one.
_CACHED_CHUNKS = 1 << 18
_CACHED_CHUNK_CHARS = 64
_chunk_tokens: dict[str, tuple[str, ...]] = {}


def split_words(text: str) -> list[str]:
    """The words and symbols of `text` (see the module docstring); no whitespace tokens."""
    return list(chain.from_iterable(split_chunks(text.split())))


def split_chunks(chunks: list[str]) -> list[tuple[str, ...]]:
    """The words of each whitespace-free chunk, through the worker's chunk cache."""
    global _chunk_tokens
    if len(_chunk_tokens) > _CACHED_CHUNKS:
        _chunk_tokens = {}
    return _cached_map(_chunk_tokens, chunks, split_chunk, _CACHED_CHUNK_CHARS)


def _cached_map(cache: dict, keys: list[str], compute, longest: int | None = None) -> list:
    """`[compute(key) for key in keys]`, looked up in `cache` at C speed; a key not there is
    computed once and added (unless it is longer than `longest` characters)."""
    values = list(map(cache.get, keys))
    if None in values:
        uncached: dict = {}  # keys too long to cache, met twice in `keys`
        i = values.index(None)
        while True:
            key = keys[i]
            value = cache.get(key)
            if value is None:
                value = uncached.get(key)
            if value is None:
                value = compute(key)
                if longest is None or len(key) <= longest:
                    cache[key] = value
                else:
                    uncached[key] = value
            values[i] = value
            try:
                i = values.index(None, i + 1)
            except ValueError:
                break
    return values


def split_chunk(chunk: str) -> tuple[str, ...]:
    """The tokens of one whitespace-free chunk."""
    if chunk.isalnum():  # most chunks: a plain word (what r"[^\W_]+" matches, faster)
        return tuple(_SPLIT_WORDS.get(chunk, (chunk,)))
    match = _SIMPLE_PUNCT.fullmatch(chunk)  # next most: a word and a comma or the like
    if match and match.group(1) not in _SPLIT_WORDS:
        return match.group(1, 2)
    if chunk[-1] == "." and chunk[:-1].isalnum():  # a word and a period: _split_chunk's rules
        if chunk in _ABBREVIATIONS or (len(chunk) == 2 and chunk[0].isalpha()) \
                or not _PERIOD_SUFFIX_AFTER.search(chunk, max(len(chunk) - 3, 0), len(chunk) - 1):
            return (chunk,)
        return (*_SPLIT_WORDS.get(chunk[:-1], (chunk[:-1],)), ".")
    out: list[str] = []
    _split_chunk(chunk, out)
    return tuple(out)


def _split_chunk(chunk: str, out: list[str]) -> None:
    """spaCy's algorithm on one chunk: strip prefixes, strip suffixes, split the middle."""
    start, end = 0, len(chunk)
    while start < end:
        char = chunk[start]
        if chunk.startswith("...", start):
            out.append("...")
            start += 3
        elif char in _PREFIXES and not (char == "+" and chunk[start + 1 : start + 2].isdigit()):
            out.append(char)
            start += 1
        else:
            break
    suffixes: list[str] = []
    while end > start:
        rest = chunk[start:end]
        char = rest[-1]
        if char.isalnum() and char not in "sS":  # no rule below cuts it (the usual end)
            break
        if rest in _ABBREVIATIONS or (len(rest) == 2 and char == "." and rest[0].isalpha()):
            break
        if char not in ".,;:!?)]'\"" and _is_url(rest):
            break
        if rest.endswith("...") and len(rest) > 3:
            cut = 3
        elif rest.endswith(("'s", "'S", "’s", "’S")) and len(rest) > 2:
            cut = 2
        elif rest.endswith("):") and len(rest) > 2:  # an emoticon spaCy keeps whole
            cut = 2
        elif char in _SUFFIXES:
            cut = 1
        elif char == "." and len(rest) > 1 and _PERIOD_SUFFIX_AFTER.search(
            rest, max(len(rest) - 3, 0), len(rest) - 1  # its matches are 1 or 2 characters
        ):
            cut = 1
        elif char in "%+" and len(rest) > 1 and rest[-2].isdigit():
            cut = 1
        else:
            break
        suffixes.append(rest[-cut:])
        end -= cut
    if end > start:
        _split_middle(chunk[start:end], out)
    out.extend(reversed(suffixes))


def _split_middle(word: str, out: list[str]) -> None:
    if word in _SPLIT_WORDS:
        out.extend(_SPLIT_WORDS[word])
        return
    if "'" in word or "’" in word:  # a contraction or a clitic
        lower = word.lower()
        if lower.endswith(("n't", "n’t")) and lower[:-3] in _NT_VERBS:
            out += [word[:-3], word[-3:]]
            return
        for clitic in _CLITICS:
            if lower.endswith(clitic) and lower[: -len(clitic)] in _CLITIC_HOSTS:
                out += [word[: -len(clitic)], word[-len(clitic):]]
                return
    if word in _ABBREVIATIONS or _is_url(word):
        out.append(word)
        return
    out.extend(filter(None, _INFIXES.split(word)))


def is_punctuation(token: str) -> bool:
    """True when every character of `token` is Unicode punctuation (spaCy's `is_punct`)."""
    return all(unicodedata.category(c).startswith("P") for c in token)


@lru_cache(maxsize=65536)
def _is_punct_cached(token: str) -> bool:
    return is_punctuation(token)


def count_sentences(words: list[str]) -> int:
    """Sentences in a token list, by spaCy's sentencizer rule (0 for no tokens)."""
    if not words:
        return 0
    sentences = 1
    seen_end = False
    for token in words:
        ends = token in TERMINAL_PUNCTUATION
        if seen_end and not ends and not _is_punct_cached(token):
            sentences += 1
            seen_end = False
        elif ends:
            seen_end = True
    return sentences


# A word's part in the sentencizer's rule (`count_sentences`): sentence-final punctuation,
# other punctuation (skipped), or a word that starts a sentence after a final one.
_FINAL, _SKIPPED, _OTHER = 1, 0, 2
_word_kinds: dict[str, int] = {}  # word -> its part, bounded like the chunk cache


def _word_kind(word: str) -> int:
    if word in TERMINAL_PUNCTUATION:
        return _FINAL
    return _SKIPPED if _is_punct_cached(word) else _OTHER


def word_kinds(words: list[str]) -> np.ndarray:
    """Each word's part in the sentencizer's rule (`_FINAL`, `_SKIPPED`, `_OTHER`), int8."""
    global _word_kinds
    if len(_word_kinds) > _CACHED_CHUNKS:
        _word_kinds = {}
    return np.fromiter(_cached_map(_word_kinds, words, _word_kind), np.int8, len(words))


def sentences_in_lines(kinds: np.ndarray, words_per_line: np.ndarray) -> int:
    """`sum(count_sentences(words of line) for line in lines)`, from every word's part
    (`word_kinds`, the lines' words in order) and how many words each line has.

    Vectorized: a line with a word starts a sentence, and so does each word that is not
    punctuation whose previous word, skipping punctuation that is not sentence-final, is
    sentence-final and on the same line.
    """
    line = np.repeat(np.arange(len(words_per_line)), words_per_line)
    counted = kinds != _SKIPPED
    kinds, line = kinds[counted], line[counted]
    starts = (kinds[1:] == _OTHER) & (kinds[:-1] == _FINAL) & (line[1:] == line[:-1])
    return int(np.count_nonzero(words_per_line)) + int(np.count_nonzero(starts))


def words_per_line(pieces: list[tuple[str, ...]], chunks_per_line: list[int],
                   n_words: int) -> np.ndarray:
    """How many words each line has, from the words of its chunks (`split_chunks`), `n_words`
    in all."""
    if n_words == len(pieces):  # one word per chunk
        return np.asarray(chunks_per_line, np.int64)
    chunks_before_line = np.zeros(len(chunks_per_line) + 1, np.int64)
    np.cumsum(chunks_per_line, out=chunks_before_line[1:])
    words_before_chunk = np.zeros(len(pieces) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, pieces), np.int64, len(pieces)), out=words_before_chunk[1:])
    return np.diff(words_before_chunk[chunks_before_line])


def duplicates(items: list[str]) -> tuple[int, int]:
    """(how many items repeat an earlier one, how many characters those repeats hold)."""
    unique = set(items)
    return len(items) - len(unique), sum(map(len, items)) - sum(map(len, unique))


class WordNgrams:
    """A document's repeated word n-grams as integer ids, for the repetition statistics.

    Each distinct word gets an id; an n-gram's id is a dense id of the pair (id of its first
    n-1 words, id of its last word), found by sorting (`_dense_ids`), so equal n-grams get
    equal ids without building a tuple or a string per position. An n-gram can occur twice
    only where its first n-1 words and its last n-1 words both occur twice, so size n sorts
    only those positions: in prose the sorts shrink fast with n. Sizes are built in order,
    once per document, and serve both statistics. Memory: a few int64 arrays of the
    document's word count.
    """

    def __init__(self, words: list[str], distinct: Iterable[str] | None = None):
        """`distinct`: the distinct words in order of first occurrence, if already known."""
        self.n_words = len(words)
        if distinct is None:
            distinct = dict.fromkeys(words)
        vocabulary = dict(zip(distinct, count()))
        self.vocabulary_size = max(len(vocabulary), 1)
        self.word_ids = np.fromiter(map(vocabulary.__getitem__, words), np.int64, self.n_words)
        word_lengths = np.fromiter(map(len, vocabulary), np.int64, len(vocabulary))
        # chars_before[i]: characters in words[:i], so words[i:j] hold chars_before[j] - [i]
        self.chars_before = np.zeros(self.n_words + 1, np.int64)
        np.cumsum(word_lengths[self.word_ids], out=self.chars_before[1:])
        counts = np.bincount(self.word_ids)
        repeats = counts[self.word_ids] > 1
        top = self._top(counts, self.word_ids, np.arange(self.n_words))
        self._repeated = {1: (np.flatnonzero(repeats), self.word_ids[repeats], top)}

    @staticmethod
    def _top(counts: np.ndarray, ids: np.ndarray, positions: np.ndarray) -> tuple[int, int]:
        """(count, first position) of the most frequent n-gram; ties go to the earliest.

        `positions` hold every occurrence of the n-grams that repeat; when none does, every
        n-gram occurs once and the first one, at position 0, is the most frequent.
        """
        top = int(counts.max()) if len(counts) else 1
        if top == 1:
            return 1, 0
        return top, int(positions[np.argmax(counts[ids] == top)])

    def repeated(self, n: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """The n-grams that occur twice or more: (their start positions, in order; their
        ids), and (count, first position) of the most frequent n-gram."""
        if n < 1:
            raise ValueError(f"n-gram size must be at least 1, not {n}")
        if n > self.n_words:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), (1, 0)
        while n not in self._repeated:  # sizes are built in order, from 1
            size = max(self._repeated) + 1
            self._repeated[size] = self._grow(*self._repeated[size - 1][:2], size)
        return self._repeated[n]

    def _grow(self, positions: np.ndarray, ids: np.ndarray, n: int):
        """`repeated(n)` from the positions and ids of the repeated (n-1)-grams."""
        if not len(positions):  # no (n-1)-gram repeats, so no n-gram does
            return positions, ids, (1, 0)
        # An n-gram repeats only where both its (n-1)-grams, at i and at i + 1, repeat: in
        # the sorted positions, i + 1 is then the next one. (i + 1 starts an (n-1)-gram, so
        # the n-gram at i fits in the document.)
        keep = np.zeros(len(positions), bool)
        np.equal(positions[1:], positions[:-1] + 1, out=keep[:-1])
        positions = positions[keep]
        if not len(positions):  # then no n-gram repeats
            return positions, ids[keep], (1, 0)
        keys = ids[keep] * self.vocabulary_size + self.word_ids[positions + n - 1]
        ids, counts = _dense_ids(keys)
        top = self._top(counts, ids, positions)
        again = counts[ids] > 1
        return positions[again], ids[again], top

    def top_chars(self, n: int) -> int:
        """Characters of the most frequent n-gram (words joined by spaces) x its count.

        Ties go to the n-gram seen first, as `Counter.most_common` does. When no n-gram
        repeats, that is the first one.
        """
        if self.n_words < n:
            return 0
        times, first = self.repeated(n)[2]
        return int(self.chars_before[first + n] - self.chars_before[first] + n - 1) * times

    def duplicated_chars(self, sizes: Iterable[int]) -> dict[int, int]:
        """For each n in `sizes`: characters in word n-grams that repeat an earlier n-gram.

        Gopher's (and datatrove's) definition: scan left to right; an n-gram seen before
        counts its characters (words without spaces) and the scan jumps past it, so no word
        counts twice. Only n-grams that occur more than once can ever count, so the scan
        visits just their positions.
        """
        return {n: self._scan(n) for n in sizes}

    def _scan(self, n: int) -> int:
        """The left-to-right scan (sequential) over the positions of repeated n-grams."""
        positions, ids, _ = self.repeated(n)
        if not len(positions):
            return 0
        spans = (self.chars_before[positions + n] - self.chars_before[positions]).tolist()
        seen: set[int] = set()
        repeated = next_index = 0
        for i, gram, span in zip(positions.tolist(), ids.tolist(), spans):
            if i < next_index:
                continue
            if gram in seen:
                repeated += span
                next_index = i + n
            else:
                seen.add(gram)
        return repeated


def _dense_ids(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids 0.. of the distinct keys (equal keys, equal ids), and how often each occurs.

    What `np.unique(keys, return_inverse=True, return_counts=True)` returns, with a third
    of its fixed cost, which dominates on the short arrays of most documents.
    """
    order = keys.argsort()
    sorted_keys = keys[order]
    starts = np.empty(len(keys), bool)
    starts[:1] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=starts[1:])
    ids = np.empty(len(keys), np.int64)
    ids[order] = np.cumsum(starts) - 1
    return ids, np.bincount(ids)


def top_ngram_chars(words: list[str], n: int) -> int:
    """`WordNgrams(words).top_chars(n)`."""
    return WordNgrams(words).top_chars(n)


def duplicated_ngram_chars(words: list[str], sizes: list[int]) -> dict[int, int]:
    """`WordNgrams(words).duplicated_chars(sizes)`."""
    return WordNgrams(words).duplicated_chars(sizes)


def fasttext_line(text: str, lowercase: bool = False) -> str:
    """A document as one fastText input line: whitespace runs (newlines too) become spaces."""
    line = " ".join(text.split())
    return line.lower() if lowercase else line


def load_fasttext(path: str | Path):
    """A fastText model from disk, without the binding's stderr notice on every load."""
    import fasttext

    fasttext.FastText.eprint = lambda *args, **kwargs: None
    return fasttext.load_model(str(path))
