"""Tokenize-stage throughput and memory vs raw `Tokenizer.encode_batch` and datatrove.

    python -m bench.tokenize_throughput [--threads 1] [--train-mb 100] [--vocab 32768]

(Run it as a module: as a script, this file's name would shadow the standard library's
`tokenize` for everything the benchmark imports.)

Corpus: the real texts in /work/shared/data (King James Bible chapters, Shakespeare plays
cut into ~4 KB pieces, the vim tutorial in 16 languages), ingested once into doc shards.
A 32k byte-level BPE is trained on it by the `train_tokenizer` stage. Then, each in a
fresh process so that peak RSS is its own, on the same documents and tokenizer:

- `encode_batch`: texts already in memory, `Tokenizer.encode_batch` in batches of 1,024,
  token ids fetched (any consumer needs them); only the encode loop is timed;
- `encode_batch_fast`: the same without offsets (what the stage calls);
- `lmforge tokenize`: the stage's tasks end to end: read Parquet, split, encode, write
  train/val token shards (and the shuffled variant); the CPU time spent inside
  `encode_batch_fast` is also counted, and its share of the stage's CPU time is the stage's
  speed relative to raw encoding measured within one run (the other columns compare
  separate runs, which a busy machine skews);
- `datatrove`: ParquetReader -> DocumentTokenizer (no shuffle) in a LocalPipelineExecutor,
  end to end, if datatrove is installed.

Each method runs `--repeats` times, interleaved, and its run with the least CPU time is
shown. Rows report wall time and tokens/s, CPU time (all threads of the process) and
tokens per CPU-second, which is the per-core figure and, unlike wall time, holds on a
machine shared with other work; the ratio to `encode_batch` uses it. Then peak RSS (VmHWM)
and RSS once the inputs are loaded, before the timed work. `--threads 1`
(default) pins every method to one thread (TOKENIZERS_PARALLELISM=false), the per-core
figure; `--threads 0` lets each use every core. Then the BPE training time of the
`train_tokenizer` stage on `--train-mb` of text (the corpus repeated to that size: the
word-counting pass scales with bytes, the merge phase sees the corpus's distinct words).
Nothing here asserts on time.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.exit("run as a module from the repository root: python -m bench.tokenize_throughput")

import argparse
import json
import multiprocessing
import os
import re
import shutil
import tempfile
import time
from typing import Any

DATA = Path("/work/shared/data")
BATCH = 1024


def corpus_documents() -> list[dict[str, str]]:
    """Real documents of 1-6 KB from the shared data folder."""
    docs: list[dict[str, str]] = []
    chapters: dict[str, list[str]] = {}
    for line in (DATA / "text" / "kjv.jsonl").read_text(encoding="utf-8").splitlines():
        verse = json.loads(line)
        chapters.setdefault(f"{verse['book']} {verse['chapter']}", []).append(verse["text"])
    docs += [{"id": f"kjv/{k}", "text": " ".join(v)} for k, v in chapters.items()]
    for play in sorted((DATA / "text" / "shakespeare").glob("*.txt")):
        text = play.read_text(encoding="utf-8", errors="replace")
        pieces, current = [], ""
        for paragraph in re.split(r"\n\s*\n", text):
            current += paragraph + "\n\n"
            if len(current) > 4000:
                pieces.append(current)
                current = ""
        pieces.append(current)
        docs += [{"id": f"{play.stem}/{i}", "text": p} for i, p in enumerate(pieces) if p.strip()]
    for tutor in sorted((DATA / "multilingual").glob("tutor.*.utf-8.txt")):
        docs.append({"id": tutor.name, "text": tutor.read_text(encoding="utf-8")})
    return docs


def write_jsonl(docs: list[dict[str, str]], folder: Path, files: int, repeat: int = 1) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    outs = [open(folder / f"part-{i:03d}.jsonl", "w", encoding="utf-8") for i in range(files)]
    n = 0
    for r in range(repeat):
        for doc in docs:
            outs[n % files].write(json.dumps({"id": f"{r}:{doc['id']}", "text": doc["text"]},
                                             ensure_ascii=False) + "\n")
            n += 1
    for f in outs:
        f.close()


def run_pipeline(corpus: Path, run_dir: Path, vocab: int, tokenize: dict | None) -> None:
    import pipeline

    stages: dict[str, Any] = {
        "ingest": {"kind": "ingest", "params": {"paths": [str(corpus / "*.jsonl")],
                                                "id_field": "id", "shard_size": 2000}},
        "tokenizer": {"kind": "train_tokenizer", "inputs": ["ingest"],
                      "params": {"vocab_size": vocab, "sample_bytes": 10**12}},
    }
    for name, params in (tokenize or {}).items():
        stages[name] = {"kind": "tokenize", "inputs": ["ingest", "tokenizer"], "params": params}
    pipeline.run({"name": "bench", "run_dir": str(run_dir), "stages": stages}, executor="local")


# --- measured in child processes -------------------------------------------------------

def _rss_mb() -> float:
    """Peak RSS of this process (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Clock:
    """Wall time and this process's CPU time (every thread): on a shared machine the CPU
    time of a single-threaded run is the load-independent per-core figure."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> dict[str, float]:
        return {"seconds": time.perf_counter() - self.wall, "cpu": time.process_time() - self.cpu}


def _texts(run_dir: Path) -> list[str]:
    import pyarrow.parquet as pq

    texts: list[str] = []
    for path in sorted((run_dir / "ingest" / "shards").glob("*.parquet")):
        texts += pq.read_table(path, columns=["text"]).column("text").to_pylist()
    return texts


def measure_raw(run_dir: Path, fast: bool) -> dict[str, Any]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(run_dir / "tokenizer" / "tokenizer" / "tokenizer.json"))
    tokenizer.encode_special_tokens = True
    texts = _texts(run_dir)
    base = _rss_mb()
    encode = tokenizer.encode_batch_fast if fast else tokenizer.encode_batch
    clock = _Clock()
    tokens = 0
    for i in range(0, len(texts), BATCH):
        for encoding in encode(texts[i:i + BATCH], add_special_tokens=False):
            tokens += len(encoding.ids) + 1  # + the EOS every document gets
    return {"tokens": tokens, **clock.read(), "base_mb": base}


def measure_stage(run_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    from pipeline.runner import stage_input
    from stages.tokens.tokenize import Tokenize, TokenizeParams

    out = run_dir / "bench-tokens"
    shutil.rmtree(out, ignore_errors=True)
    stage = Tokenize("bench-tokens", TokenizeParams(**params), out)
    tasks = stage.tasks([stage_input(run_dir, "ingest"), stage_input(run_dir, "tokenizer")])
    path = tasks[-1].get("tokenizer")
    timed = _TimedEncode(stage._load_tokenizer(path))
    stage._tokenizer = (path, timed)
    base = _rss_mb()
    clock = _Clock()
    tokens = 0
    for task in tasks:
        info = stage.run_task(task).info
        tokens += sum(info[split]["tokens"] for split in ("train", "val") if split in info)
    times = clock.read()
    return {"tokens": tokens, **times, "base_mb": base, "encode_share": timed.cpu / times["cpu"]}


class _TimedEncode:
    """The stage's tokenizer with the CPU time of its encode calls counted: the share of the
    stage's CPU spent encoding is a within-run ratio, immune to the machine's load."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.cpu = inner, 0.0

    def encode_batch_fast(self, *args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return self.inner.encode_batch_fast(*args, **kwargs)
        finally:
            self.cpu += time.process_time() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def measure_datatrove(run_dir: Path) -> dict[str, Any]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.tokens import DocumentTokenizer

    out = Path(tempfile.mkdtemp(prefix="datatrove-tokens-"))
    base = _rss_mb()
    clock = _Clock()
    executor = LocalPipelineExecutor(
        pipeline=[
            ParquetReader(str(run_dir / "ingest" / "shards"), text_key="text", id_key="id"),
            DocumentTokenizer(str(out / "tokens"), str(run_dir / "tokenizer" / "tokenizer" / "tokenizer.json"),
                              eos_token="<|eos|>", shuffle_documents=False, batch_size=BATCH),
        ],
        tasks=1, workers=1, logging_dir=str(out / "logs"),
    )
    executor.run()  # workers=1: in this process, so its CPU time is ours
    times = clock.read()
    tokens = sum(os.path.getsize(p) // 2 for p in (out / "tokens").glob("*.ds"))  # uint16 ids
    shutil.rmtree(out, ignore_errors=True)
    return {"tokens": tokens, **times, "base_mb": base}


def _child(conn: Any, threads: int, func: str, args: tuple) -> None:
    if threads == 1:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    elif threads > 1:
        os.environ["RAYON_NUM_THREADS"] = str(threads)
    try:
        result = globals()[func](*args)
        result["peak_mb"] = _rss_mb()
        conn.send(result)
    except Exception as exc:  # reported as a row, the other measurements go on
        conn.send({"error": f"{type(exc).__name__}: {exc}"})


def in_child(threads: int, func: str, *args: Any) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_child, args=(child, threads, func, args))
    process.start()
    result = parent.recv()
    process.join()
    return result


# --- driver ------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="1: per core; 0: every core")
    parser.add_argument("--vocab", type=int, default=32_768)
    parser.add_argument("--train-mb", type=float, default=100.0, help="0 skips the training timing")
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs per method")
    parser.add_argument("--work-dir", help="keep the corpus and runs here (default: a temp dir)")
    args = parser.parse_args()
    threads = args.threads or len(os.sched_getaffinity(0))

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-tokenize-"))
    docs = corpus_documents()
    corpus_bytes = sum(len(d["text"].encode()) for d in docs)
    write_jsonl(docs, work / "corpus", files=8)
    run_dir = work / "run"
    start = time.perf_counter()
    run_pipeline(work / "corpus", run_dir, args.vocab, None)
    print(f"corpus: {len(docs):,} documents, {corpus_bytes / 1e6:.1f} MB; ingest + "
          f"{args.vocab:,}-token BPE in {time.perf_counter() - start:.1f} s; "
          f"threads per method: {threads} (of {os.cpu_count()} cores)\n")

    methods = [
        ("encode_batch (raw)", "measure_raw", (run_dir, False)),
        ("encode_batch_fast (raw)", "measure_raw", (run_dir, True)),
        ("lmforge tokenize", "measure_stage", (run_dir, {"val_fraction": 0.005, "threads": threads})),
        ("lmforge tokenize shuffle", "measure_stage",
         (run_dir, {"val_fraction": 0.005, "threads": threads, "shuffle": True})),
    ]
    try:
        import datatrove  # noqa: F401

        methods.append(("datatrove DocumentTokenizer", "measure_datatrove", (run_dir,)))
    except ImportError:
        print("datatrove is not installed: its row is left out (pip install 'lmforge[filter]')")
    # Best of N, methods interleaved: a shared machine's load hits them all alike.
    best: dict[str, dict[str, Any]] = {}
    for _ in range(args.repeats):
        for name, func, func_args in methods:
            r = in_child(args.threads, func, *func_args)
            if name not in best or "error" in best[name] or r.get("cpu", 1e9) < best[name]["cpu"]:
                best[name] = r
    rows = [(name, best[name]) for name, _, _ in methods]
    reference = rows[0][1]
    ref_rate = reference["tokens"] / reference["cpu"] if "tokens" in reference else None
    header = (f"{'method':<28} {'tokens':>10} {'wall s':>7} {'tokens/s':>10} {'cpu s':>7} "
              f"{'tokens/cpu-s':>12} {'vs encode_batch':>15} {'peak MB':>8} {'before work MB':>14}")
    print(header)
    print("-" * len(header))
    for name, r in rows:
        if "error" in r:
            print(f"{name:<28} {r['error']}")
            continue
        per_cpu = r["tokens"] / r["cpu"]
        ratio = f"{per_cpu / ref_rate:.0%}" if ref_rate else "-"
        print(f"{name:<28} {r['tokens']:>10,} {r['seconds']:>7.2f} {r['tokens'] / r['seconds']:>10,.0f} "
              f"{r['cpu']:>7.2f} {per_cpu:>12,.0f} {ratio:>15} {r['peak_mb']:>8.0f} {r['base_mb']:>14.0f}")
    print("(tokens/cpu-s: tokens per second of CPU time of the process, all its threads; "
          "'vs encode_batch' compares those)")
    for name, r in rows:
        if "encode_share" in r:
            print(f"{name}: {r['encode_share']:.1%} of its CPU time inside encode_batch_fast, so at "
                  f"equal load it runs at {r['encode_share']:.1%} of raw encode_batch_fast's speed "
                  f"(read Parquet, split, EOS, write and fsync shards: the rest)")

    if args.train_mb > 0:
        train_time(docs, corpus_bytes, work / "train", args.train_mb, args.vocab)
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)


def train_time(docs: list[dict[str, str]], corpus_bytes: int, train_dir: Path, train_mb: float,
               vocab: int) -> None:
    repeat = max(1, round(train_mb * 1e6 / corpus_bytes))
    write_jsonl(docs, train_dir / "corpus", files=8, repeat=repeat)
    start = time.perf_counter()
    run_pipeline(train_dir / "corpus", train_dir / "run", vocab, None)
    total = time.perf_counter() - start
    manifest = json.loads((train_dir / "run" / "tokenizer" / "manifest.json").read_text())
    task = manifest["tasks"]["tokenizer"]
    print(f"\nBPE training, {vocab:,} vocab, {task['counts']['bytes_out'] / 1e6:.0f} MB of text "
          f"(corpus x{repeat}): train_from_iterator {task['info']['train_seconds']:.1f} s, "
          f"train_tokenizer stage {task['seconds']:.1f} s (sampling passes + training + report), "
          f"ingest + stage {total:.1f} s")


if __name__ == "__main__":
    main()
