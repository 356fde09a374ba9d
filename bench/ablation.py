"""Data-quality ablation: the same model, the same tokens, raw crawl text vs lmforge's corpus.

    python -m bench.ablation [--steps 600] [--junk-ratio 1.0] [--run-dir runs/ablation] [--port N]

The raw crawl: a web-like site (`demo/site/web.py`) served on 127.0.0.1 and crawled by the
`crawl` stage. Its clean text is 39 Shakespeare works and the King James books (the
shared data folder) other than the held-out ones below, one page per part of a work or
chapter, in site chrome. Around it are the page kinds a raw crawl is made of: exact and
near-duplicate copies (print, AMP, syndicated), SEO spam, shop listings, forum indexes,
word salad drawn from the articles' own word frequencies, Lorem ipsum templates, encoded
data, pages in 15 other languages (the vim tutorial) and listing pages; `--junk-ratio`
sets the junk's text against the clean text's (1.0: about half the crawl is junk).

One pipeline run builds five training corpora that share crawl -> ingest_warc -> extract:
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
- **+ no duplicated-line rule**: the same again, without FineWeb's "characters in
  duplicated lines <= 1%" rule, which drops a play once its speaker names stay in.

Each arm then trains its own byte-level BPE tokenizer (same vocab size), writes token
shards, and the `pretrain` stage trains the same Llama-style model (same shape, seed,
schedule, batch and number of steps, hence the same number of training tokens). CPU, fp32.
The default budget is less than one pass over either corpus, as in pretraining on the web.

Evaluation is on clean text no arm saw: three Shakespeare plays and three King James
books that are not on the site. Each held-out document is encoded with the arm's own
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
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

SHARED = Path("/work/shared/data")
SHAKESPEARE = SHARED / "text" / "shakespeare"
KJV = SHARED / "text" / "kjv.jsonl"
FOREIGN = SHARED / "multilingual"
HELDOUT_PLAYS = ("twelfth_night", "winters_tale", "coriolanus")
HELDOUT_BOOKS = ("Proverbs", "Isaiah", "Matthew")
PART_CHARS = 15_000  # a work is published in parts of about this size
BATCH = 16
MODEL = {"dim": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 128,
         "tie_embeddings": True}
# FineWeb's C4 step: no bad-words list, and lines without terminal punctuation are kept.
FINEWEB_C4 = {"badwords": False, "filter_no_terminal_punct": False}
# The arms: raw text, then lmforge corpora that differ only in three heuristic rules.
ARMS = [
    {"suffix": "raw", "docs": "text", "label": "raw extracted text"},
    {"suffix": "fineweb", "docs": "dedup_fineweb", "label": "lmforge, FineWeb recipe as datatrove runs it",
     "quality": {"c4": FINEWEB_C4}},
    {"suffix": "gopher", "docs": "dedup_gopher",
     "label": "lmforge, + alpha words over whitespace words (Gopher paper)",
     "quality": {"c4": FINEWEB_C4, "gopher_quality": {"alpha_words": "whitespace"}}},
    {"suffix": "verse", "docs": "dedup_verse",
     "label": "lmforge, + C4 keeps lines under 3 words",
     "quality": {"c4": {**FINEWEB_C4, "min_words_per_line": None},
                 "gopher_quality": {"alpha_words": "whitespace"}}},
    {"suffix": "dialogue", "docs": "dedup_dialogue",
     "label": "lmforge, + FineWeb's duplicated-line-characters rule off",
     "quality": {"c4": {**FINEWEB_C4, "min_words_per_line": None},
                 "gopher_quality": {"alpha_words": "whitespace"},
                 "fineweb_quality": {"max_char_dup_ratio": None}}},
]


def pipeline_config(site_url: str, run_dir: Path, steps: int, engine: str, vocab: int,
                    seed: int = 0, arms: list[dict] = ARMS) -> dict:
    def arm(docs: str, suffix: str) -> dict:
        return {
            f"tokenizer_{suffix}": {"kind": "train_tokenizer", "inputs": [docs],
                                    "params": {"vocab_size": vocab, "heldout_bytes": 50_000}},
            f"tokens_{suffix}": {"kind": "tokenize", "inputs": [docs, f"tokenizer_{suffix}"],
                                 "params": {"val_fraction": 0.01}},
            f"train_{suffix}": {"kind": "pretrain", "inputs": [f"tokens_{suffix}"], "params": {
                "model": MODEL,
                "data": {"seq_len": MODEL["max_seq_len"], "sampling": "random"},
                "train": {"batch_size": BATCH, "max_steps": steps, "lr": 3e-3, "min_lr": 3e-4,
                          "warmup_steps": max(1, steps // 20), "eval_every": 0,
                          "log_every": 100, "checkpoint_every": 0, "device": "cpu",
                          "seed": seed},
                "sample_tokens": 0}},
        }

    def filtered(suffix: str, quality: dict) -> dict:
        return {
            f"quality_{suffix}": {"kind": "heuristic_filter", "inputs": ["lang"], "params": quality},
            f"exact_{suffix}": {"kind": "exact_dedup", "inputs": [f"quality_{suffix}"]},
            f"signatures_{suffix}": {"kind": "minhash_signatures", "inputs": [f"exact_{suffix}"]},
            f"buckets_{suffix}": {"kind": "minhash_buckets", "inputs": [f"signatures_{suffix}"]},
            f"clusters_{suffix}": {"kind": "minhash_clusters", "inputs": [f"buckets_{suffix}"]},
            f"dedup_{suffix}": {"kind": "minhash_filter",
                                "inputs": [f"clusters_{suffix}", f"exact_{suffix}"]},
            **arm(f"dedup_{suffix}", suffix),
        }

    return {"name": "ablation", "run_dir": str(run_dir), "stages": {
        "crawl": {"kind": "crawl", "params": {
            "seeds": [site_url + "/"], "contact_url": "https://example.org/lmforge-bench",
            "allow_private": True, "delay_seconds": 0.0, "max_depth": 4, "max_pages": 50_000,
            "workers": 4, "max_per_host": 4}},
        "pages": {"kind": "ingest_warc", "inputs": ["crawl"]},
        "text": {"kind": "extract", "inputs": ["pages"], "params": {"engine": engine}},
        "lang": {"kind": "langid", "inputs": ["text"], "params": {"keep": ["en"], "min_score": 0.65}},
        **arm("text", "raw"),
        **{suffix: stage for variant in arms[1:] for suffix, stage in
           filtered(variant["suffix"], variant["quality"]).items()},
    }}


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


def heldout_sets() -> dict[str, list[str]]:
    """name -> documents: whole plays, and whole chapters of the held-out books."""
    plays = [(SHAKESPEARE / f"{name}_gut.txt").read_text(encoding="utf-8") for name in HELDOUT_PLAYS]
    books = [" ".join(verses) for verses in kjv_chapters(held_out=True).values()]
    return {"shakespeare": plays, "kjv": books}


def corpus_row(run_dir: Path, docs_stage: str, suffix: str) -> dict:
    stats = json.loads((run_dir / docs_stage / "stats.json").read_text())
    tokens = json.loads((run_dir / f"tokens_{suffix}" / "stats.json").read_text())
    train_log = [json.loads(line) for line in
                 (run_dir / f"train_{suffix}" / "train_log.jsonl").read_text().splitlines()]
    report = json.loads((run_dir / f"tokenizer_{suffix}" / "tokenizer" / "train_report.json").read_text())
    corpus_tokens = sum(info["train"]["tokens"] for info in tokens["info"].values())
    return {"docs": stats["kept"], "bytes": stats["bytes_out"], "tokens": train_log[-1]["tokens"],
            "epochs": train_log[-1]["tokens"] / corpus_tokens,
            "final_train_loss": train_log[-1]["loss"],
            "bytes_per_token": report["heldout"]["bytes_per_token"]}


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--junk-ratio", type=float, default=1.0,
                        help="junk text bytes per clean text byte on the site")
    parser.add_argument("--engine", choices=["resiliparse", "trafilatura"], default="resiliparse")
    parser.add_argument("--seed", type=int, default=0, help="training seed (initialisation, batches)")
    parser.add_argument("--port", type=int, default=0, help="serve the site on this port (0: any "
                        "free one); with --run-dir, the same port lets a re-run reuse the crawl")
    parser.add_argument("--arms", default=",".join(a["suffix"] for a in ARMS),
                        help="comma-separated arms to train (raw is always built)")
    args = parser.parse_args(argv)
    arms = [a for a in ARMS if a["suffix"] == "raw" or a["suffix"] in args.arms.split(",")]

    from demo.site import serve
    from demo.site.web import build_web_site
    from model.eval import bits_per_byte
    from pipeline import run

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir or Path(tmp) / "run"
        site = build_web_site(Path(tmp) / "site", site_articles(), foreign_texts(),
                              junk_ratio=args.junk_ratio)
        server = serve(site, args.port)
        start = time.perf_counter()
        try:
            run(pipeline_config(f"http://127.0.0.1:{server.server_address[1]}", run_dir,
                                args.steps, args.engine, args.vocab, args.seed, arms))
        finally:
            server.shutdown()
            server.server_close()
        wall = time.perf_counter() - start
        sets = heldout_sets()
        rows = {}
        for arm in arms:
            row = corpus_row(run_dir, arm["docs"], arm["suffix"])
            for name, documents in sets.items():
                row[name] = bits_per_byte(run_dir / f"train_{arm['suffix']}" / "model", documents)
            rows[arm["label"]] = row
        stages = {"raw (extract)": "text", "langid": "lang"}
        stages.update({arm["suffix"]: arm["docs"] for arm in arms[1:]})
        table = composition(run_dir, stages)

    sizes = {name: sum(len(d.encode("utf-8")) for d in docs) for name, docs in sets.items()}
    print(f"web-like site, junk ratio {args.junk_ratio}, extract={args.engine}; model {MODEL}; "
          f"{args.steps} steps x {BATCH} x {MODEL['max_seq_len']} tokens, seed {args.seed}; "
          f"pipeline + training wall {wall:.0f} s")
    print(f"held-out: shakespeare = {', '.join(HELDOUT_PLAYS)} ({sizes['shakespeare']:,} bytes); "
          f"kjv = {', '.join(HELDOUT_BOOKS)} ({sizes['kjv']:,} bytes)\n")
    print_composition(table, list(stages))
    print()
    print("| training data | docs | MB | train tokens | passes over corpus | tokenizer bytes/token "
          "| final train loss | held-out Shakespeare bits/byte | held-out KJV bits/byte |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, row in rows.items():
        print(f"| {label} | {row['docs']:,} | {row['bytes'] / 1e6:.3f} | {row['tokens']:,} | "
              f"{row['epochs']:.2f} | {row['bytes_per_token']:.2f} | {row['final_train_loss']:.3f} | "
              f"{row['shakespeare']:.3f} | {row['kjv']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
