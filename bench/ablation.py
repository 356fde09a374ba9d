"""Data-quality ablation: the same model, the same tokens, raw crawl text vs lmforge's corpus.

    python -m bench.ablation [--ablation configs/ablations/web.yaml] [--junk-ratio 1.0]
                             [--tokens N] [--seeds 0,1] [--arms raw,fineweb] [--run-dir DIR]
                             [--dim WIDTH]

This script builds and serves the web-like site described below on the port the ablation's
base config crawls, writes the held-out King James chapters where the ablation file expects
them (`$LMFORGE_ABLATION_DATA/kjv/`), and runs `lmforge ablate` on the ablation file
(stages/ablate.py: every arm in one pipeline run, shared stages once, each arm
decontaminated against the held-out text, the same proxy model and token budget per arm
and seed). It prints the arms' table and what each arm's corpus is made of, by page kind.

The raw crawl: a web-like site (`demo/site/web.py`) served on 127.0.0.1 and crawled by the
`crawl` stage. Its clean text is 39 Shakespeare works and the King James books (the
shared data folder) other than the held-out ones below, one page per part of a work or
chapter, in site chrome. Around it are the page kinds a raw crawl is made of: exact and
near-duplicate copies (print, AMP, syndicated), SEO spam, shop listings, forum indexes,
word salad drawn from the articles' own word frequencies, Lorem ipsum templates, encoded
data, pages in 15 other languages (the vim tutorial) and listing pages; `--junk-ratio`
sets the junk's text against the clean text's (1.0: about half the crawl is junk).

The ablation file's arms are training corpora that share crawl -> ingest_warc -> extract
(configs/ablations/web.yaml lists them all; the main ones):
- **raw**: the extracted text of every page, as it comes;
- **lmforge, FineWeb recipe**: the same text through `langid` (English, score >= 0.65),
  `heuristic_filter` (FineWeb's recipe: Gopher repetition, Gopher quality, C4 quality
  without its bad-words list and without dropping lines that lack terminal punctuation,
  FineWeb quality), exact dedup and MinHash dedup (signatures -> buckets -> clusters ->
  filter);
- **+ Gopher words**: the same, except that Gopher's "80% of words contain a letter" rule
  counts whitespace-separated words, as the Gopher paper states it, instead of word-tokenizer
  tokens, where every punctuation mark is a word (datatrove, hence FineWeb): that count
  drops well-punctuated verse and dialogue;
- **+ short lines**: the same again, and C4's line cleaning keeps lines of fewer than three
  words (speaker names, short verse lines, the blank lines between paragraphs), which
  FineWeb's C4 step deletes;
- **+ no duplicated-line rule** (`dialogue`, the rules of `preset: lmforge`): the same
  again, without FineWeb's "characters in duplicated lines <= 1%" rule, which drops a play
  once its speaker names stay in;
- **lmforge** (the default recipe): `dialogue` + `coherence_filter`, which drops the word
  salad that passes every rule (adjacent words that carry no information about each other);
- quality-classifier arms and the same rules on trafilatura's extraction.

Each arm then trains its own byte-level BPE tokenizer (same vocab size), writes token
shards, and the `pretrain` stage trains the same Llama-style model (same shape, seed,
schedule, batch and number of steps, hence the same number of training tokens). CPU, fp32.
The budget (1.2M tokens per arm and seed, two seeds) is less than one pass over either corpus, as in pretraining on the web.

Evaluation is on clean text no arm saw: three Shakespeare plays and three King James
books that are not on the site, and two texts of other kinds: Edith Wharton's The Verdict
(modern narrative prose) and the English vim tutor (a technical manual). The plays are
scored as the site shows a play (`shakespeare`: lines stripped, single spaces, which is
byte for byte the text the crawl gives for the plays on the site) and as Project Gutenberg
indents them (`shakespeare_indented`: verse indented by up to 28 spaces, which no page of
the crawl has). Each held-out document is encoded with the arm's own
tokenizer, preceded by `<|eos|>` (the document separator every arm trained with, so the
first token is predicted too), and cut into windows of the model's context; the summed
cross-entropy of every token, in bits, is divided by the document's UTF-8 bytes (windows
side by side, no overlap: `model/eval.py`'s `bits_per_byte`, which `lmforge eval` and the
trainer's `eval_text` use too). Bits per byte does not depend on the tokenizer, so the arms
compare although their vocabularies differ. The script also prints what each arm's corpus
is made of, by page kind.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = Path("/work/shared/data")
SHAKESPEARE = SHARED / "text" / "shakespeare"
KJV = SHARED / "text" / "kjv.jsonl"
FOREIGN = SHARED / "multilingual"
# Held out: in configs/ablations/web.yaml, never on the site.
HELDOUT_PLAYS = ("twelfth_night", "winters_tale", "coriolanus")
HELDOUT_BOOKS = ("Proverbs", "Isaiah", "Matthew")
PART_CHARS = 15_000  # a work is published in parts of about this size


def _parts(text: str) -> list[list[str]]:
    """A work's blank-line-separated blocks (speeches, stanzas), grouped into parts."""
    blocks = [b.strip("\n") for b in re.split(r"\n\s*\n", text) if b.strip()]
    parts, size = [[]], 0
    for block in blocks:
        if size >= PART_CHARS:
            parts.append([])
            size = 0
        parts[-1].append(block)
        size += len(block)
    return parts



