"""The rule sets of `heuristic_filter`: each scores a document, then decides by thresholds.

A rule set is a small class with a name, a version, a strict `Params` model whose defaults
are the published thresholds, the score columns it adds, and `check(view)`, which stores
its scores in `view.scores` and returns the name of the first rule that fails (or None).
Every threshold can be set to null to switch its rule off. Bump a rule set's `version`
whenever its behaviour changes: the version is part of the stage's cache key.

| rule set            | source                                             | drops as                      |
|---------------------|----------------------------------------------------|-------------------------------|
| `gopher_quality`    | Rae et al. 2021 (Gopher), Table A1 / datatrove      | `gopher_quality:<rule>`       |
| `gopher_repetition` | same                                               | `gopher_repetition:<rule>`    |
| `c4`                | Raffel et al. 2020 (C4) / tfds `c4_utils`           | `c4:<rule>`                   |
| `fineweb_quality`   | Penedo et al. 2024 (FineWeb) / datatrove            | `fineweb_quality:<rule>`      |
| `url_blocklist`     | FineWeb's URL filter (datatrove word lists, shipped)| `url_blocklist:<rule>`        |
| `token_char_ratio`  | tokens per character outside a plausible band       | `token_char_ratio:<rule>`     |
| `stop_words`        | share of the document's words that are stop words   | `stop_words:<rule>`           |

Definitions follow datatrove's implementations (the reference most pipelines use), so that
the same thresholds make the same decisions; the words come from `stages.filters.text.split_words`
instead of spaCy. `c4` also cleans lines (it drops lines, as C4 does) and so changes the
text; rule sets after it see the cleaned text. Word lists live in `stages/filters/data/` (see the
README there for provenance and licenses).

Speed. What several rules or rule sets need is computed once per document, on first use,
by `TextView`: the words, their counts (per-word tests such as "punctuation only" or "has a
letter" then run once per distinct word, weighted by its count), the punctuation-only
words, the lines and the n-gram ids of `stages.filters.text.WordNgrams`, shared by the
top and the duplicated n-gram rules. Line and paragraph statistics use set sizes and
`str`/`re` calls that loop in C. C4 tests the whole text first: when no line rule but "too
few words" can fire (no citation, brace, policy phrase, ... anywhere: most pages), its lines
are cleaned by C-level maps instead of a Python loop; its sentences are counted for all lines
at once from the word ids the repetition rules already built; and when it removed nothing,
the rule sets after it keep every word statistic instead of splitting the text again. The
scores are the same integers divided the same way as in the plain definitions, so they are
equal to the last bit; tests/stages/filters/test_heuristic_reference.py checks every score
and decision against plain references.
Memory per document: the text, its word list and counts, and a few int64 arrays of its
word count: about 200 bytes per word at peak (measured: a 1 MB page of 190,000 words,
35 MB), freed when the document is done; plus the word splitter's cache, ~50 MB per worker.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from functools import cached_property, lru_cache
from importlib.resources import files
from itertools import chain, compress, filterfalse
from operator import itemgetter, methodcaller
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from pipeline.stage import Params
from stages.filters.text import (
    PUNCTUATION_SET,
    TERMINAL_PUNCTUATION,
    WordNgrams,
    duplicates,
    sentences_in_lines,
    split_chunks,
    word_kinds,
    words_per_line,
)

DATA = files("stages.filters") / "data"


def read_word_list(name: str) -> list[str]:
    """A shipped list under stages/filters/data: one entry per line, `#` lines are comments."""
    text = (DATA / name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


@lru_cache(maxsize=64)
def stop_words_for(lang: str) -> frozenset[str]:
    """The shipped stop-word list of a language (spaCy's), or an empty set."""
    try:
        return frozenset(read_word_list(f"stop_words/{lang}.txt"))
    except FileNotFoundError:
        return frozenset()


class TextView:
    """One document's text with the splits and counts rule sets share.

    Each is computed once, on first use, and reused by every rule set after it: the words,
    their counts (a `Counter`: per-word tests then run once per distinct word), the
    punctuation-only words, the lines, and the n-gram ids of the repetition rules.
    """

    def __init__(self, text: str, url: str | None = None, lang: str | None = None):
        self.text = text
        self.url = url
        self.lang = lang
        self.scores: dict[str, Any] = {}

    @cached_property
    def chunks(self) -> list[str]:
        """The whitespace-separated chunks of the text."""
        return self.text.split()

    @cached_property
    def pieces(self) -> list[tuple[str, ...]]:
        """The words of each chunk."""
        return split_chunks(self.chunks)

    @cached_property
    def words(self) -> list[str]:
        return list(chain.from_iterable(self.pieces))

    @cached_property
    def word_counts(self) -> Counter[str]:
        return Counter(self.words)

    @cached_property
    def punctuation_words(self) -> frozenset[str]:
        """The distinct words made of punctuation only (datatrove leaves them out of counts)."""
        return frozenset(filter(PUNCTUATION_SET.issuperset, self.word_counts))

    @cached_property
    def content_words(self) -> int:
        """How many words are not punctuation only."""
        return len(self.words) - sum(map(self.word_counts.__getitem__, self.punctuation_words))

    @cached_property
    def lines(self) -> list[str]:
        return self.text.splitlines()

    @cached_property
    def ngrams(self) -> WordNgrams:
        return WordNgrams(self.words, self.word_counts)

    def replace_text(self, text: str, pieces: list[tuple[str, ...]] | None = None) -> None:
        """The text changed (C4 line cleaning): later rule sets split it afresh, or take the
        words of its chunks (`pieces`) from the caller. When the chunks did not change
        (`pieces` is this view's own), every statistic of the words is kept."""
        same_words = pieces is not None and pieces is self.__dict__.get("pieces")
        self.text = text
        dropped = ["lines", "chunks"]
        if not same_words:
            dropped += ["pieces", "words", "word_counts", "punctuation_words", "content_words",
                        "ngrams"]
        for name in dropped:
            self.__dict__.pop(name, None)
        if pieces is not None:
            self.__dict__["pieces"] = pieces


class RuleSet:
    """Base of a rule set: subclasses set `name`, `version`, `Params`, `columns`, `check`."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    Params: ClassVar[type[Params]]
    columns: ClassVar[dict[str, pa.DataType]]

    def __init__(self, params: Params):
        self.params = params

    def column(self, score: str) -> str:
        return f"{self.name}_{score}"

    def check(self, view: TextView) -> str | None:
        raise NotImplementedError


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


# --- Gopher quality -------------------------------------------------------------------------

GOPHER_STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]


class GopherQualityParams(Params):
    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1  # '#' and ellipses per word
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    min_alpha_words_ratio: float | None = 0.8  # datatrove: max_non_alpha_words_ratio
    # What the ratio counts: "tokens" as datatrove (and so FineWeb) does, where each
    # punctuation mark is a word, so well-punctuated prose and verse fall under 0.8; or
    # "whitespace": whitespace-separated words, as the Gopher paper states the rule.
    alpha_words: Literal["tokens", "whitespace"] = "tokens"
    min_stop_words: int | None = 2
    stop_words: list[str] = GOPHER_STOP_WORDS


class GopherQuality(RuleSet):
    """Gopher's quality rules: length, word length, symbols, bullets, alphabetic words."""

    name = "gopher_quality"
    Params = GopherQualityParams
    columns = {
        "gopher_quality_words": pa.int64(),
        "gopher_quality_avg_word_length": pa.float64(),
        "gopher_quality_hash_ratio": pa.float64(),
        "gopher_quality_ellipsis_ratio": pa.float64(),
        "gopher_quality_bullet_lines_ratio": pa.float64(),
        "gopher_quality_ellipsis_lines_ratio": pa.float64(),
        "gopher_quality_alpha_words_ratio": pa.float64(),
        "gopher_quality_stop_words": pa.int64(),
    }

    def check(self, view: TextView) -> str | None:
        p, text, counts = self.params, view.text, view.word_counts
        n_words = len(view.words)
        # Words that are not punctuation only, and their characters, counted per distinct word.
        kept = view.content_words
        # the words of a chunk are cut from it, so all words hold what all chunks hold
        kept_chars = sum(map(len, view.chunks)) - sum(
            len(w) * counts[w] for w in view.punctuation_words
        )
        avg_len = kept_chars / kept if kept else 0.0
        lines = view.lines or [""]
        bullets = sum(map(methodcaller("startswith", ("•", "-")), map(str.lstrip, lines)))
        ellipsis_lines = sum(map(methodcaller("endswith", ("...", "…")), map(str.rstrip, lines)))
        alpha_of = Counter(view.chunks) if p.alpha_words == "whitespace" else counts
        # words with a letter: all but the few, among those not all letters, with none
        no_letter = [w for w in filterfalse(str.isalpha, alpha_of) if not any(map(str.isalpha, w))]
        alpha = alpha_of.total() - sum(map(alpha_of.__getitem__, no_letter))
        stop = len(set(p.stop_words).intersection(counts))
        s = {
            "words": kept,
            "avg_word_length": avg_len,
            "hash_ratio": _ratio(text.count("#"), n_words),
            "ellipsis_ratio": _ratio(text.count("...") + text.count("…"), n_words),
            "bullet_lines_ratio": bullets / len(lines),
            "ellipsis_lines_ratio": ellipsis_lines / len(lines),
            "alpha_words_ratio": _ratio(alpha, alpha_of.total()),
            "stop_words": stop,
        }
        view.scores.update({self.column(k): v for k, v in s.items()})
        if p.min_doc_words is not None and s["words"] < p.min_doc_words:
            return "min_doc_words"
        if p.max_doc_words is not None and s["words"] > p.max_doc_words:
            return "max_doc_words"
        if not kept:
            return "no_words"
        if p.min_avg_word_length is not None and avg_len < p.min_avg_word_length:
            return "min_avg_word_length"
        if p.max_avg_word_length is not None and avg_len > p.max_avg_word_length:
            return "max_avg_word_length"
        if p.max_symbol_word_ratio is not None:
            if s["hash_ratio"] > p.max_symbol_word_ratio:
                return "hash_ratio"
            if s["ellipsis_ratio"] > p.max_symbol_word_ratio:
                return "ellipsis_ratio"
        if p.max_bullet_lines_ratio is not None and s["bullet_lines_ratio"] > p.max_bullet_lines_ratio:
            return "bullet_lines_ratio"
        if (
            p.max_ellipsis_lines_ratio is not None
            and s["ellipsis_lines_ratio"] > p.max_ellipsis_lines_ratio
        ):
            return "ellipsis_lines_ratio"
        if p.min_alpha_words_ratio is not None and s["alpha_words_ratio"] < p.min_alpha_words_ratio:
            return "alpha_words_ratio"
        if p.min_stop_words is not None and stop < p.min_stop_words:
            return "min_stop_words"
        return None


# --- Gopher repetition ----------------------------------------------------------------------

# "\n\n+" and "\n\n*" split as r"\n{2,}" and r"\n+" do, several times faster: a pattern
# that opens with a literal lets `re` jump from one newline to the next.
_PARAGRAPH_BREAK = re.compile("\n\n+")
_LINE_BREAK = re.compile("\n\n*")


class GopherRepetitionParams(Params):
    max_dup_para_frac: float | None = 0.3
    max_dup_para_char_frac: float | None = 0.2
    max_dup_line_frac: float | None = 0.3
    max_dup_line_char_frac: float | None = 0.2
    # n -> max fraction of characters in the most frequent n-gram
    max_top_ngram_char_frac: dict[int, float] = {2: 0.2, 3: 0.18, 4: 0.16}
    # n -> max fraction of characters in repeated n-grams
    max_dup_ngram_char_frac: dict[int, float] = {
        5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10
    }


class GopherRepetition(RuleSet):
    """Gopher's repetition rules: repeated paragraphs, lines and word n-grams."""

    name = "gopher_repetition"
    Params = GopherRepetitionParams

    @property
    def columns(self) -> dict[str, pa.DataType]:  # type: ignore[override]
        names = ["dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac"]
        names += [f"top_{n}_gram_char_frac" for n in self.params.max_top_ngram_char_frac]
        names += [f"dup_{n}_gram_char_frac" for n in self.params.max_dup_ngram_char_frac]
        return {self.column(n): pa.float64() for n in names}

    def check(self, view: TextView) -> str | None:
        p, text = self.params, view.text
        if not text:
            view.scores.update({c: 0.0 for c in self.columns})
            return "empty"
        chars = len(text)
        scores = view.scores
        # Cheapest first, stopping at the first failure as datatrove does: a rejected
        # document carries the scores computed up to its failing rule.
        paragraphs = _PARAGRAPH_BREAK.split(text.strip())
        para_dups, para_dup_chars = duplicates(paragraphs)
        lines = _LINE_BREAK.split(text)
        line_dups, line_dup_chars = duplicates(lines)
        for rule, value, limit in (
            ("dup_para_frac", para_dups / len(paragraphs), p.max_dup_para_frac),
            ("dup_para_char_frac", para_dup_chars / chars, p.max_dup_para_char_frac),
            ("dup_line_frac", line_dups / len(lines), p.max_dup_line_frac),
            ("dup_line_char_frac", line_dup_chars / chars, p.max_dup_line_char_frac),
        ):
            scores[self.column(rule)] = value
            if limit is not None and value > limit:
                return rule
        ngrams = view.ngrams
        for n, limit in p.max_top_ngram_char_frac.items():
            value = scores[self.column(f"top_{n}_gram_char_frac")] = ngrams.top_chars(n) / chars
            if value > limit:
                return f"top_{n}_gram"
        repeated = ngrams.duplicated_chars(list(p.max_dup_ngram_char_frac))
        for n, limit in p.max_dup_ngram_char_frac.items():
            value = scores[self.column(f"dup_{n}_gram_char_frac")] = repeated[n] / chars
            if value > limit:
                return f"dup_{n}_gram"
        return None


# --- C4 -------------------------------------------------------------------------------------

_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_END_PUNCTUATION = (".", "?", "!", '"', "'")
_POLICY = (
    "terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
    "use cookies",
)
_POLICY_HINT = re.compile("terms of use|polic|cookie")  # every phrase of _POLICY holds one


class C4Params(Params):
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_num_sentences: int | None = 5
    min_words_per_line: int | None = 3
    max_word_length: int | None = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True
    badwords: bool = True
    badwords_keep_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    badwords_seed: int = 0
    default_language: str = "en"  # for documents without a `lang` column


class C4(RuleSet):
    """C4's line cleaning and page rules, with the LDNOOBW bad-words list C4 used.

    Bad words are looked up in the list of the document's `lang` (or `default_language`);
    a language without a shipped list (only `en` ships) is not checked for them.
    """

    name = "c4"
    Params = C4Params
    columns = {
        "c4_lines_removed": pa.int64(),
        "c4_sentences": pa.int64(),
        "c4_badwords": pa.bool_(),
    }

    def check(self, view: TextView) -> str | None:
        p = self.params
        if self._only_short_lines_can_go(view):
            kept, kept_chunks, chunks_per_line, removed = self._clean_short_lines(view)
            edited, failure = False, None
        else:
            kept, kept_chunks, chunks_per_line, removed, edited, failure = self._clean_lines(view)
        # Lines removed or changed: split the kept ones; else they are the view's own words.
        changed = removed or edited or len(kept_chunks) != len(view.chunks)
        pieces = split_chunks(kept_chunks) if changed else view.pieces
        sentences = 0
        if p.min_num_sentences is not None:
            words = list(chain.from_iterable(pieces)) if changed else view.words
            if changed or "ngrams" not in view.__dict__:
                kinds = word_kinds(words)
            else:  # the parts of the distinct words, spread by the word ids the n-grams hold
                kinds = word_kinds(list(view.word_counts))[view.ngrams.word_ids]
            sentences = sentences_in_lines(
                kinds, words_per_line(pieces, chunks_per_line, len(words)))
        view.scores[self.column("lines_removed")] = removed
        view.scores[self.column("sentences")] = sentences
        if failure:
            return failure
        if p.min_num_sentences is not None and sentences < p.min_num_sentences:
            return "too_few_sentences"
        view.replace_text("\n".join(kept).strip(), pieces)
        if p.badwords:
            found = self._has_badwords(view.text, view.lang or p.default_language)
            view.scores[self.column("badwords")] = found
            if found and not self._keep_anyway(view.text):
                return "badwords"
        return None

    def _only_short_lines_can_go(self, view: TextView) -> bool:
        """True when, by whole-text tests, no line rule but `min_words_per_line` can fire:
        the lines are then cleaned without a Python loop over them (most documents)."""
        p, text = self.params, view.text
        if p.filter_no_terminal_punct or (p.remove_citations and _CITATION.search(text)):
            return False
        if p.filter_curly_bracket and "{" in text:
            return False
        longest = max(map(len, view.chunks), default=0)
        if p.max_word_length is not None and longest > p.max_word_length:
            return False
        lower = text.lower()  # each test below holds no line break, so whole text = any line
        return not (
            (p.filter_lorem_ipsum and "lorem ipsum" in lower)
            or (p.filter_javascript and "javascript" in lower)
            or (p.filter_policy and _POLICY_HINT.search(lower))
        )

    def _clean_short_lines(self, view: TextView):
        """`_clean_lines` when only lines of too few words can go (see above)."""
        lines = list(map(str.strip, view.lines))
        per_line = list(map(len, map(str.split, lines)))
        minimum = self.params.min_words_per_line
        if minimum is None or min(per_line, default=minimum) >= minimum:
            return lines, view.chunks, per_line, 0
        keep = list(map(minimum.__le__, per_line))
        lines = list(compress(lines, keep))
        return (lines, list(chain.from_iterable(map(str.split, lines))),
                list(compress(per_line, keep)), keep.count(False))

    def _clean_lines(self, view: TextView):
        """C4's line loop: (kept lines, their chunks, chunks per kept line, lines removed,
        whether a citation was cut, the page rule that failed or None)."""
        p = self.params
        kept: list[str] = []
        kept_chunks: list[str] = []
        chunks_per_line: list[int] = []
        removed = 0
        edited = False
        for line in view.lines:
            line = line.strip()
            words = chunks = line.split()
            longest = max(map(len, words), default=0)
            if p.max_word_length is not None and longest > p.max_word_length:
                removed += 1
                continue
            if p.remove_citations and "[" in line:  # every citation holds one
                cited, line = line, _CITATION.sub("", line)
                if line != cited:
                    chunks = line.split()
                    edited = True
            if p.filter_no_terminal_punct and (
                not line.endswith(_END_PUNCTUATION) or line.endswith("...")
            ):
                removed += 1
                continue
            if p.min_words_per_line is not None and len(words) < p.min_words_per_line:
                removed += 1
                continue
            lower = line.lower()
            if p.filter_lorem_ipsum and "lorem ipsum" in lower:
                return kept, kept_chunks, chunks_per_line, removed, edited, "lorem_ipsum"
            if p.filter_javascript and "javascript" in lower:
                removed += 1
                continue
            if p.filter_curly_bracket and "{" in line:
                return kept, kept_chunks, chunks_per_line, removed, edited, "curly_bracket"
            if p.filter_policy and _POLICY_HINT.search(lower) and any(
                phrase in lower for phrase in _POLICY
            ):
                removed += 1
                continue
            kept.append(line)
            kept_chunks += chunks
            chunks_per_line.append(len(chunks))
        return kept, kept_chunks, chunks_per_line, removed, edited, None

    def _has_badwords(self, text: str, lang: str) -> bool:
        pattern = _badwords_pattern(lang)
        return pattern is not None and pattern.search(text.lower()) is not None

    def _keep_anyway(self, text: str) -> bool:
        """C4's `keep_fraction`, decided by a hash of the text so any worker decides alike."""
        if self.params.badwords_keep_fraction <= 0:
            return False
        digest = hashlib.blake2b(
            f"{self.params.badwords_seed}\0{text}".encode("utf-8", "surrogatepass"), digest_size=8
        ).digest()
        return int.from_bytes(digest, "big") / 2**64 < self.params.badwords_keep_fraction


@lru_cache(maxsize=32)
def _badwords_pattern(lang: str) -> re.Pattern | None:
    """C4's matcher: whole words for spaced languages, substrings for ja/th/zh."""
    try:
        words = read_word_list(f"badwords/{lang}.txt")
    except FileNotFoundError:
        return None
    alternatives = "|".join(re.escape(w) for w in words)
    if lang in ("ja", "th", "zh"):
        return re.compile(alternatives)
    return re.compile(rf"(?:\W|^)({alternatives})(?:\W|$)")


# --- FineWeb quality ------------------------------------------------------------------------


class FineWebQualityParams(Params):
    min_line_punct_ratio: float | None = 0.12
    line_punct_exclude_zero: bool = False
    max_short_line_ratio: float | None = 0.67
    short_line_length: int = 30
    max_char_dup_ratio: float | None = 0.01
    max_newline_word_ratio: float | None = 0.3  # datatrove: new_line_ratio


class FineWebQuality(RuleSet):
    """FineWeb's own rules: lines ending in punctuation, short lines, duplicated lines."""

    name = "fineweb_quality"
    Params = FineWebQualityParams
    columns = {
        "fineweb_quality_line_punct_ratio": pa.float64(),
        "fineweb_quality_short_line_ratio": pa.float64(),
        "fineweb_quality_char_dup_ratio": pa.float64(),
        "fineweb_quality_newline_word_ratio": pa.float64(),
    }

    def check(self, view: TextView) -> str | None:
        p, text = self.params, view.text
        lines = list(filter(str.strip, text.split("\n")))
        if not lines:
            view.scores.update({c: 0.0 for c in self.columns})
            return "empty"
        scores = view.scores
        # Lines are not empty here, and every terminal mark is one character.
        ends = map(itemgetter(-1), lines)
        punct = sum(map(TERMINAL_PUNCTUATION.__contains__, ends)) / len(lines)
        scores[self.column("line_punct_ratio")] = punct
        if (
            p.min_line_punct_ratio is not None
            and punct < p.min_line_punct_ratio
            and not (punct == 0 and p.line_punct_exclude_zero)
        ):
            return "line_punct_ratio"
        lengths = np.fromiter(map(len, lines), np.int64, len(lines))
        short = int(np.count_nonzero(lengths <= p.short_line_length)) / len(lines)
        scores[self.column("short_line_ratio")] = short
        if p.max_short_line_ratio is not None and short > p.max_short_line_ratio:
            return "short_line_ratio"
        dup = duplicates(lines)[1] / max(len(text) - text.count("\n"), 1)
        scores[self.column("char_dup_ratio")] = dup
        if p.max_char_dup_ratio is not None and dup > p.max_char_dup_ratio:
            return "char_dup_ratio"
        # Only now split words: the most expensive score, needed by the last rule alone.
        newline = _ratio(text.count("\n"), len(view.words))
        scores[self.column("newline_word_ratio")] = newline
        if p.max_newline_word_ratio is not None and newline > p.max_newline_word_ratio:
            return "list_ratio"
        return None


# --- URL block list -------------------------------------------------------------------------

_URL_SPLIT = re.compile(r"[^a-zA-Z0-9]+")


class UrlBlocklistParams(Params):
    domains_files: list[str] = []  # blocked domains, one per line (plain or .gz)
    urls_files: list[str] = []  # blocked full URLs, one per line
    extra_domains: list[str] = []
    extra_urls: list[str] = []
    banned_words: bool = True  # shipped lists (FineWeb's, from datatrove)
    banned_subwords: bool = True
    soft_banned_words: bool = True
    soft_word_threshold: int = 2
    missing_url: str = Field(default="keep", pattern="^(keep|drop)$")


class UrlBlocklist(RuleSet):
    """FineWeb's URL filter: blocked domains and URLs, banned words and sub-words in the URL."""

    name = "url_blocklist"
    Params = UrlBlocklistParams
    columns = {"url_blocklist_soft_words": pa.int64()}

    @cached_property
    def _lists(self) -> dict[str, Any]:
        p = self.params
        domains = set(p.extra_domains)
        for path in p.domains_files:
            domains.update(_read_list_file(path))
        urls = set(p.extra_urls)
        for path in p.urls_files:
            urls.update(_read_list_file(path))
        norm = lambda name: {_URL_SPLIT.sub("", w).lower() for w in read_word_list(name)}  # noqa: E731
        subwords = norm("url_blocklist/banned_subwords.txt") if p.banned_subwords else set()
        return {
            "domains": domains,
            "urls": urls,
            "banned": norm("url_blocklist/banned_words.txt") if p.banned_words else set(),
            "soft": norm("url_blocklist/soft_banned_words.txt") if p.soft_banned_words else set(),
            "subwords": re.compile("|".join(map(re.escape, sorted(subwords)))) if subwords else None,
        }

    @cached_property
    def _extract(self):
        import tldextract

        # An empty suffix_list_urls keeps tldextract on its bundled list: no network.
        return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    def check(self, view: TextView) -> str | None:
        url = view.url
        if not url:
            view.scores[self.column("soft_words")] = 0
            return "missing_url" if self.params.missing_url == "drop" else None
        lists = self._lists
        parts = self._extract(url)
        words = set(_URL_SPLIT.split(url))
        soft = len(lists["soft"].intersection(words))
        view.scores[self.column("soft_words")] = soft
        if parts.top_domain_under_public_suffix in lists["domains"]:
            return "domain"
        if parts.fqdn in lists["domains"]:
            return "subdomain"
        if url in lists["urls"]:
            return "url"
        if not lists["banned"].isdisjoint(words):
            return "banned_word"
        if soft >= self.params.soft_word_threshold:
            return "soft_banned_words"
        if lists["subwords"] is not None and lists["subwords"].search(_URL_SPLIT.sub("", url).lower()):
            return "banned_subword"
        return None


def _read_list_file(path: str) -> list[str]:
    import gzip

    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip() and not line.startswith("#")]
    except OSError as exc:
        raise FileNotFoundError(f"url_blocklist: cannot read list file {path!r}: {exc}") from None


