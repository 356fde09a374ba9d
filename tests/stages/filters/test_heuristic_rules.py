"""Each heuristic rule on handcrafted documents on both sides of its threshold."""

from __future__ import annotations

import pytest

from pipeline.documents import Document, Rejected
from stages.filters.text import count_sentences, duplicated_ngram_chars, split_words, top_ngram_chars
from stages.filters.heuristic_filter import HeuristicFilter, HeuristicFilterParams

# 60 distinct ordinary words: passes every Gopher quality rule (avg length ~5.5, stop words).
PROSE_WORDS = (
    "the quiet river carried small boats past old stone houses and the children watched "
    "them with bright curious eyes while their parents prepared supper under tall green "
    "trees that have stood beside the water for many long years of patient growth and "
    "gentle seasons bringing rain to fields where farmers worked hard every single morning"
).split()


def prose(n_words: int = 60) -> str:
    words = (PROSE_WORDS * (n_words // len(PROSE_WORDS) + 1))[:n_words]
    return " ".join(words) + "."


def decide(rule_set: str, text: str, url: str | None = None, lang: str | None = None,
           **params) -> str | None:
    """None when kept, else the drop reason."""
    stage = HeuristicFilter(
        "h", HeuristicFilterParams(rule_sets=[rule_set], **({rule_set: params} if params else {})),
        None,
    )
    doc = Document(id="d", text=text, url=url, columns={"lang": lang} if lang else {})
    out = stage.apply(doc)
    return out.reason if isinstance(out, Rejected) else None


# --- Gopher quality ---------------------------------------------------------------------------


def test_gopher_min_and_max_words():
    assert decide("gopher_quality", prose(60)) is None
    assert decide("gopher_quality", prose(45)) == "gopher_quality:min_doc_words"
    assert decide("gopher_quality", prose(60), max_doc_words=55) == "gopher_quality:max_doc_words"


def test_gopher_average_word_length():
    short = " ".join(["a", "to", "the", "be", "of", "and", "at", "it"] * 10)
    assert decide("gopher_quality", short) == "gopher_quality:min_avg_word_length"
    long = " ".join(["internationalization", "the", "of", "uncharacteristically"] * 15)
    assert decide("gopher_quality", long) == "gopher_quality:max_avg_word_length"


def test_gopher_symbol_ratios():
    base = prose(60)  # 61 tokens with the final period
    assert decide("gopher_quality", base + " #" * 5) is None  # 5 / 66 < 0.1
    assert decide("gopher_quality", base + " #" * 8) == "gopher_quality:hash_ratio"  # 8/69
    assert decide("gopher_quality", base + " ..." * 8) == "gopher_quality:ellipsis_ratio"


def test_gopher_bullet_and_ellipsis_lines():
    lines = [" ".join(PROSE_WORDS[i:i + 6]) for i in range(0, 60, 6)]  # 10 lines
    bullets = "\n".join(f"- {line}" if i < 9 else line for i, line in enumerate(lines))
    assert decide("gopher_quality", bullets) is None  # 9/10 = 0.9, not above
    all_bullets = "\n".join(f"• {line}" for line in lines)
    assert decide("gopher_quality", all_bullets) == "gopher_quality:bullet_lines_ratio"
    trailing = "\n".join(line + ("..." if i < 4 else ".") for i, line in enumerate(lines))
    assert decide("gopher_quality", trailing) == "gopher_quality:ellipsis_lines_ratio"
    assert decide("gopher_quality", trailing, max_ellipsis_lines_ratio=0.5) is None


def test_gopher_alphabetic_words_and_stop_words():
    numbers = prose(60) + " " + " ".join(str(1000 + i) for i in range(20))  # 20 of 81 not alpha
    assert decide("gopher_quality", numbers) == "gopher_quality:alpha_words_ratio"
    assert decide("gopher_quality", numbers, min_alpha_words_ratio=0.7) is None
    # Punctuation marks are words to datatrove's count, not to the Gopher paper's.
    punctuated = " ".join(f"{w}," if i % 3 == 0 else w for i, w in enumerate(PROSE_WORDS[:60]))
    assert decide("gopher_quality", punctuated) == "gopher_quality:alpha_words_ratio"
    assert decide("gopher_quality", punctuated, alpha_words="whitespace") is None
    no_stop = " ".join(w for w in PROSE_WORDS if w not in {"the", "and", "have", "with", "to", "of"})
    assert decide("gopher_quality", (no_stop + " ") * 2, min_doc_words=10) == (
        "gopher_quality:min_stop_words"
    )
    assert decide("gopher_quality", (no_stop + " the ") * 2, min_doc_words=10, min_stop_words=1) is None


# --- Gopher repetition ------------------------------------------------------------------------


def test_repetition_duplicate_lines_and_paragraphs():
    unique = [" ".join(PROSE_WORDS[i:i + 6]) for i in range(0, 60, 6)]
    assert decide("gopher_repetition", "\n".join(unique)) is None
    assert decide("gopher_repetition", "\n\n".join(unique[:6] + unique[:3])) == (
        "gopher_repetition:dup_para_frac"  # 3 of 9 paragraphs repeat: 0.33 > 0.3
    )
    # single newlines: one paragraph, but 3 of 9 lines repeat
    assert decide("gopher_repetition", "\n".join(unique[:6] + unique[:3])) == (
        "gopher_repetition:dup_line_frac"
    )
    assert decide("gopher_repetition", "\n".join(unique[:6] + unique[:3]),
                  max_dup_line_frac=0.34, max_dup_line_char_frac=None,
                  max_top_ngram_char_frac={}, max_dup_ngram_char_frac={}) is None


def test_repetition_duplicate_line_characters():
    lines = [" ".join(PROSE_WORDS[i:i + 6]) for i in range(0, 60, 6)]
    long_line = " ".join(PROSE_WORDS[:40])
    text = "\n".join(lines + [long_line, long_line])  # one repeat, but long: char frac > 0.2
    assert decide("gopher_repetition", text, max_dup_line_frac=None) == (
        "gopher_repetition:dup_line_char_frac"
    )
    assert decide("gopher_repetition", text, max_dup_line_frac=None,
                  max_dup_line_char_frac=0.4, max_dup_ngram_char_frac={}) is None


def test_repetition_top_and_duplicated_ngrams():
    text = prose(60) + " " + "green apples " * 20
    assert decide("gopher_repetition", text) == "gopher_repetition:top_2_gram"
    assert decide("gopher_repetition", prose(60)) is None
    repeated = prose(60) + " " + " ".join(PROSE_WORDS[:20])  # 20 repeated words at the end
    assert decide("gopher_repetition", repeated, max_top_ngram_char_frac={}) == (
        "gopher_repetition:dup_5_gram"
    )


def test_ngram_helpers_match_definitions():
    words = "a b c a b c a b".split()
    assert top_ngram_chars(words, 2) == 3 * 3  # "a b" x3, 3 characters each
    # 3-grams abc bca cab, then abc again (3 characters) and the scan jumps past the end
    assert duplicated_ngram_chars(words, [3]) == {3: 3}
    assert duplicated_ngram_chars("a b a b a b".split(), [2, 3]) == {2: 4, 3: 3}  # ab ba ab+ . ab+; aba bab aba+
    assert duplicated_ngram_chars("x y z w".split(), [2]) == {2: 0}


# --- C4 ---------------------------------------------------------------------------------------


def c4_doc(n_sentences: int) -> str:
    return "\n".join(f"This is sentence number {i} in the page." for i in range(n_sentences))


def test_c4_min_sentences_and_line_cleaning():
    assert decide("c4", c4_doc(5)) is None
    assert decide("c4", c4_doc(4)) == "c4:too_few_sentences"
    stage = HeuristicFilter("h", HeuristicFilterParams(rule_sets=["c4"]), None)
    noisy = c4_doc(5) + "\nHome | About\nPlease enable JavaScript to view this page.\nOk."
    kept = stage.apply(Document(id="d", text=noisy))
    assert kept.text == c4_doc(5)
    assert kept.columns["c4_lines_removed"] == 3  # no punctuation, javascript, too few words


def test_c4_document_rules():
    assert decide("c4", c4_doc(6) + "\nLorem ipsum dolor sit amet, consectetur.") == "c4:lorem_ipsum"
    assert decide("c4", c4_doc(6) + "\nThe function body is { return 1; } here.") == "c4:curly_bracket"
    assert decide("c4", c4_doc(6), filter_curly_bracket=False) is None


def test_c4_badwords():
    assert decide("c4", c4_doc(6) + "\nThey drank a lot of beer at the pub.") is None
    assert decide("c4", c4_doc(6) + "\nThis page is full of porn and nothing more.") == "c4:badwords"
    assert decide("c4", c4_doc(6) + "\nThis page is full of porn and nothing more.",
                  badwords=False) is None
    # substrings of ordinary words are not bad words ("class" contains "ass")
    assert decide("c4", c4_doc(6) + "\nThe class assignment was passed.") is None


# --- FineWeb quality --------------------------------------------------------------------------


def test_fineweb_rules():
    good = "\n".join(f"This is a reasonably long line of text number {i}, ending well." for i in range(10))
    assert decide("fineweb_quality", good) is None
    no_punct = "\n".join(f"A long line of text without final punctuation number {i}" for i in range(10))
    assert decide("fineweb_quality", no_punct) == "fineweb_quality:line_punct_ratio"
    short = "\n".join(f"Item {i}." for i in range(10))
    assert decide("fineweb_quality", short) == "fineweb_quality:short_line_ratio"
    dup = good + "\n" + "This is a reasonably long line of text number 3, ending well."
    assert decide("fineweb_quality", dup) == "fineweb_quality:char_dup_ratio"
    assert decide("fineweb_quality", dup, max_char_dup_ratio=0.2) is None
    lists = "\n".join(f"Word{i}." for i in range(10))  # 9 newlines, 20 tokens
    assert decide("fineweb_quality", lists, max_short_line_ratio=None) == "fineweb_quality:list_ratio"


# --- URL block list ---------------------------------------------------------------------------


def test_url_blocklist():
    text = prose(60)
    assert decide("url_blocklist", text, url="https://www.example.org/news/article-1") is None
    assert decide("url_blocklist", text, url="https://shop.bad.example.com/x",
                  extra_domains=["shop.bad.example.com"]) == "url_blocklist:subdomain"
    assert decide("url_blocklist", text, url="https://blocked.co.uk/a",
                  extra_domains=["blocked.co.uk"]) == "url_blocklist:domain"
    assert decide("url_blocklist", text, url="https://example.org/free-porn-videos") == (
        "url_blocklist:banned_word"
    )
    assert decide("url_blocklist", text, url=None) is None
    assert decide("url_blocklist", text, url=None, missing_url="drop") == "url_blocklist:missing_url"


def test_url_blocklist_domain_file(tmp_path):
    listing = tmp_path / "domains.txt"
    listing.write_text("# blocked\nspam-site.com\n")
    assert decide("url_blocklist", prose(), url="http://www.spam-site.com/a",
                  domains_files=[str(listing)]) == "url_blocklist:domain"
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        decide("url_blocklist", prose(), url="http://a.example/", domains_files=[str(tmp_path / "missing.txt")])


# --- token/character ratio and stop words -----------------------------------------------------


def test_token_char_ratio():
    assert decide("token_char_ratio", prose()) is None
    blob = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo" * 20  # one 700-character token
    assert decide("token_char_ratio", blob) == "token_char_ratio:min_ratio"
    noise = ";)(!?%$ " * 30  # 7 tokens in every 8 characters
    assert decide("token_char_ratio", noise) == "token_char_ratio:max_ratio"
    assert decide("token_char_ratio", noise, max_ratio=0.9) is None


def test_stop_words_uses_language_column():
    assert decide("stop_words", prose()) is None
    keywords = " ".join(["cheap", "watches", "discount", "replica", "luxury", "sale"] * 10)
    assert decide("stop_words", keywords) == "stop_words:min_count"
    few = keywords + " the and of"  # 3 of 63 words: count passes, fraction does not
    assert decide("stop_words", few) == "stop_words:min_fraction"
    german = "Der Hund und die Katze schlafen in dem Haus, weil es draußen kalt ist und regnet."
    assert decide("stop_words", german, lang="de") is None
    assert decide("stop_words", german, lang="xx") is None  # no list: kept (default)
    assert decide("stop_words", german, lang="xx", unknown_language="drop") == (
        "stop_words:unknown_language"
    )


# --- the word splitter ------------------------------------------------------------------------


def test_split_words_follows_spacy_conventions():
    assert split_words("I don't know, it's John's well-known e-mail: foo@bar.com") == [
        "I", "do", "n't", "know", ",", "it", "'s", "John", "'s", "well", "-", "known", "e",
        "-", "mail", ":", "foo@bar.com",
    ]
    assert split_words("U.S. and e.g. Mr. Smith paid $3.14 at 12:30...") == [
        "U.S.", "and", "e.g.", "Mr.", "Smith", "paid", "$", "3.14", "at", "12:30", "...",
    ]
    assert split_words("See https://x.org/a?b=1. Done") == ["See", "https://x.org/a?b=1", ".", "Done"]
    assert count_sentences(split_words("One here. Two here! Three? Mr. Smith stays.")) == 4


def test_repetition_duplicate_paragraph_characters_and_top_3_gram():
    paragraphs = [" ".join(PROSE_WORDS[i:i + 6]) for i in range(0, 60, 6)]
    long_paragraph = " ".join(PROSE_WORDS[:45])
    text = "\n\n".join(paragraphs + [long_paragraph, long_paragraph])  # 1 of 12 repeats, long
    assert decide("gopher_repetition", text) == "gopher_repetition:dup_para_char_frac"
    assert decide("gopher_repetition", text, max_dup_para_char_frac=0.4, max_dup_line_char_frac=0.4,
                  max_top_ngram_char_frac={}, max_dup_ngram_char_frac={}) is None
    three = prose(60) + " " + "one two three " * 12  # "one two" and "two three" tie below 3
    assert decide("gopher_repetition", three, max_top_ngram_char_frac={2: 0.3, 3: 0.18}) == (
        "gopher_repetition:top_3_gram"
    )
    assert decide("gopher_repetition", three, max_top_ngram_char_frac={2: 0.3, 3: 0.3},
                  max_dup_ngram_char_frac={}) is None


def test_c4_long_words_and_policy_lines():
    stage = HeuristicFilter("h", HeuristicFilterParams(rule_sets=["c4"]), None)
    extra = ["This line hides a " + "x" * 1001 + " word.",
             "By using this site you agree to our terms of use and cookies."]
    kept = stage.apply(Document(id="d", text=c4_doc(5) + "\n" + "\n".join(extra)))
    assert kept.text == c4_doc(5) and kept.columns["c4_lines_removed"] == 2
    relaxed = HeuristicFilter("h", HeuristicFilterParams(
        rule_sets=["c4"], c4={"max_word_length": None, "filter_policy": False}), None)
    assert relaxed.apply(Document(id="d", text=c4_doc(5) + "\n" + "\n".join(extra))).columns[
        "c4_lines_removed"] == 0
