"""`extract`: page HTML to its main text, with trafilatura (FineWeb's) or resiliparse (DCLM's).

Input: documents whose `text` is HTML (from `ingest_warc`, or any doc shard). Documents
marked `metadata.format == "text"` (WET conversion records) are already text and pass
through unchanged. Output: `text` is the main text; metadata gains `title`, `date` (the
page's own publication date when it declares one, else the WARC date), `engine`, and
keeps the url and everything upstream put there.

Engines, as the reference pipelines call them:
- `trafilatura`: `trafilatura.extract(favor_precision=True, include_comments=False)` as in
  FineWeb, except `deduplicate` defaults to False: trafilatura's duplicate filter is an LRU
  cache shared across documents, so its output would depend on which documents a worker
  saw before, breaking byte-identical output across executors.
- `resiliparse`: `extract_plain_text(main_content=True, alt_texts=False,
  preserve_formatting=True)` as in DCLM; an order of magnitude faster.

Limits: a page over `max_html_bytes` (UTF-8 bytes, default 2 MB) is rejected as
`oversize:html` before parsing, and rejected/ keeps only its first `rejected_prefix_chars`
characters; one whose extraction runs past `timeout_seconds` is rejected as `timeout` and
kept in rejected/ (datatrove drops these uncounted); empty output is rejected as `empty`.
With `isolate: process` (the default for trafilatura) the engine runs in a child process
that is killed at the time limit and restarted, so one pathological page costs at most
`timeout_seconds` of CPU time (wall time capped at 4x that) and never stalls the worker; the child is spawned with `subprocess`
because dask worker processes are daemonic and may not fork multiprocessing children.
With `isolate: inline` (the default for resiliparse, whose C++ parser is linear in the
input) the CPU time is measured and an overrun is rejected after the fact. Limits are in
CPU seconds so that a loaded machine does not change which documents time out.

Memory: one page at a time, at most `max_html_bytes` of it handed to the engine. A
1.9 MB page of 19,000 nested paragraphs peaked at 286 MB RSS with trafilatura (worker and
its child, killed at the time limit) and 159 MB with resiliparse, against 82 MB for the
imports alone. The engine's child is restarted after a timeout. The rest is the engine's
row batches (pipeline/artifacts.py).
"""

from __future__ import annotations

import html as html_lib
import os
import pickle
import re
import select
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipeline.documents import Document, Rejected
from pipeline.stage import DocStage, Params

_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.I | re.S)
_META = re.compile(r"<meta\s[^>]*>", re.I)
_ATTR = re.compile(r"""([a-zA-Z_:.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""")
_TIME = re.compile(r"""<time\s[^>]*datetime\s*=\s*["']([^"']+)["']""", re.I)
_DATE_KEYS = ("article:published_time", "datepublished", "date", "dc.date",
              "dc.date.issued", "dcterms.created", "og:published_time", "pubdate")
HEAD_CHARS = 65_536  # title and date live in the head; never scan a whole page for them
_LEN = struct.Struct("!I")
STARTUP_SECONDS = 120
WALL_FACTOR = 4  # a page may take this many times its CPU limit in wall time on a busy machine
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ExtractParams(Params):
    engine: Literal["trafilatura", "resiliparse"] = "trafilatura"
    timeout_seconds: float = Field(default=5.0, gt=0.0)
    max_html_bytes: int = Field(default=2_000_000, ge=1)
    rejected_prefix_chars: int = Field(default=20_000, ge=0)  # of an oversize page
    isolate: Literal["auto", "process", "inline"] = "auto"
    favor_precision: bool = True  # trafilatura
    include_tables: bool = True  # trafilatura
    deduplicate: bool = False  # trafilatura; see the module docstring before enabling


class Extract(DocStage):
    kind = "extract"
    version = 1
    Params = ExtractParams

    def apply(self, doc: Document) -> Document | Rejected:
        if doc.metadata.get("format") == "text":
            return doc
        if utf8_size_over(doc.text, self.params.max_html_bytes):
            # rejected/ keeps a prefix: the page is already too big to store again whole
            metadata = dict(doc.metadata, max_html_bytes=self.params.max_html_bytes)
            head = doc.text[:self.params.rejected_prefix_chars]
            return Rejected(Document(id=doc.id, text=head, url=doc.url, source=doc.source,
                                     metadata=metadata, columns=doc.columns), "oversize:html")
        try:
            text = self._engine().extract(doc.text)
        except _Timeout:
            return Rejected(doc, "timeout")
        if not text or not text.strip():
            return Rejected(doc, "empty")
        title, date = page_title_and_date(doc.text)
        metadata = dict(doc.metadata)
        metadata.pop("format", None)
        metadata.update(title=title, date=date or doc.metadata.get("warc_date"),
                        engine=self.params.engine)
        return Document(id=doc.id, text=text.strip(), url=doc.url, source=doc.source,
                        metadata=metadata, columns=doc.columns)

    def _engine(self):
        if getattr(self, "_runner", None) is None:
            options = self.params.model_dump()
            isolate = self.params.isolate
            if isolate == "auto":
                isolate = "process" if self.params.engine == "trafilatura" else "inline"
            self._runner = (_Sandbox(options) if isolate == "process" else _Inline(options))
        return self._runner