# --- token/character ratio ------------------------------------------------------------------


class TokenCharRatioParams(Params):
    # Tokens per character; English prose has about 0.2 words (0.25 BPE tokens) per character.
    min_ratio: float | None = 0.05  # long unbroken strings: base64, hashes, minified code
    max_ratio: float | None = 0.5  # symbol soup: every other character a token
    tokenizer: str | None = None  # a tokenizer.json (HF tokenizers); default: split_words


class TokenCharRatio(RuleSet):
    """Tokens per character, outside a band: garbled text, encoded blobs, symbol noise."""

    name = "token_char_ratio"
    Params = TokenCharRatioParams
    columns = {"token_char_ratio": pa.float64()}

    def column(self, score: str) -> str:
        return self.name

    @cached_property
    def _tokenizer(self):
        from tokenizers import Tokenizer

        return Tokenizer.from_file(self.params.tokenizer)

    def check(self, view: TextView) -> str | None:
        p = self.params
        if p.tokenizer is None:
            tokens = len(view.words)
        else:
            tokens = len(self._tokenizer.encode(view.text, add_special_tokens=False).ids)
        ratio = _ratio(tokens, len(view.text))
        view.scores[self.name] = ratio
        if p.min_ratio is not None and ratio < p.min_ratio:
            return "min_ratio"
        if p.max_ratio is not None and ratio > p.max_ratio:
            return "max_ratio"
        return None


