"""Text helpers shared by the filter stages: a fast word splitter and repetition counts.

`split_words` is one compiled regular expression that reproduces the decisions of the
tokenizer datatrove's filters use (a blank spaCy English pipeline) closely enough for the
filters' thresholds: runs of letters/digits are words; English clitics are split the spaCy
way (`don't` -> `do n't`, `it's` -> `it 's`); decimals, times and thousands stay whole
(`3.14`, `12:30`, `1,000`); dotted abbreviations stay whole (`U.S.`, `e.g.`, `Mr.`); URLs
and e-mail addresses are one token; `...`, `--` and similar runs are one token; any other
symbol is a token of its own; whitespace is never a token. It runs about 20x faster than
spaCy. bench/filters.py and tests/stages/test_heuristic_datatrove.py measure how often the
filters' decisions agree with datatrove's on the same documents.

`count_sentences` reproduces spaCy's rule-based `sentencizer` on those tokens: a sentence
ends after a token made of sentence-final punctuation once a token that is not punctuation
follows. The punctuation sets are datatrove's own (`datatrove.utils.text`), copied here so
the filters do not import datatrove at run time.

`fasttext_line` and `load_fasttext` are shared by the fastText stages (langid, the quality
classifier's training and filtering), so that training and scoring see text the same way.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from functools import lru_cache
from pathlib import Path

import re

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
_ABBREVIATIONS = (
    "Adm Ala Apr Ariz Ark Aug Bros Calif Co Colo Conn Corp Dec Del Dr Feb Fla Ga Gen Gov Ia "
    "Id Ill Inc Ind Jan Jr Jul Jun Kan Kans Ky La Ltd Mar Mass Md Messrs Mich Minn Miss Mo "
    "Mont Mr Mrs Ms Mt Neb Nebr Nev Nov Oct Okla Ore Pa Prof Rep Rev Sen Sep Sept St Tenn Va "
    "Wash Wis co vs"
).split()

def _mark_class() -> str:
    """The combining marks of the BMP as a character class body (`re` has no \\p{M})."""
    ranges: list[list[int]] = []
    for code in range(0x300, 0x10000):
        if unicodedata.category(chr(code))[0] == "M":
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    return "".join(f"{chr(a)}-{chr(b)}" if a != b else chr(a) for a, b in ranges)


_ALNUM = rf"(?:[^\W_]|[{_mark_class()}])"  # a letter or digit, or a combining mark (Devanagari, ...)
_WORD = rf"{_ALNUM}+(?:_+{_ALNUM}+)*"  # underscores only inside (spaCy splits __x__)
# Clitics spaCy splits off only after these words (its English tokenizer exceptions).
_NT_VERBS = "ai|are|ca|could|dare|did|do|does|had|has|have|is|may|might|must|need|ought|sha|should|was|were|wo|would"
_PRONOUNS = "he|how|i|it|she|that|there|these|they|this|those|we|what|when|where|who|why|you|could|might|must|should|would"
_WORD_RE = re.compile(
    "|".join(
        [
            r"\b[Cc]an(?=not\b)",  # can|not
            # the common case first: a plain word followed by a space or simple punctuation
            r"[^\W\d_]+(?=\s|[,;!?)\]\"](?!-)|:\s|$)",
            r"(?:https?|ftp)://[^\s<>\"]+[^\s<>\".,;:!?)\]'’”]",  # URL, trailing punct split off
            r"www\.[^\s<>\"]+[^\s<>\".,;:!?)\]'’”]",
            r"[\w.+-]+@\w[\w-]*(?:\.\w[\w-]*)+",  # e-mail address
            r"\b(?:" + "|".join(_ABBREVIATIONS) + r")\.",
            r"(?:\b[A-Za-z]\.)+",  # U.S., e.g., Ph.D., initials (J. Smith)
            # spaCy keeps 'trust.--', 'done!--Go' and 'good--' whole (but splits 'a--b')
            rf"{_WORD}[.,:;!?]+-{{2,}}(?:{_WORD})?|{_WORD}-{{2,}}(?=\s|$)",
            rf"\b(?i:{_NT_VERBS})(?=n['’]t\b)",  # do|n't, ca|n't
            r"n['’]t\b",
            rf"\b(?i:{_PRONOUNS})(?=['’](?:[dDmM]|re|RE|ll|LL|ve|VE)\b)",  # he|'d, they|'re
            r"['’](?:[sSdDmM]|re|RE|ll|LL|ve|VE)\b",
            r"\d+(?:[.,:]\d+)+",  # 3.14, 1,000, 12:30
            rf"{_WORD}(?:\.(?![A-Z]){_WORD})+",  # file.txt, os.path (but end.Next splits)
            # a word, with what spaCy keeps inside one: call'd, UTF-8, print(x, --help
            rf"(?:(?<!\S)-+)?{_WORD}(?:(?:['’](?![sS]\b)|-(?=\d)|[(\[]){_WORD})*",
            r"\.{2,}|-{2,}|[^\w\s]|_",  # '...', '--', or one symbol
        ]
    )
)


def split_words(text: str) -> list[str]:
    """The words and symbols of `text` (see the module docstring); no whitespace tokens."""
    return _WORD_RE.findall(text)


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


def duplicates(items: list[str]) -> tuple[int, int]:
    """(how many items repeat an earlier one, how many characters those repeats hold)."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def top_ngram_chars(words: list[str], n: int) -> int:
    """Characters covered by the most frequent word n-gram (joined with spaces) x its count.

    Ties go to the n-gram seen first, as `Counter.most_common` does.
    """
    if len(words) < n:
        return 0
    counts = Counter(zip(*(words[i:] for i in range(n))))
    gram, count = counts.most_common(1)[0]
    return (sum(map(len, gram)) + n - 1) * count


def duplicated_ngram_chars(words: list[str], n: int) -> int:
    """Characters in word n-grams that repeat an earlier n-gram, never counting a word twice.

    Gopher's (and datatrove's) definition: scan left to right; an n-gram seen before counts
    its characters (words without spaces) and the scan jumps past it. Only n-grams that occur
    more than once can ever count, so the scan visits just their positions.
    """
    grams = list(zip(*(words[i:] for i in range(n))))
    counts = Counter(grams)
    if len(counts) == len(grams):
        return 0
    seen: set[tuple[str, ...]] = set()
    repeated = next_index = 0
    for i, gram in enumerate(grams):
        if i < next_index or counts[gram] < 2:
            continue
        if gram in seen:
            repeated += sum(map(len, gram))
            next_index = i + n
        else:
            seen.add(gram)
    return repeated


def fasttext_line(text: str, lowercase: bool = False) -> str:
    """A document as one fastText input line: whitespace runs (newlines too) become spaces."""
    line = " ".join(text.split())
    return line.lower() if lowercase else line


def load_fasttext(path: str | Path):
    """A fastText model from disk, without the binding's stderr notice on every load."""
    import fasttext

    fasttext.FastText.eprint = lambda *args, **kwargs: None
    return fasttext.load_model(str(path))
