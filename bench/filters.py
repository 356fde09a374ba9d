"""Heuristic filter speed and agreement: our rule sets vs datatrove's filter classes.

    python bench/filters.py [--docs FILE.parquet|FILE.jsonl[.gz]] [--limit N]
                            [--baseline GIT_REV] [--no-datatrove] [--kinds pydoc ...]

For each rule set (Gopher quality, Gopher repetition, C4 quality + bad words, FineWeb
quality, and ours alone: URL block list, token ratio, stop words) and for the default
recipe as configs/demo.yaml gives it (`preset: lmforge`: url_blocklist, gopher_repetition,
gopher_quality, c4, fineweb_quality in one stage), the implementations run over the same
extracted documents in the same process, one core each, and the table shows documents per
CPU-second (`time.process_time`, the best of `--repeat` runs, since a shared machine adds noise), the
speed-up and the fraction of identical keep/drop decisions. datatrove's filters use their
default word tokenizer (a blank spaCy English pipeline); ours use
`stages.filters.text.split_words`. Every run of ours starts with an empty chunk cache, as a
fresh worker does; with `--warm-cache` it starts with the cache one pass over the same
documents leaves (a worker long into a stream whose vocabulary fits its cache).

`--baseline REV` also times the rule sets as they were at git revision REV (loaded from
`git show` into a temporary package) and checks that today's decisions and score columns
are identical to that revision's, document by document.

Without `--docs` the corpus is built from real text that installs offline: the CPython 3.11
HTML documentation (Debian `python3.11-doc`, extracted with resiliparse), Shakespeare's
plays split into scenes, the King James Bible by chapter and the vim tutorial in 16
languages from ../shared/data.

Measured 2026-12-01 on a shared 2-core machine (noisy: compare columns of one run), that
corpus (2,997 documents, 18.8 MB), `--baseline 79d7f97` (before the shared statistics),
documents per CPU-second, cold chunk cache:

| rule set | datatrove | 79d7f97 | now | now vs 79d7f97 | now vs datatrove |
|---|---:|---:|---:|---:|---:|
| gopher_quality | 38.0 | 301 | 623 | 2.1x | 16x |
| gopher_repetition | 30.7 | 168 | 563 | 3.4x | 18x |
| c4 | 44.9 | 370 | 636 | 1.7x | 14x |
| fineweb_quality | 111.6 | 1,482 | 2,170 | 1.5x | 19x |
| recipe (configs/demo.yaml) | 28.7 | 142 | 321 | 2.3x | 11x |

Decisions and scores identical to 79d7f97 on every document. The CPython pages alone
(529, 2,500 words each): recipe 53 -> 126 (2.4x; datatrove 11). With the chunk cache warm
(`--warm-cache`), whole corpus: recipe 165 -> 499 (3.0x). What is left is Python work per
token (splitting chunks not seen before, one dict lookup per word for its id) and numpy's
fixed cost per n-gram size on short documents. (That table's recipe row ran the four rule
sets of the time, without C4.)

Measured 2026-12-01, evening, on bench/scale.py's even sample of the 2 GB dump after langid
(3,324 pages, 16.8 MB, 877 words per page; `--docs <langid shard> --baseline 5f3923b
--repeat 2 --rule-sets recipe`), the default recipe with C4: datatrove 41.5, 5f3923b 574,
now 748 docs per CPU-second (1.3x, 18x datatrove), decisions and scores identical to
5f3923b on every page. The change: C4 cleans lines without a Python loop when a whole-text
test shows that only "too few words" can remove one, and counts every line's sentences at
once from the word ids the repetition rules built; the words are not split a second time
when C4 removed nothing.
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
import importlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
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


def recipe_params() -> dict:
    """configs/demo.yaml's heuristic_filter params (the default recipe: `preset: lmforge`)."""
    import yaml

    stages = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())["stages"]
    return next(s for s in stages.values() if s["kind"] == "heuristic_filter").get("params", {})


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
        # datatrove's side of the default recipe: no URL filter (see OURS_ONLY), C4 without
        # bad words, keeping lines without terminal punctuation or under three words, and
        # no duplicated-line-characters rule; its Gopher counts tokens, not whitespace words
        "recipe": [GopherRepetitionFilter(), GopherQualityFilter(),
                   C4QualityFilter(filter_no_terminal_punct=False, min_words_per_line=0),
                   FineWebQualityFilter(char_duplicates_ratio=1.0)],
    }


def _offline_badwords(badwords_filter):
    """datatrove downloads the LDNOOBW list at run time; give it the same list, shipped here."""
    import re as re_

    words = (REPO / "stages" / "filters" / "data" / "badwords" / "en.txt").read_text().splitlines()
    alternatives = "|".join(re_.escape(w.strip()) for w in words if w.strip())
    badwords_filter._badwords_regex["en"] = re_.compile(rf"(?:\W|^)({alternatives})(?:\W|$)")
    return badwords_filter


def run_datatrove(filters: list, docs: list[dict], repeat: int = 1) -> tuple[list[bool], float]:
    """Keep/drop per document through datatrove's `filter()` calls, and the CPU seconds spent
    (the best of `repeat` runs)."""
    from datatrove.data import Document as DTDocument

    best = float("inf")
    for _ in range(repeat):
        inputs = [DTDocument(text=d["text"], id=d["id"], metadata={"url": d.get("url")})
                  for d in docs]
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
        best = min(best, time.process_time() - start)
    return decisions, best