# --- stop words -----------------------------------------------------------------------------


class StopWordsParams(Params):
    min_fraction: float | None = 0.1  # of the words; English prose is around 0.4-0.5
    min_count: int | None = 2
    default_language: str = "en"  # for documents without a `lang` column
    unknown_language: str = Field(default="keep", pattern="^(keep|drop)$")  # no shipped list


class StopWords(RuleSet):
    """Too few stop words: not running text (lists, tables, keyword spam, code).

    Lists ship for 14 languages written with spaces between words (stages/filters/data/stop_words);
    Chinese, Japanese and Thai have none, since their words are not split by spaces, and
    count as `unknown_language`.
    """

    name = "stop_words"
    Params = StopWordsParams
    columns = {"stop_words_fraction": pa.float64(), "stop_words_count": pa.int64()}

    def check(self, view: TextView) -> str | None:
        p = self.params
        stop = stop_words_for(view.lang or p.default_language)
        punctuation = view.punctuation_words
        count = sum(
            n for w, n in view.word_counts.items() if w.lower() in stop and w not in punctuation
        )
        content = view.content_words
        view.scores[self.column("fraction")] = _ratio(count, content)
        view.scores[self.column("count")] = count
        if not stop:
            return "unknown_language" if p.unknown_language == "drop" else None
        if p.min_count is not None and count < p.min_count:
            return "min_count"
        if p.min_fraction is not None and _ratio(count, content) < p.min_fraction:
            return "min_fraction"
        return None


RULE_SETS: dict[str, type[RuleSet]] = {
    cls.name: cls
    for cls in (
        UrlBlocklist, GopherRepetition, GopherQuality, C4, FineWebQuality, TokenCharRatio,
        StopWords,
    )
}
