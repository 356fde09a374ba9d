"""Benchmark: WARC -> main text, documents/s per core, ours (both engines) vs datatrove.

    python bench/extract.py                  # Python docs HTML packed into a WARC, else iana
    python bench/extract.py --warc FILE.warc.gz [--limit N]
    python bench/extract.py --html-dir DIR [--limit N]   # any folder of .html pages

All three paths read the same WARC file, each in its own subprocess, serially. The rate per
core is documents / CPU seconds (user + system) of that subprocess and of the extraction
child it starts (both lmforge and datatrove sandbox trafilatura in a child process), taken
from getrusage(RUSAGE_CHILDREN), so a machine shared with other work does not distort it;
CPU seconds include start-up (imports: about a second). Wall seconds are shown too. Rows:
- `lmforge resiliparse`: `ingest_warc` reader + `extract` (engine resiliparse, in its
  sandboxed child, pages sent in batches: the default);
- `lmforge resiliparse inline`: the same with `isolate: inline` (no child, no time limit
  that can stop a page);
- `lmforge trafilatura`: `ingest_warc` reader + `extract` (engine trafilatura, sandboxed);
- `datatrove trafilatura`: datatrove `WarcReader` + `Trafilatura` with its defaults (FineWeb's
  settings: favour_precision, deduplicate, a 1 s sandboxed timeout).
The default input is the 530-page Python 3.11 documentation (Debian python3.11-doc: real
pages with navigation boilerplate) written into one WARC as a crawler would; without that
package, the iana.org crawl in tests/data (16 HTML pages); `--html-dir` packs any other
folder of pages the same way (e.g. a Rust toolchain's `share/doc/rust/html`). datatrove needs the
`python-magic` binding and Debian's libmagic1; without them its row is skipped with a note.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run as `python bench/extract.py`, bench/ would come first on sys.path, where sibling
# scripts (bench/tokenize.py) shadow standard modules: import from the repository instead.
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

PY_DOCS = Path("/usr/share/doc/python3.11/html")
FALLBACK = REPO / "tests" / "data" / "warc" / "iana.warc.gz"


def docs_warc(out: Path, limit: int | None, root: Path = PY_DOCS,
              base_url: str = "https://docs.python.org/3.11/") -> Path:
    """A folder's HTML pages (the Python docs') as WARC response records (content as served)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    pages = sorted(p for p in root.rglob("*.html") if "_sources" not in p.parts)[:limit]
    with open(out, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for page in pages:
            body = page.read_bytes()
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                               ("Content-Length", str(len(body)))],
                                    protocol="HTTP/1.1")
            url = base_url + page.relative_to(root).as_posix()
            writer.write_record(writer.create_warc_record(url, "response",
                                                          payload=BytesIO(body),
                                                          http_headers=http))
    return out


def ours(warc: Path, engine: str, limit: int | None,
         isolate: str = "auto") -> tuple[int, int, float]:
    from pipeline.documents import Rejected
    from pipeline.stage import Task
    from stages.ingest.extract import Extract, ExtractParams
    from stages.ingest.warc import IngestWarc, IngestWarcParams

    tmp = Path(tempfile.mkdtemp())
    reader = IngestWarc("pages", IngestWarcParams(paths=[str(warc)]), tmp / "pages")
    extract = Extract("text", ExtractParams(engine=engine, isolate=isolate), tmp / "text")
    task = Task(name="00000", inputs=(str(warc),), payload=(("source", warc.name),))
    counted = {"in": 0}

    def pages():
        for item in reader.read(task):
            if isinstance(item, Rejected):
                continue
            counted["in"] += 1
            yield item
            if limit and counted["in"] >= limit:
                return

    start = time.perf_counter()
    # `process`, as a task runs it: it sends the engine's child pages in batches.
    n_out = sum(not isinstance(out, Rejected) for out in extract.process(pages()))
    n_in = counted["in"]
    seconds = time.perf_counter() - start
    if getattr(extract, "_runner", None) is not None and hasattr(extract._runner, "stop"):
        extract._runner.stop()  # reap the sandbox so its CPU time is counted
    return n_in, n_out, seconds


