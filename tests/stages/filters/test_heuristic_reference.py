"""The fast statistics of heuristic_filter equal plain, obviously correct references.

The rule sets compute shared statistics once per document (cached chunk splitting, word
counts, integer n-gram ids sorted with numpy, only the positions that can repeat). The
references below are written the straightforward way instead: one Python loop per
definition, tuples for n-grams, datatrove's scan over every position, spaCy's rules run on
every chunk without a cache. Scores must be equal column by column (floats exactly, as the
same integers are divided) and decisions reason for reason, on the 200 real documents of
tests/data/filter_docs.jsonl.gz, on edge cases (empty, whitespace only, one word, CJK,
long lines and long words, repeated paragraphs, every kind of line break) and on generated
repetitive documents. The decisions on the fixture are also pinned as counts, recorded
from the implementation before it was made fast.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from pipeline.documents import Document, Rejected
from stages.filters import text as text_module
from stages.filters.heuristic_filter import HeuristicFilter, HeuristicFilterParams
from stages.filters.heuristic_rules import (
    FineWebQualityParams,
    GopherQualityParams,
    GopherRepetitionParams,
    stop_words_for,
)
from stages.filters.text import PUNCTUATION_SET, TERMINAL_PUNCTUATION, WordNgrams, split_words

FIXTURE = Path(__file__).parents[2] / "data" / "filter_docs.jsonl.gz"

# --- references -------------------------------------------------------------------------------


def ref_split_words(text: str) -> list[str]:
    """spaCy's rules on every chunk: no cache, no fast path."""
    out: list[str] = []
    for chunk in text.split():
        text_module._split_chunk(chunk, out)
    return out


def ref_duplicates(items: list[str]) -> tuple[int, int]:
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def ref_top_ngram_chars(words: list[str], n: int) -> int:
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0
    gram, count = Counter(grams).most_common(1)[0]
    return len(" ".join(gram)) * count


