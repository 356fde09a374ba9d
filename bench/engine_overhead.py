"""Engine overhead: docs/s of ingest + filter over generated documents, per executor.

    python bench/engine_overhead.py [--docs 200000] [--files 20]

Runs the same two-stage config (jsonl ingest -> length/regex filter) on the local
executor and on dask with 1 and 2 worker processes, each from a cold run directory, and,
when datatrove is installed, the equivalent datatrove LocalPipelineExecutor pipeline
(JsonlReader -> LambdaFilter -> ParquetWriter) on the same files, in the same run. Prints
one table; never asserts on time.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import pipeline

WORDS = ("the of and to in is was for on that with as by at from his her they this "
         "river stone light bread city garden music paper window storm silver market "
         "winter harbour candle mirror").split()


def make_corpus(root: Path, docs: int, files: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    total_bytes = 0
    per_file = docs // files
    for f in range(files):
        lines = []
        for i in range(per_file):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 400)))
            lines.append(json.dumps({"id": f"{f}-{i}", "text": text}))
        data = "\n".join(lines) + "\n"
        total_bytes += len(data)
        (root / f"part-{f:03d}.jsonl").write_text(data)
    return total_bytes


def config(corpus: Path, run_dir: Path) -> dict:
    return {
        "name": "bench",
        "run_dir": str(run_dir),
        "stages": {
            "ingest": {"kind": "ingest", "params": {"paths": [str(corpus / "*.jsonl")],
                                                   "id_field": "id", "shard_size": 20_000}},
            "clean": {"kind": "filter", "inputs": ["ingest"],
                      "params": {"min_words": 50, "exclude_regex": [r"\bcandle mirror candle\b"]}},
        },
    }


def time_lmforge(corpus: Path, work: Path, executor: str, workers: int) -> tuple[float, int]:
    run_dir = work / f"run-{executor}-{workers}"
    start = time.perf_counter()
    outcomes = pipeline.run(config(corpus, run_dir), executor=executor, workers=workers)
    elapsed = time.perf_counter() - start
    shutil.rmtree(run_dir)
    return elapsed, outcomes[-1].counts.kept


def time_datatrove(corpus: Path, work: Path, workers: int) -> tuple[float, int] | None:
    try:
        from datatrove.executor import LocalPipelineExecutor
        from datatrove.pipeline.filters import LambdaFilter
        from datatrove.pipeline.readers import JsonlReader
        from datatrove.pipeline.writers import ParquetWriter
    except ImportError:
        return None
    import re

    pattern = re.compile(r"\bcandle mirror candle\b")
    files = len(list(corpus.glob("*.jsonl")))
    out = work / "datatrove"
    start = time.perf_counter()
    LocalPipelineExecutor(
        pipeline=[
            JsonlReader(str(corpus), glob_pattern="*.jsonl"),
            LambdaFilter(lambda d: len(d.text.split()) >= 50 and not pattern.search(d.text)),
            ParquetWriter(str(out / "out")),
        ],
        tasks=files,
        workers=workers,
        logging_dir=str(out / "logs"),
    ).run()
    elapsed = time.perf_counter() - start
    import pyarrow.parquet as pq

    kept = sum(pq.read_metadata(p).num_rows for p in (out / "out").glob("*.parquet"))
    shutil.rmtree(out)
    return elapsed, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=20)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lmforge-bench-"))
    corpus = work / "corpus"
    corpus.mkdir()
    size = make_corpus(corpus, args.docs, args.files)
    print(f"corpus: {args.docs:,} documents, {size / 1e6:.1f} MB in {args.files} jsonl files\n")

    rows = [
        ("lmforge local", *time_lmforge(corpus, work, "local", 1)),
        ("lmforge dask, 1 worker", *time_lmforge(corpus, work, "dask", 1)),
        ("lmforge dask, 2 workers", *time_lmforge(corpus, work, "dask", 2)),
    ]
    for workers in (1, 2):
        result = time_datatrove(corpus, work, workers)
        if result is None:
            print("datatrove not installed: reference rows skipped")
            break
        rows.append((f"datatrove local, {workers} worker(s)", *result))

    print(f"{'pipeline (ingest + filter)':<32} {'seconds':>8} {'docs/s':>10} {'MB/s':>7} {'kept':>9}")
    for name, seconds, kept in rows:
        print(f"{name:<32} {seconds:>8.2f} {args.docs / seconds:>10,.0f} "
              f"{size / 1e6 / seconds:>7.1f} {kept:>9,}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
