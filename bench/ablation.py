"""Data-quality ablation: the same model, the same tokens, raw crawl text vs lmforge's corpus.

    python -m bench.ablation [--steps 300] [--run-dir runs/ablation] [--engine resiliparse]

From one raw crawl of the demo site (`demo/site`: articles wrapped in site chrome, plus
near-duplicate mirrors, keyword-stuffed spam pages, tag and navigation pages, pages in five
other languages; served on 127.0.0.1, crawled by the `crawl` stage), one pipeline run builds
two training corpora that share crawl -> ingest_warc -> extract:

- **raw**: the extracted text of every page, as it comes;
- **lmforge**: the same text through `langid` (English, score >= 0.65),
  `heuristic_filter` (FineWeb's recipe: Gopher repetition and quality, C4, FineWeb quality)
  and MinHash deduplication (signatures -> buckets -> clusters -> filter).

Each arm then trains its own byte-level BPE tokenizer (same vocab size), writes token
shards, and the `pretrain` stage trains the same Llama-style model (same shape, seed,
schedule, batch and number of steps, hence the same number of training tokens). CPU, fp32.

Evaluation is on clean text neither arm saw: three Shakespeare plays and three King James
books that are not on the demo site (the site carries Genesis, Exodus, Ruth and Jonah). Each
held-out document is encoded with the arm's own tokenizer, preceded by `<|eos|>` (the
document separator both arms trained with, so the first token is predicted too), and cut
into windows of the model's context; the summed cross-entropy of every token, in bits, is
divided by the document's UTF-8 bytes. Bits per byte does not depend on the tokenizer, so
the two arms compare even though their vocabularies differ.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

SHAKESPEARE = Path("/work/shared/data/text/shakespeare")
KJV = Path("/work/shared/data/text/kjv.jsonl")
HELDOUT_PLAYS = ("twelfth_night", "winters_tale", "coriolanus")
HELDOUT_BOOKS = ("Proverbs", "Isaiah", "Matthew")
EVAL_BATCH = 32
MODEL = {"dim": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 128,
         "tie_embeddings": True}


def pipeline_config(site_url: str, run_dir: Path, steps: int, engine: str, vocab: int) -> dict:
    def arm(docs: str, suffix: str) -> dict:
        return {
            f"tokenizer_{suffix}": {"kind": "train_tokenizer", "inputs": [docs],
                                    "params": {"vocab_size": vocab, "heldout_bytes": 20_000}},
            f"tokens_{suffix}": {"kind": "tokenize", "inputs": [docs, f"tokenizer_{suffix}"],
                                 "params": {"val_fraction": 0.02}},
            f"train_{suffix}": {"kind": "pretrain", "inputs": [f"tokens_{suffix}"], "params": {
                "model": MODEL,
                "data": {"seq_len": MODEL["max_seq_len"], "sampling": "random"},
                "train": {"batch_size": 16, "max_steps": steps, "lr": 3e-3, "min_lr": 3e-4,
                          "warmup_steps": max(1, steps // 20), "eval_every": 0,
                          "log_every": 100, "checkpoint_every": 0, "device": "cpu",
                          "seed": 0},
                "sample_tokens": 0}},
        }

    return {"name": "ablation", "run_dir": str(run_dir), "stages": {
        "crawl": {"kind": "crawl", "params": {
            "seeds": [site_url + "/"], "contact_url": "https://example.org/lmforge-bench",
            "allow_private": True, "delay_seconds": 0.0, "max_depth": 6, "workers": 2}},
        "pages": {"kind": "ingest_warc", "inputs": ["crawl"]},
        "text": {"kind": "extract", "inputs": ["pages"], "params": {"engine": engine}},
        "lang": {"kind": "langid", "inputs": ["text"], "params": {"keep": ["en"], "min_score": 0.65}},
        "quality": {"kind": "heuristic_filter", "inputs": ["lang"]},
        "signatures": {"kind": "minhash_signatures", "inputs": ["quality"]},
        "buckets": {"kind": "minhash_buckets", "inputs": ["signatures"]},
        "clusters": {"kind": "minhash_clusters", "inputs": ["buckets"]},
        "dedup": {"kind": "minhash_filter", "inputs": ["clusters", "quality"]},
        **arm("text", "raw"),
        **arm("dedup", "lmforge"),
    }}


def heldout_sets() -> dict[str, list[str]]:
    """name -> documents: whole plays, and whole chapters of the held-out books."""
    plays = [(SHAKESPEARE / f"{name}_gut.txt").read_text(encoding="utf-8") for name in HELDOUT_PLAYS]
    chapters: dict[tuple[str, int], list[str]] = {}
    with open(KJV, encoding="utf-8") as f:
        for line in f:
            verse = json.loads(line)
            if verse["book"] in HELDOUT_BOOKS:
                chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"])
    books = [" ".join(verses) for verses in chapters.values()]
    return {"shakespeare": plays, "kjv": books}


def bits_per_byte(model_dir: Path, documents: list[str]) -> float:
    import torch
    from tokenizers import Tokenizer

    from model.checkpoint import load_model

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.encode_special_tokens = True  # held-out text is data, never control tokens
    eos = tokenizer.token_to_id("<|eos|>")
    model = load_model(model_dir).eval()
    context = model.config.max_seq_len
    windows: dict[int, list[list[int]]] = {}  # by length, so that each batch stacks
    n_bytes = 0
    for text in documents:
        ids = [eos, *tokenizer.encode(text, add_special_tokens=False).ids]
        n_bytes += len(text.encode("utf-8"))
        for start in range(0, len(ids) - 1, context):
            window = ids[start:start + context + 1]
            windows.setdefault(len(window), []).append(window)
    nats = 0.0
    with torch.no_grad():
        for group in windows.values():
            for i in range(0, len(group), EVAL_BATCH):
                batch = torch.tensor(group[i:i + EVAL_BATCH])
                logits = model(batch[:, :-1])
                nats += torch.nn.functional.cross_entropy(
                    logits.flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="sum").item()
    return nats / math.log(2) / n_bytes


def corpus_row(run_dir: Path, docs_stage: str, suffix: str) -> dict:
    stats = json.loads((run_dir / docs_stage / "stats.json").read_text())
    train_log = [json.loads(line) for line in
                 (run_dir / f"train_{suffix}" / "train_log.jsonl").read_text().splitlines()]
    report = json.loads((run_dir / f"tokenizer_{suffix}" / "tokenizer" / "train_report.json").read_text())
    return {"docs": stats["kept"], "bytes": stats["bytes_out"], "tokens": train_log[-1]["tokens"],
            "final_train_loss": train_log[-1]["loss"],
            "bytes_per_token": report["heldout"]["bytes_per_token"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--engine", choices=["resiliparse", "trafilatura"], default="resiliparse")
    args = parser.parse_args(argv)

    from demo.site import build_site, serve
    from pipeline import run

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir or Path(tmp) / "run"
        site = build_site(Path(tmp) / "site")
        server = serve(site, 0)
        start = time.perf_counter()
        try:
            run(pipeline_config(f"http://127.0.0.1:{server.server_address[1]}", run_dir,
                                args.steps, args.engine, args.vocab))
        finally:
            server.shutdown()
            server.server_close()
        wall = time.perf_counter() - start
        sets = heldout_sets()
        rows = {}
        for suffix, docs_stage in (("raw", "text"), ("lmforge", "dedup")):
            row = corpus_row(run_dir, docs_stage, suffix)
            for name, documents in sets.items():
                row[name] = bits_per_byte(run_dir / f"train_{suffix}" / "model", documents)
            rows[suffix] = row

    sizes = {name: sum(len(d.encode("utf-8")) for d in docs) for name, docs in sets.items()}
    print(f"demo-site crawl, extract={args.engine}; model {MODEL}; {args.steps} steps x 16 x "
          f"{MODEL['max_seq_len']} tokens; pipeline + training wall {wall:.0f} s")
    print(f"held-out: shakespeare = {', '.join(HELDOUT_PLAYS)} ({sizes['shakespeare']:,} bytes); "
          f"kjv = {', '.join(HELDOUT_BOOKS)} ({sizes['kjv']:,} bytes)\n")
    print("| training data | docs | MB | train tokens | tokenizer bytes/token | final train loss "
          "| held-out Shakespeare bits/byte | held-out KJV bits/byte |")
    print("|---|---|---|---|---|---|---|---|")
    labels = {"raw": "raw extracted text", "lmforge": "lmforge filtered + deduplicated"}
    for suffix, row in rows.items():
        print(f"| {labels[suffix]} | {row['docs']:,} | {row['bytes'] / 1e6:.3f} | {row['tokens']:,} | "
              f"{row['bytes_per_token']:.2f} | {row['final_train_loss']:.3f} | "
              f"{row['shakespeare']:.3f} | {row['kjv']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