def ref_duplicated_ngram_chars(words: list[str], n: int) -> int:
    """datatrove's `find_all_duplicate`, over every position, with tuples."""
    seen: set[tuple[str, ...]] = set()
    repeated = i = 0
    while i < len(words) - n + 1:
        gram = tuple(words[i : i + n])
        if gram in seen:
            repeated += sum(len(w) for w in gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated


def is_punctuation_word(word: str) -> bool:
    return all(c in PUNCTUATION_SET for c in word)


def ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


TOP = (2, 3, 4)
DUP = (5, 6, 7, 8, 9, 10)


def ref_gopher_repetition(text: str) -> dict[str, float]:
    if not text:
        return {}
    paragraphs = re.split(r"\n{2,}", text.strip())
    lines = re.split(r"\n+", text)
    para_dups, para_chars = ref_duplicates(paragraphs)
    line_dups, line_chars = ref_duplicates(lines)
    words = ref_split_words(text)
    scores = {
        "dup_para_frac": para_dups / len(paragraphs),
        "dup_para_char_frac": para_chars / len(text),
        "dup_line_frac": line_dups / len(lines),
        "dup_line_char_frac": line_chars / len(text),
    }
    for n in TOP:
        scores[f"top_{n}_gram_char_frac"] = ref_top_ngram_chars(words, n) / len(text)
    for n in DUP:
        scores[f"dup_{n}_gram_char_frac"] = ref_duplicated_ngram_chars(words, n) / len(text)
    return {f"gopher_repetition_{k}": v for k, v in scores.items()}


def ref_gopher_quality(text: str, alpha_words: str = "tokens") -> dict[str, float]:
    words = ref_split_words(text)
    kept = [w for w in words if not is_punctuation_word(w)]
    lines = text.splitlines() or [""]
    alpha_of = text.split() if alpha_words == "whitespace" else words
    alpha = sum(any(c.isalpha() for c in w) for w in alpha_of)
    stop_words = set(GopherQualityParams().stop_words)
    scores = {
        "words": len(kept),
        "avg_word_length": sum(len(w) for w in kept) / len(kept) if kept else 0.0,
        "hash_ratio": ratio(text.count("#"), len(words)),
        "ellipsis_ratio": ratio(text.count("...") + text.count("…"), len(words)),
        "bullet_lines_ratio": sum(s.lstrip().startswith(("•", "-")) for s in lines) / len(lines),
        "ellipsis_lines_ratio": (
            sum(s.rstrip().endswith(("...", "…")) for s in lines) / len(lines)),
        "alpha_words_ratio": ratio(alpha, len(alpha_of)),
        "stop_words": len({w for w in words if w in stop_words}),
    }
    return {f"gopher_quality_{k}": v for k, v in scores.items()}


def ref_fineweb_quality(text: str) -> dict[str, float]:
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        return {}
    newlines = text.count("\n")
    scores = {
        "line_punct_ratio": sum(line[-1] in TERMINAL_PUNCTUATION for line in lines) / len(lines),
        "short_line_ratio": sum(len(line) <= 30 for line in lines) / len(lines),
        "char_dup_ratio": ref_duplicates(lines)[1] / max(len(text) - newlines, 1),
        "newline_word_ratio": ratio(newlines, len(ref_split_words(text))),
    }
    return {f"fineweb_quality_{k}": v for k, v in scores.items()}


def ref_stop_words(text: str) -> dict[str, float]:
    words = [w.lower() for w in ref_split_words(text) if not is_punctuation_word(w)]
    stop = stop_words_for("en")
    count = sum(w in stop for w in words)
    return {"stop_words_fraction": ratio(count, len(words)), "stop_words_count": count}


def ref_token_char_ratio(text: str) -> dict[str, float]:
    return {"token_char_ratio": ratio(len(ref_split_words(text)), len(text))}


def ref_reason(rule_set: str, scores: dict[str, float], text: str) -> str | None:
    """The first failing rule under the default thresholds, in the order the rules run."""
    if rule_set == "gopher_repetition":
        p = GopherRepetitionParams()
        if not text:
            return "empty"
        rules = [
            ("dup_para_frac", p.max_dup_para_frac, "dup_para_frac"),
            ("dup_para_char_frac", p.max_dup_para_char_frac, "dup_para_char_frac"),
            ("dup_line_frac", p.max_dup_line_frac, "dup_line_frac"),
            ("dup_line_char_frac", p.max_dup_line_char_frac, "dup_line_char_frac"),
            *((f"top_{n}_gram_char_frac", limit, f"top_{n}_gram")
              for n, limit in p.max_top_ngram_char_frac.items()),
            *((f"dup_{n}_gram_char_frac", limit, f"dup_{n}_gram")
              for n, limit in p.max_dup_ngram_char_frac.items()),
        ]
        for score, limit, reason in rules:
            if scores[f"gopher_repetition_{score}"] > limit:
                return reason
        return None
    if rule_set == "gopher_quality":
        p = GopherQualityParams()
        s = {k.removeprefix("gopher_quality_"): v for k, v in scores.items()}
        checks = [
            ("min_doc_words", s["words"] < p.min_doc_words),
            ("max_doc_words", s["words"] > p.max_doc_words),
            ("no_words", s["words"] == 0),
            ("min_avg_word_length", s["avg_word_length"] < p.min_avg_word_length),
            ("max_avg_word_length", s["avg_word_length"] > p.max_avg_word_length),
            ("hash_ratio", s["hash_ratio"] > p.max_symbol_word_ratio),
            ("ellipsis_ratio", s["ellipsis_ratio"] > p.max_symbol_word_ratio),
            ("bullet_lines_ratio", s["bullet_lines_ratio"] > p.max_bullet_lines_ratio),
            ("ellipsis_lines_ratio", s["ellipsis_lines_ratio"] > p.max_ellipsis_lines_ratio),
            ("alpha_words_ratio", s["alpha_words_ratio"] < p.min_alpha_words_ratio),
            ("min_stop_words", s["stop_words"] < p.min_stop_words),
        ]
        return next((reason for reason, fails in checks if fails), None)
    if rule_set == "fineweb_quality":
        p = FineWebQualityParams()
        if not scores:
            return "empty"
        s = {k.removeprefix("fineweb_quality_"): v for k, v in scores.items()}
        checks = [
            ("line_punct_ratio", s["line_punct_ratio"] < p.min_line_punct_ratio),
            ("short_line_ratio", s["short_line_ratio"] > p.max_short_line_ratio),
            ("char_dup_ratio", s["char_dup_ratio"] > p.max_char_dup_ratio),
            ("list_ratio", s["newline_word_ratio"] > p.max_newline_word_ratio),
        ]
        return next((reason for reason, fails in checks if fails), None)
    raise ValueError(rule_set)


REFERENCES = {
    "gopher_repetition": ref_gopher_repetition,
    "gopher_quality": ref_gopher_quality,
    "fineweb_quality": ref_fineweb_quality,
}

# --- documents --------------------------------------------------------------------------------

EDGE_CASES = [
    "", " ", "\n", "\n\n\n", " \t\n \n", "word", "word.", "...", "—", "# # #",
    "日本語のテキストです。これは文です。", "中文文本没有空格。" * 50,
    "x" * 5000, "a " * 3000, "one two three four five six " * 200,
    "\n".join(["the same line again"] * 50), "Para one is here.\n\nPara two.\n\n" * 30,
    "\n\n\nLeading and trailing newlines.\n\n\n\n", "a b a b a b a b a", "a b c a b c a b",
    "Mr. Smith don't cannot it's U.S. e.g. foo@bar.com http://x.org/a?b=1. 3.14 x=1 f(x",
    "- bullet\n- bullet two\n• three...\nend…\n  - indented",
    "# # # ... … \u2028 line\u2029 sep\r\nCRLF line\rCR\x0bVT\x0c\x1c\x85 end",
    "²³ ½ Ⅻ 12ab _under_ ' ’ “quoted” ‘single’ «guillemets»",
    "A " + "b" * 200 + " c " + "d" * 70 + " " + "d" * 70 + " " + "b" * 200 + ".",
    # ties: "aa b" and "c dd" both occur twice; the first seen wins though both are as long
    "aa b c dd aa b c dd x", "dd c b aa dd c b aa y",
    # a word and a period (a fast path): abbreviations, one letter, case, digits, scripts
    "Mr. A. xY. cannot. Cannot. www. слово. ABC. ab². 9. Sept. a. I. gonna. ß. AB. aB. x2.",
]


def repetitive_documents(n: int = 80) -> list[str]:
    """Random words from a small vocabulary, with repeated spans, lines and paragraphs."""
    rng = random.Random(13)
    vocabulary = "the of and a to in is was he for it with as his on be at by i".split()
    vocabulary += ["Word.", "word,", "(x)", "don't", "e.g.", "—", "...", "中文", "x" * 80]
    docs = []
    for i in range(n):
        words = [rng.choice(vocabulary) for _ in range(rng.choice([1, 4, 12, 60, 400, 2000]))]
        if len(words) > 20:
            start = rng.randrange(len(words) - 10)
            span = words[start : start + rng.randint(2, 12)]
            words[start:start] = span * rng.randint(1, 6)
        separator = rng.choice([" ", "\n", "\n\n", " . ", "\n\n\n"])
        docs.append(separator.join(words))
    return docs


@pytest.fixture(scope="module")
def fixture_docs() -> list[dict]:
    with gzip.open(FIXTURE, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def texts(fixture_docs) -> list[str]:
    return [d["text"] for d in fixture_docs] + EDGE_CASES + repetitive_documents()


def stage(rule_sets: list[str], **params) -> HeuristicFilter:
    return HeuristicFilter("h", HeuristicFilterParams(rule_sets=rule_sets, **params), None)


def apply(filter_stage: HeuristicFilter, text: str) -> tuple[str | None, dict, str]:
    out = filter_stage.apply(Document(id="d", text=text))
    doc = out.doc if isinstance(out, Rejected) else out
    return (out.reason if isinstance(out, Rejected) else None), doc.columns, doc.text


# Every threshold off, so that every score is computed; extra n-gram sizes (1, 7 as a top
# size, 12) beyond the defaults.
NO_THRESHOLDS = {
    "gopher_repetition": {
        "max_dup_para_frac": None, "max_dup_para_char_frac": None, "max_dup_line_frac": None,
        "max_dup_line_char_frac": None,
        "max_top_ngram_char_frac": {n: 99.0 for n in (1, *TOP, 7)},
        "max_dup_ngram_char_frac": {n: 99.0 for n in (*DUP, 12)},
    },
    "gopher_quality": {
        "min_doc_words": None, "max_doc_words": None, "min_avg_word_length": None,
        "max_avg_word_length": None, "max_symbol_word_ratio": None,
        "max_bullet_lines_ratio": None, "max_ellipsis_lines_ratio": None,
        "min_alpha_words_ratio": None, "min_stop_words": None,
    },
    "fineweb_quality": {
        "min_line_punct_ratio": None, "max_short_line_ratio": None,
        "max_char_dup_ratio": None, "max_newline_word_ratio": None,
    },
    "stop_words": {"min_fraction": None, "min_count": None},
    "token_char_ratio": {"min_ratio": None, "max_ratio": None},
}

def ref_count_sentences(words: list[str]) -> int:
    """spaCy's sentencizer rule, the plain loop."""
    if not words:
        return 0
    sentences, seen_end = 1, False
    for token in words:
        ends = token in TERMINAL_PUNCTUATION
        if seen_end and not ends and not text_module.is_punctuation(token):
            sentences += 1
            seen_end = False
        elif ends:
            seen_end = True
    return sentences


def ref_c4(text: str, p: dict) -> tuple[str | None, int, int, str]:
    """C4's line loop as tfds writes it, one line at a time: (failed rule or None, lines
    removed, sentences, cleaned text)."""
    kept, removed, sentences = [], 0, 0
    for line in text.splitlines():
        line = line.strip()
        words = line.split()
        if max(map(len, words), default=0) > 1000:
            removed += 1
            continue
        line = re.sub(r"\[\d*]|\[edit]|\[citation needed]", "", line)
        if p.get("filter_no_terminal_punct", True) and (
                not line.endswith((".", "?", "!", '"', "'")) or line.endswith("...")):
            removed += 1
            continue
        if p.get("min_words_per_line", 3) is not None and len(words) < p.get("min_words_per_line", 3):
            removed += 1
            continue
        lower = line.lower()
        if "lorem ipsum" in lower:
            return "lorem_ipsum", removed, sentences, text
        if "javascript" in lower:
            removed += 1
            continue
        if "{" in line:
            return "curly_bracket", removed, sentences, text
        if any(phrase in lower for phrase in ("terms of use", "privacy policy", "cookie policy",
                                              "uses cookies", "use of cookies", "use cookies")):
            removed += 1
            continue
        sentences += ref_count_sentences(ref_split_words(line))
        kept.append(line)
    if sentences < 5:
        return "too_few_sentences", removed, sentences, text
    return None, removed, sentences, "\n".join(kept).strip()


# --- tests ------------------------------------------------------------------------------------


def test_split_words_equals_spacy_rules_on_every_chunk(texts, monkeypatch):
    for text in texts:
        assert split_words(text) == ref_split_words(text)
    # A cache replaced every few documents, and a second pass that finds every chunk cached.
    monkeypatch.setattr(text_module, "_CACHED_CHUNKS", 50)
    monkeypatch.setattr(text_module, "_chunk_tokens", {})
    for _ in range(2):
        for text in texts:
            assert split_words(text) == ref_split_words(text)
    assert len(text_module._chunk_tokens) <= 50 + max(len(set(t.split())) for t in texts)


def test_all_scores_equal_the_references(texts):
    stages = {name: stage([name], **{name: params}) for name, params in NO_THRESHOLDS.items()}
    stages["whitespace"] = stage(["gopher_quality"], gopher_quality={
        **NO_THRESHOLDS["gopher_quality"], "alpha_words": "whitespace"})
    for text in texts:
        words = ref_split_words(text)
        expected = {
            "gopher_repetition": ref_gopher_repetition(text),
            "gopher_quality": ref_gopher_quality(text),
            "whitespace": ref_gopher_quality(text, "whitespace"),
            "fineweb_quality": ref_fineweb_quality(text),
            "stop_words": ref_stop_words(text),
            "token_char_ratio": ref_token_char_ratio(text),
        }
        if text:
            expected["gopher_repetition"].update({
                "gopher_repetition_top_1_gram_char_frac": ref_top_ngram_chars(words, 1) / len(text),
                "gopher_repetition_top_7_gram_char_frac": ref_top_ngram_chars(words, 7) / len(text),
                "gopher_repetition_dup_12_gram_char_frac":
                    ref_duplicated_ngram_chars(words, 12) / len(text),
            })
        no_words = not expected["gopher_quality"]["gopher_quality_words"]
        for name, filter_stage in stages.items():
            reason, columns, _ = apply(filter_stage, text)
            if name == "gopher_repetition" and not text:
                assert reason == "gopher_repetition:empty"
                assert set(columns.values()) == {0.0}
            elif name == "fineweb_quality" and not text.strip():
                assert reason == "fineweb_quality:empty"
                assert set(columns.values()) == {0.0}
            else:
                dropped = no_words and name in ("gopher_quality", "whitespace")
                assert reason == ("gopher_quality:no_words" if dropped else None), (name, text[:80])
                assert columns == expected[name], (name, text[:80])


@pytest.mark.parametrize("rule_set", list(REFERENCES))
def test_decisions_and_scores_with_default_thresholds(texts, rule_set):
    filter_stage = stage([rule_set])
    for text in texts:
        reason, columns, _ = apply(filter_stage, text)
        expected_scores = REFERENCES[rule_set](text)
        expected = ref_reason(rule_set, expected_scores, text)
        assert reason == (None if expected is None else f"{rule_set}:{expected}"), text[:80]
        # a rejected document carries the scores computed up to its failing rule
        for column, value in columns.items():
            if expected_scores:
                assert value == expected_scores[column], (column, text[:80])


# Decisions of the implementation before it was made fast (per-position tuples, Python
# loops), on the 200 fixture documents with the published thresholds.
PINNED = {
    "gopher_repetition": {None: 168, "top_2_gram": 20, "dup_5_gram": 9, "dup_line_frac": 2,
                          "top_4_gram": 1},
    "gopher_quality": {None: 89, "alpha_words_ratio": 84, "min_doc_words": 23,
                       "min_stop_words": 3, "min_avg_word_length": 1},
    "fineweb_quality": {None: 112, "char_dup_ratio": 68, "short_line_ratio": 12,
                        "line_punct_ratio": 7, "list_ratio": 1},
    "stop_words": {None: 154, "min_count": 25, "min_fraction": 21},
    "c4": {None: 155, "too_few_sentences": 35, "badwords": 9, "curly_bracket": 1},
}
PINNED_DEMO_RECIPE = {
    None: 65, "gopher_quality:alpha_words_ratio": 70, "gopher_repetition:top_2_gram": 20,
    "fineweb_quality:char_dup_ratio": 19, "gopher_repetition:dup_5_gram": 9,
    "gopher_quality:min_doc_words": 8, "gopher_quality:min_stop_words": 3,
    "gopher_repetition:dup_line_frac": 2, "gopher_repetition:top_4_gram": 1,
    "fineweb_quality:short_line_ratio": 1, "fineweb_quality:line_punct_ratio": 1,
    "gopher_quality:min_avg_word_length": 1,
}


@pytest.mark.parametrize("rule_set", list(PINNED))
def test_fixture_decisions_are_pinned(fixture_docs, rule_set):
    filter_stage = stage([rule_set])
    reasons = Counter(apply(filter_stage, d["text"])[0] for d in fixture_docs)
    expected = {(None if r is None else f"{rule_set}:{r}"): n for r, n in PINNED[rule_set].items()}
    assert reasons == expected


def test_demo_recipe_decisions_are_pinned(fixture_docs):
    filter_stage = stage(
        ["url_blocklist", "gopher_repetition", "gopher_quality", "fineweb_quality"])
    reasons = Counter(
        (r.reason if isinstance(r, Rejected) else None)
        for d in fixture_docs
        for r in [filter_stage.apply(Document(id=d["id"], text=d["text"], url=d.get("url")))]
    )
    assert reasons == PINNED_DEMO_RECIPE


def test_word_ngrams_on_small_vocabularies():
    """Many repeats, overlaps and ties: every size from 1 to 12 against the references."""
    rng = random.Random(7)
    for _ in range(300):
        vocabulary = ["a", "bb", "c", "dd", "eee"][: rng.randint(1, 5)]
        words = [rng.choice(vocabulary) for _ in range(rng.randint(0, 40))]
        ngrams = WordNgrams(words)
        for n in range(1, 13):
            assert ngrams.top_chars(n) == ref_top_ngram_chars(words, n), (words, n)
        sizes = rng.sample(range(1, 13), rng.randint(1, 5))
        assert ngrams.duplicated_chars(sizes) == {
            n: ref_duplicated_ngram_chars(words, n) for n in sizes}, (words, sizes)


def test_word_ngrams_sizes_beyond_the_document():
    ngrams = WordNgrams("a b a b a b".split())
    assert ngrams.top_chars(7) == 0
    assert ngrams.duplicated_chars([2, 3, 5000]) == {2: 4, 3: 3, 5000: 0}
    with pytest.raises(ValueError, match="at least 1"):
        ngrams.top_chars(0)


C4_SETTINGS = [  # C4's own, FineWeb's, lmforge's (and with line rules that rarely fire)
    {},
    {"filter_no_terminal_punct": False},
    {"filter_no_terminal_punct": False, "min_words_per_line": None},
]
C4_LINES = [
    "Some text [1] with a citation[edit] here. And more.", "[Enter HAMLET.]",
    "We use cookies. Fine.", "A line about javascript. Yes.", "x" * 1001, "ok.", "",
    "Terms of use apply here. Sure.", "Short one", "HAMLET.", "Why? Because... I said so!",
]


def test_c4_lines_and_sentences_equal_the_reference(texts):
    """C4 cleans lines without a loop when only short lines can go, and counts sentences
    vectorized from the words already split: same lines, counts and text as the loop."""
    rng = random.Random(5)
    mixed = ["\n".join(rng.choice(C4_LINES + texts[:40]) for _ in range(rng.randint(1, 30)))
             for _ in range(60)]
    for settings in C4_SETTINGS:
        params = {"badwords": False, **settings}
        # gopher_repetition first, as in the default recipe (C4 then reuses its word ids)
        for rule_sets in (["c4", "fineweb_quality"],
                          ["gopher_repetition", "c4", "fineweb_quality"]):
            quiet = {"gopher_repetition": NO_THRESHOLDS["gopher_repetition"],
                     "fineweb_quality": NO_THRESHOLDS["fineweb_quality"]}
            filter_stage = stage(rule_sets, c4=params, **quiet)
            for text in texts + mixed:
                if "lorem ipsum" in text.lower():
                    continue  # the reference's text on failure is the original either way
                failed, removed, sentences, cleaned = ref_c4(text, settings)
                reason, scores, out_text = apply(filter_stage, text)
                if reason == "gopher_repetition:empty":
                    continue
                counted = (scores["c4_lines_removed"], scores["c4_sentences"])
                assert counted == (removed, sentences), text
                assert reason == (f"c4:{failed}" if failed else None), text
                if failed is None:
                    assert out_text == cleaned
                    words = len(ref_split_words(cleaned))
                    assert scores["fineweb_quality_newline_word_ratio"] == (
                        cleaned.count("\n") / words if words else 0.0)