def utf8_size_over(text: str, limit: int) -> bool:
    """Whether `text` takes more than `limit` bytes in UTF-8, without encoding it if it can."""
    if len(text) > limit:
        return True
    if len(text) * 4 <= limit or text.isascii():
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


def page_title_and_date(html: str) -> tuple[str | None, str | None]:
    """The <title> (or og:title) and a declared publication date, from the page head."""
    head = html[:HEAD_CHARS]
    title = None
    m = _TITLE.search(head)
    if m:
        title = " ".join(html_lib.unescape(re.sub(r"<[^>]+>", "", m.group(1))).split()) or None
    date = None
    for tag in _META.findall(head):
        attrs = {k.lower(): next(v for v in vals if v) if any(vals) else ""
                 for k, *vals in _ATTR.findall(tag)}
        key = (attrs.get("property") or attrs.get("name") or attrs.get("itemprop") or "").lower()
        if not title and key == "og:title":
            title = attrs.get("content") or None
        if date is None and key in _DATE_KEYS and attrs.get("content"):
            date = attrs["content"].strip()
    if date is None:
        m = _TIME.search(html[:HEAD_CHARS * 4])
        date = m.group(1).strip() if m else None
    return title, date


def extract_text(options: dict[str, Any], html: str) -> str | None:
    """Run one engine on one page (in this process)."""
    if options["engine"] == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text

        return extract_plain_text(html, main_content=True, alt_texts=False,
                                  preserve_formatting=True)
    import trafilatura

    return trafilatura.extract(
        html, favor_precision=options["favor_precision"], include_comments=False,
        include_tables=options["include_tables"], deduplicate=options["deduplicate"],
    )


class _Timeout(Exception):
    pass


class _Inline:
    def __init__(self, options: dict[str, Any]):
        self.options = options

    def extract(self, html: str) -> str | None:
        start = time.process_time()
        text = extract_text(self.options, html)
        if time.process_time() - start > self.options["timeout_seconds"]:
            raise _Timeout()  # cannot interrupt C++ code: judged after the fact
        return text


class _Sandbox:
    """The engine in a child process: killed and restarted when a page runs too long."""

    def __init__(self, options: dict[str, Any]):
        self.options = options
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from stages.ingest.extract import _child_main; _child_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        _send(self.proc.stdin, self.options)
        # Imports and a first warm-up page are not any document's fault: wait for them here.
        try:
            _receive(self.proc.stdout, time.monotonic() + STARTUP_SECONDS)
        except (_Timeout, EOFError):
            self.stop()
            raise RuntimeError("the extraction process did not start") from None

    def extract(self, html: str) -> str | None:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        _send(self.proc.stdin, html)
        limit = self.options["timeout_seconds"]
        cpu_start, wall_cap = self._cpu(), time.monotonic() + limit * WALL_FACTOR
        try:
            # The limit is CPU time of the child, so a busy machine does not turn slow
            # scheduling into timeouts (outcomes stay the same on any executor); wall time
            # is capped at WALL_FACTOR x the limit all the same.
            while not _readable(self.proc.stdout, limit - (self._cpu() - cpu_start), wall_cap):
                if self._cpu() - cpu_start >= limit or time.monotonic() >= wall_cap:
                    raise _Timeout()
            ok, value = _receive(self.proc.stdout, wall_cap)
        except _Timeout:
            self.stop()
            raise
        except EOFError:
            self.stop()
            raise RuntimeError("the extraction process died") from None
        if not ok:
            raise RuntimeError(value)
        return value

    def _cpu(self) -> float:
        """CPU seconds the child has used (wall seconds where /proc is missing)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        except (OSError, IndexError, ValueError):
            return time.monotonic()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                pipe.close()
            self.proc = None

    def __del__(self):
        try:
            self.stop()
        except Exception:
            pass


def _send(pipe, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.write(_LEN.pack(len(data)) + data)
    pipe.flush()


def _readable(pipe, cpu_left: float, wall_cap: float) -> bool:
    """Wait until the child answers, for at most the CPU time it has left (a lower bound)."""
    wait = max(0.0, min(cpu_left, wall_cap - time.monotonic()))
    return bool(select.select([pipe.fileno()], [], [], wait)[0])


def _read_exact(pipe, n: int, deadline: float | None) -> bytes:
    fd = pipe.fileno()
    out = bytearray()
    while len(out) < n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise _Timeout()
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise EOFError()
        out += chunk
    return bytes(out)


def _receive(pipe, deadline: float | None) -> Any:
    (size,) = _LEN.unpack(_read_exact(pipe, _LEN.size, deadline))
    return pickle.loads(_read_exact(pipe, size, deadline))


def _child_main() -> None:
    """The extraction process: read options, then pages until stdin closes."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a library that prints must not corrupt the protocol
    try:
        options = _receive(stdin, None)
        extract_text(options, "<html><body><p>warm up</p></body></html>")
        _send(stdout, (True, "ready"))
        while True:
            html = _receive(stdin, None)
            try:
                result = (True, extract_text(options, html))
            except Exception as exc:  # reported to the parent, counted as an error there
                result = (False, f"{type(exc).__name__}: {exc}")
            _send(stdout, result)
    except EOFError:
        return