def kjv_chapters(held_out: bool) -> dict[tuple[str, int], list[str]]:
    """(book, chapter) -> verses, of the held-out books or of all the others, in Bible order."""
    chapters: dict[tuple[str, int], list[str]] = {}
    for line in KJV.read_text(encoding="utf-8").splitlines():
        verse = json.loads(line)
        if (verse["book"] in HELDOUT_BOOKS) == held_out:
            chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"])
    return chapters



def site_articles() -> list[dict]:
    """The clean text of the site: Shakespeare works in parts, King James chapters."""
    articles = []
    for path in sorted(SHAKESPEARE.glob("*_gut.txt")):
        work = path.name.removesuffix("_gut.txt")
        if work in HELDOUT_PLAYS:
            continue
        title = work.replace("_", " ").title()
        for n, blocks in enumerate(_parts(path.read_text(encoding="utf-8")), 1):
            articles.append({"slug": f"{work}-{n}", "title": f"{title}, part {n}",
                             "tags": ["fiction", work], "paragraphs": blocks,
                             "date": f"1623-11-{1 + n % 28:02d}"})
    chapters = kjv_chapters(held_out=False)
    for i, ((book, chapter), verses) in enumerate(chapters.items()):
        slug = book.lower().replace(" ", "-")
        articles.append({"slug": f"{slug}-{chapter:03d}", "title": f"{book}, chapter {chapter}",
                         "tags": ["scripture", slug],
                         "paragraphs": [" ".join(verses[j:j + 4]) for j in range(0, len(verses), 4)],
                         "date": f"1611-{1 + i % 12:02d}-{1 + i % 28:02d}"})
    return articles



def foreign_texts() -> dict[str, str]:
    """language code -> the vim tutorial in that language (UTF-8 copies; not English)."""
    return {path.name.split(".")[1]: path.read_text(encoding="utf-8")
            for path in sorted(FOREIGN.glob("tutor.*.utf-8.txt"))}



def composition(run_dir: Path, stages: dict[str, str]) -> dict[str, dict[str, list[int]]]:
    """page kind -> {column: [documents, text bytes]} for the documents each stage kept."""
    import pyarrow.parquet as pq

    from demo.site.web import page_kind

    table: dict[str, dict[str, list[int]]] = {}
    for column, stage in stages.items():
        for shard in sorted((run_dir / stage / "shards").glob("*.parquet")):
            data = pq.read_table(shard, columns=["url", "text"]).to_pydict()
            for url, text in zip(data["url"], data["text"]):
                cell = table.setdefault(page_kind(url), {}).setdefault(column, [0, 0])
                cell[0] += 1
                cell[1] += len(text.encode("utf-8"))
    return table



def print_composition(table: dict[str, dict[str, list[int]]], columns: list[str]) -> None:
    clean = ("articles",)
    print("| page kind | " + " | ".join(f"{c}: docs | {c}: MB" for c in columns) + " |")
    print("|---" * (1 + 2 * len(columns)) + "|")
    totals = {c: Counter() for c in columns}
    for kind in sorted(table, key=lambda k: (k not in clean, k)):
        cells = []
        for c in columns:
            docs, size = table[kind].get(c, [0, 0])
            totals[c]["docs"] += docs
            totals[c]["bytes"] += size
            totals[c]["junk"] += 0 if kind in clean else size
            cells.append(f"{docs:,} | {size / 1e6:.3f}")
        print(f"| {kind} | " + " | ".join(cells) + " |")
    print("| **total** | " + " | ".join(f"{t['docs']:,} | {t['bytes'] / 1e6:.3f}"
                                       for t in totals.values()) + " |")
    print("| junk share of bytes | " + " | ".join(f" | {t['junk'] / max(1, t['bytes']):.1%}"
                                                 for t in totals.values()) + " |")


