"""Heuristic filter speed and agreement: our rule sets vs datatrove's filter classes.

    python bench/filters.py [--docs FILE.parquet|FILE.jsonl[.gz]] [--limit N]

For each rule set (Gopher quality, Gopher repetition, C4 quality + bad words, FineWeb
quality) both implementations run over the same extracted documents in the same process,
one core each, and the table shows documents/s per core, the speed-up and the fraction of
identical keep/drop decisions. datatrove's filters use their default word tokenizer (a blank
spaCy English pipeline); ours use `stages.filters.text.split_words`.

Without `--docs` the corpus is built from real text that installs offline: the CPython 3.11
HTML documentation (Debian `python3.11-doc`, extracted with resiliparse), Shakespeare's
plays split into scenes, the King James Bible by chapter and the vim tutorial in 16
languages from ../shared/data.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/filters.py` puts bench/ first on sys.path, where bench/tokenize.py would
# shadow the standard library's tokenize module (which datatrove's imports need).
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
PYDOC = Path("/usr/share/doc/python3.11/html")


def build_corpus() -> list[dict]:
    """Real documents of several kinds (prose, verse, code-heavy docs, other languages)."""
    docs: list[dict] = []
    if PYDOC.exists():
        from resiliparse.extract.html2text import extract_plain_text

        for path in sorted(PYDOC.rglob("*.html")):
            html = path.read_text(encoding="utf-8", errors="replace")
            text = extract_plain_text(html, main_content=True)
            rel = path.relative_to(PYDOC).as_posix()
            docs.append({"id": f"pydoc/{rel}", "text": text,
                         "url": f"https://docs.python.org/3.11/{rel}"})
    for path in sorted((SHARED / "text" / "shakespeare").glob("*_gut.txt")):
        text = path.read_text(encoding="utf-8", errors="replace")
        for i, scene in enumerate(re.split(r"\n(?=(?:ACT|SCENE) [IVXL]+\.?)", text)):
            if scene.strip():
                docs.append({"id": f"shakespeare/{path.stem}/{i}", "text": scene.strip(),
                             "url": None})
    kjv = SHARED / "text" / "kjv.jsonl"
    if kjv.exists():
        chapters: dict[str, list[str]] = {}
        for line in kjv.read_text().splitlines():
            verse = json.loads(line)
            key = f"{verse.get('book')}/{verse.get('chapter')}"
            chapters.setdefault(key, []).append(str(verse.get("text", "")))
        for key, verses in chapters.items():
            docs.append({"id": f"kjv/{key}", "text": "\n".join(verses), "url": None})
    for path in sorted((SHARED / "multilingual").glob("tutor.*")):
        if path.suffix in (".txt",) and ("utf-8" in path.name or path.name == "tutor.en.txt"):
            text = path.read_text(encoding="utf-8")
            for i, lesson in enumerate(re.split(r"\n~{5,}\n", text)):
                docs.append({"id": f"tutor/{path.name}/{i}", "text": lesson, "url": None})
    return [d for d in docs if d["text"].strip()]


# Rule sets datatrove has no class for (its URLFilter needs its 120 MB domain list).
OURS_ONLY = ["url_blocklist", "token_char_ratio", "stop_words"]


def load_docs(path: str | None, limit: int | None) -> list[dict]:
    if path is None:
        docs = build_corpus()
    elif path.endswith(".parquet"):
        import pyarrow.parquet as pq

        docs = pq.read_table(path, columns=["id", "text", "url"]).to_pylist()
    else:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            docs = [json.loads(line) for line in f]
    return docs[:limit] if limit else docs


def datatrove_filters() -> dict[str, list]:
    """datatrove's classes for each of our rule sets (published defaults on both sides)."""
    from datatrove.pipeline.filters import (
        C4BadWordsFilter,
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    return {
        "gopher_quality": [GopherQualityFilter()],
        "gopher_repetition": [GopherRepetitionFilter()],
        "c4": [C4QualityFilter(), _offline_badwords(C4BadWordsFilter())],
        "fineweb_quality": [FineWebQualityFilter()],
    }


def _offline_badwords(badwords_filter):
    """datatrove downloads the LDNOOBW list at run time; give it the same list, shipped here."""
    import re as re_

    words = (REPO / "stages" / "data" / "badwords" / "en.txt").read_text().splitlines()
    alternatives = "|".join(re_.escape(w.strip()) for w in words if w.strip())
    badwords_filter._badwords_regex["en"] = re_.compile(rf"(?:\W|^)({alternatives})(?:\W|$)")
    return badwords_filter


def run_datatrove(filters: list, docs: list[dict]) -> tuple[list[bool], float]:
    """Keep/drop per document through datatrove's `filter()` calls, and the seconds spent."""
    from datatrove.data import Document as DTDocument

    inputs = [DTDocument(text=d["text"], id=d["id"], metadata={"url": d.get("url")}) for d in docs]
    decisions = []
    start = time.process_time()
    for doc in inputs:
        keep = True
        for f in filters:
            result = f.filter(doc)
            if result is not True and (result is False or not result[0]):
                keep = False
                break
        decisions.append(keep)
    return decisions, time.process_time() - start


def run_ours(rule_set: str, docs: list[dict]) -> tuple[list[bool], float]:
    from pipeline.documents import Document
    from stages.filters.heuristic_filter import HeuristicFilter, HeuristicFilterParams

    stage = HeuristicFilter("bench", HeuristicFilterParams(rule_sets=[rule_set]), Path("."))
    inputs = [Document(id=d["id"], text=d["text"], url=d.get("url")) for d in docs]
    stage.rule_set_objects()  # load lists before timing, as datatrove's constructors do
    start = time.process_time()
    decisions = [isinstance(stage.apply(doc), Document) for doc in inputs]
    return decisions, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", help="parquet or jsonl(.gz) with id, text (and url)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--rule-sets", nargs="*", default=None)
    args = parser.parse_args()
    docs = load_docs(args.docs, args.limit)
    mb = sum(len(d["text"].encode("utf-8", "replace")) for d in docs) / 1e6
    print(f"{len(docs)} documents, {mb:.1f} MB")
    reference = datatrove_filters()
    # Warm both (spaCy's pipeline loads on first use; ours compiles regexes on import).
    run_datatrove(reference["gopher_quality"], docs[:3])
    print(f"| rule set | datatrove docs/s/core | ours docs/s/core | speed-up | "
          f"identical decisions | kept (datatrove / ours) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.rule_sets or [*reference, *OURS_ONLY]:
        ours, t_ours = run_ours(name, docs)
        if name not in reference:  # no datatrove class to compare with
            print(f"| {name} | - | {len(docs) / t_ours:,.0f} | - | - | - / {sum(ours)} |")
            continue
        theirs, t_theirs = run_datatrove(reference[name], docs)
        same = sum(a == b for a, b in zip(theirs, ours)) / len(docs)
        print(f"| {name} | {len(docs) / t_theirs:,.0f} | {len(docs) / t_ours:,.0f} | "
              f"{t_theirs / t_ours:.1f}x | {same:.2%} | {sum(theirs)} / {sum(ours)} |",
              flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