def datatrove(warc: Path, limit: int | None) -> tuple[int, int, float] | str:
    try:
        import magic  # noqa: F401  (datatrove's WarcReader needs it)
        from datatrove.pipeline.extractors import Trafilatura
        from datatrove.pipeline.readers import WarcReader
    except ImportError as exc:
        return f"skipped: {exc} (pip install datatrove[io] python-magic; apt-get install libmagic1)"
    reader = WarcReader(str(warc.parent), glob_pattern=warc.name, limit=limit or -1)
    extractor = Trafilatura()
    counted = {"in": 0}

    def counted_docs():
        for doc in reader.run(None, rank=0, world_size=1):
            counted["in"] += 1
            yield doc

    start = time.perf_counter()
    n_out = sum(1 for _ in extractor.run(counted_docs(), rank=0, world_size=1))
    return counted["in"], n_out, time.perf_counter() - start


PATHS = {
    "lmforge resiliparse": lambda warc, limit: ours(warc, "resiliparse", limit),
    "lmforge resiliparse inline": lambda warc, limit: ours(warc, "resiliparse", limit, "inline"),
    "lmforge trafilatura": lambda warc, limit: ours(warc, "trafilatura", limit),
    "datatrove trafilatura": datatrove,
}


def measure(name: str, warc: Path, limit: int | None) -> tuple[int, int, float, float] | str:
    """Run one path in a subprocess; (docs in, docs out, wall s, CPU s) or a skip note."""
    import json
    import resource
    import subprocess

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [sys.executable, __file__, "--one", name, "--warc", str(warc)]
    if limit:
        cmd += ["--limit", str(limit)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        return f"failed: {out.stderr.strip().splitlines()[-1:]}"
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if isinstance(result, str):
        return result
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result[0], result[1], result[2], cpu


def main() -> None:
    import json

    parser = argparse.ArgumentParser()
    parser.add_argument("--warc", type=Path)
    parser.add_argument("--html-dir", type=Path, help="pack this folder's .html pages")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=list(PATHS),
                        help="the rows to measure (default: all)")
    parser.add_argument("--one", choices=sorted(PATHS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(PATHS[args.one](args.warc, args.limit)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.warc:
            warc, what = args.warc, str(args.warc)
        elif args.html_dir:
            warc = docs_warc(Path(tmp) / "pages.warc.gz", args.limit, args.html_dir,
                             "https://pages.test/")
            what = f"{args.html_dir} as one WARC"
        elif PY_DOCS.is_dir():
            warc = docs_warc(Path(tmp) / "pydocs.warc.gz", args.limit)
            what = f"Python 3.11 docs ({PY_DOCS}) as one WARC"
        else:
            warc, what = FALLBACK, f"{FALLBACK.name} (python3.11-doc not installed)"
        print(f"input: {what}, {warc.stat().st_size / 1e6:.1f} MB")
        rows = [(name, measure(name, warc, args.limit)) for name in args.paths]
    baseline = dict(rows).get("datatrove trafilatura", "not measured")
    base_rate = baseline[0] / baseline[3] if not isinstance(baseline, str) else None
    print(f"\n{'path':26} {'docs in':>8} {'docs out':>9} {'wall s':>8} {'CPU s':>8} "
          f"{'docs/s/core':>12} {'vs datatrove':>13}")
    for name, result in rows:
        if isinstance(result, str):
            print(f"{name:26} {result}")
            continue
        n_in, n_out, wall, cpu = result
        rate = n_in / cpu
        ratio = f"{rate / base_rate:.2f}x" if base_rate else "-"
        print(f"{name:26} {n_in:8d} {n_out:9d} {wall:8.2f} {cpu:8.2f} {rate:12.1f} {ratio:>13}")


if __name__ == "__main__":
    main()