def write_if_changed(path: Path, text: str) -> Path:
    """Write `text` unless the file already holds it: stages that read the file key their
    cache on its size and mtime, so an unchanged file must keep its mtime."""
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def write_heldout_kjv(folder: Path) -> list[Path]:
    """The held-out books' chapters, one text file per chapter (the ablation's `kjv` set)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, verses in enumerate(kjv_chapters(held_out=True).values()):
        paths.append(write_if_changed(folder / f"{i:04d}.txt", " ".join(verses)))
    return paths


def write_positives(folder: Path) -> Path:
    """The quality classifier's curated positives: clean prose and dialogue that is neither
    on the site nor held out: the instruction set's exchanges (question and answer)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = json.loads((SHARED / "sft" / "instruction-data-with-preference.json").read_text())
    exchanges = ["\n\n".join(x for x in (r["instruction"], r["input"], r["output"]) if x)
                 for r in rows]  # a question and its answer, as one document
    texts = [t for t in exchanges if len(t.split()) >= 12]
    return write_if_changed(folder / "positives.jsonl",
                            "".join(json.dumps({"text": t}) + "\n" for t in texts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ablation", type=Path, default=REPO / "configs" / "ablations" / "web.yaml")
    parser.add_argument("--run-dir", help="override the ablation file's run_dir")
    parser.add_argument("--tokens", type=int, help="override the training tokens per arm and seed")
    parser.add_argument("--seeds", help="override the seeds, comma-separated")
    parser.add_argument("--arms", help="only these arms, comma-separated")
    parser.add_argument("--dim", type=int, help="override the proxy model's width (a larger "
                        "proxy; give it its own --run-dir: the trainings' names stay the same)")
    parser.add_argument("--junk-ratio", type=float, default=1.0,
                        help="junk text bytes per clean text byte on the site")
    args = parser.parse_args(argv)

    from demo.site import serve
    from demo.site.web import build_web_site
    from pipeline import run
    from stages.ablate import format_table, run_ablation

    ablation = yaml.safe_load(args.ablation.read_text())
    ablation["base"] = str((args.ablation.parent / ablation["base"]).resolve())
    ablation["run_dir"] = str(Path(args.run_dir).resolve() if args.run_dir
                              else (args.ablation.parent / ablation["run_dir"]).resolve())
    if args.tokens:
        ablation["tokens"] = args.tokens
    if args.seeds:
        ablation["seeds"] = [int(s) for s in args.seeds.split(",")]
    if args.dim:
        ablation["proxy"]["model"]["dim"] = args.dim
    base = yaml.safe_load(Path(ablation["base"]).read_text())
    port = int(base["stages"]["crawl"]["params"]["seeds"][0].rstrip("/").rsplit(":", 1)[1])

    # Held-out chapters and positives in a stable folder beside the run, so that a re-run
    # finds the same paths (stage cache keys) and reuses every stage.
    data = Path(ablation["run_dir"]).with_name(Path(ablation["run_dir"]).name + "-data")
    os.environ["LMFORGE_ABLATION_DATA"] = str(data)
    write_heldout_kjv(data / "kjv")
    write_positives(data / "positives")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "ablation.yaml"
        path.write_text(yaml.safe_dump(ablation))
        site = build_web_site(tmp / "site", site_articles(), foreign_texts(),
                              junk_ratio=args.junk_ratio)
        server = serve(site, port)
        start = time.perf_counter()
        try:
            summary = run_ablation(path, run, args.arms.split(",") if args.arms else None)
        finally:
            server.shutdown()
            server.server_close()
        wall = time.perf_counter() - start
    stages = {"raw (extract)": "text", "langid": "lang"}
    stages.update({arm: row["corpus_stage"] for arm, row in summary["arms"].items()})
    print(f"web-like site, junk ratio {args.junk_ratio}; {args.ablation}; pipeline, training "
          f"and evaluation wall {wall:.0f} s\n")
    print_composition(composition(Path(summary["run_dir"]), stages), list(stages))
    print()
    print(format_table(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