def load_baseline(rev: str):
    """heuristic_filter's modules as they were at git revision `rev`, as a separate package."""
    package = Path(tempfile.mkdtemp()) / "baseline_filters"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("text.py", "heuristic_rules.py", "heuristic_filter.py"):
        source = subprocess.run(
            ["git", "show", f"{rev}:stages/filters/{name}"], cwd=REPO, check=True,
            capture_output=True, text=True,
        ).stdout
        for module in ("text", "heuristic_rules"):
            source = source.replace(f"stages.filters.{module}", f"baseline_filters.{module}")
        (package / name).write_text(source)
    sys.path.insert(0, str(package.parent))
    return importlib.import_module("baseline_filters.heuristic_filter")


def run_ours(params: dict, docs: list[dict], module=None, repeat: int = 1,
             warm_cache: bool = False):
    """(decisions, CPU seconds: the best of `repeat` runs, each document's reason and columns)."""
    from pipeline.documents import Document, Rejected

    if module is None:
        from stages.filters import heuristic_filter as module
    text_module = sys.modules[module.__name__.rsplit(".", 1)[0] + ".text"]
    stage = module.HeuristicFilter(
        "bench", module.HeuristicFilterParams.model_validate(params), Path(".")
    )
    # Load word lists and tldextract before timing, as datatrove's constructors do.
    for doc in docs[:3]:
        stage.apply(Document(id=doc["id"], text=doc["text"], url=doc.get("url")))
    best = float("inf")
    for _ in range(repeat):
        if hasattr(text_module, "_chunk_tokens"):
            text_module._chunk_tokens = {}  # a fresh worker's empty chunk cache
            if warm_cache:
                for doc in docs:
                    text_module.split_words(doc["text"])
        inputs = [Document(id=d["id"], text=d["text"], url=d.get("url")) for d in docs]
        start = time.process_time()
        outputs = [stage.apply(doc) for doc in inputs]
        best = min(best, time.process_time() - start)
    results = [
        (out.reason, out.doc.columns) if isinstance(out, Rejected) else (None, out.columns)
        for out in outputs
    ]
    return [reason is None for reason, _ in results], best, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", help="parquet or jsonl(.gz) with id, text (and url)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--rule-sets", nargs="*", default=None,
                        help="rule sets to time, and `recipe` for the default recipe")
    parser.add_argument("--kinds", nargs="*", default=None,
                        help="only documents whose id starts with one of these (pydoc, kjv, ...)")
    parser.add_argument("--baseline", help="also time the rule sets of this git revision")
    parser.add_argument("--no-datatrove", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs")
    parser.add_argument("--warm-cache", action="store_true",
                        help="time ours with the word splitter's cache warm")
    args = parser.parse_args()
    docs = load_docs(args.docs, args.limit)
    if args.kinds:
        docs = [d for d in docs if d["id"].split("/")[0] in args.kinds]
    mb = sum(len(d["text"].encode("utf-8", "replace")) for d in docs) / 1e6
    words = sum(len(d["text"].split()) for d in docs)
    print(f"{len(docs)} documents, {mb:.1f} MB, {words / len(docs):,.0f} words per document")
    reference = {} if args.no_datatrove else datatrove_filters()
    baseline = load_baseline(args.baseline) if args.baseline else None
    if reference:  # warm spaCy's pipeline (it loads on first use)
        run_datatrove(reference["gopher_quality"], docs[:3])
    print("| rule set | datatrove docs/CPU-s | "
          + (f"ours at {args.baseline} docs/CPU-s | " if baseline else "")
          + "ours docs/CPU-s | speed-up vs datatrove | "
          + ("speed-up vs baseline | identical to baseline (decisions, scores) | "
             if baseline else "")
          + "identical decisions to datatrove | kept (datatrove / ours) |")
    print("|---|---:|" + ("---:|" if baseline else "") + "---:|---:|"
          + ("---:|---:|" if baseline else "") + "---:|---:|")
    names = args.rule_sets or ["gopher_quality", "gopher_repetition", "c4", "fineweb_quality",
                               *OURS_ONLY, "recipe"]
    for name in names:
        params = recipe_params() if name == "recipe" else {"rule_sets": [name]}
        ours, t_ours, results = run_ours(params, docs, repeat=args.repeat,
                                         warm_cache=args.warm_cache)
        cells = [f"**{name}** (configs/demo.yaml: {params})" if name == "recipe" else name]
        if name in reference:
            theirs, t_theirs = run_datatrove(reference[name], docs, args.repeat)
            cells.append(f"{len(docs) / t_theirs:,.1f}")
        else:
            theirs, t_theirs = None, None
            cells.append("-")
        if baseline:
            _, t_base, base_results = run_ours(params, docs, baseline, args.repeat)
            cells.append(f"{len(docs) / t_base:,.0f}")
        cells.append(f"{len(docs) / t_ours:,.0f}")
        cells.append(f"{t_theirs / t_ours:.0f}x" if theirs else "-")
        if baseline:
            same_reason = sum(a[0] == b[0] for a, b in zip(base_results, results)) / len(docs)
            same_scores = sum(a[1] == b[1] for a, b in zip(base_results, results)) / len(docs)
            cells += [f"{t_base / t_ours:.1f}x", f"{same_reason:.2%}, {same_scores:.2%}"]
        if theirs:
            same = sum(a == b for a, b in zip(theirs, ours)) / len(docs)
            cells += [f"{same:.2%}", f"{sum(theirs)} / {sum(ours)}"]
        else:
            cells += ["-", f"- / {sum(ours)}"]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
