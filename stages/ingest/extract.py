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
Limits are in CPU seconds so that a loaded machine does not change which documents time out.

Isolation. With `isolate: process` (the default, `auto`, for both engines) the engine runs
in a child process. Neither engine can be interrupted from Python (resiliparse's parser is
C++, and its cost grows super-linearly with nesting depth: 32,000 nested <div>s take 48 CPU
seconds, 100,000 over 10 minutes), so the child limits itself: before each page it arms a
CPU-time timer (`ITIMER_PROF`) of `timeout_seconds` whose signal ends the process wherever
it is. The parent rejects that page as `timeout`, starts a fresh child and goes on with the
next page. Pages travel in batches (up to `BATCH_PAGES` pages or `BATCH_CHARS` characters:
one write, then the answers as they come) so that the worker and its child do not wait on
each other page by page; resiliparse takes about a millisecond a page, and batches of one
cost it 5% more CPU and 9% more wall time than batches of 64. The child still costs
resiliparse about 15% more CPU per page than running inline (each page is encoded, copied
through a pipe and decoded again, and so is its text), plus about 0.25 s per child start
(imports); the timer itself costs nothing measurable. One pathological page thus costs at
most `timeout_seconds` of CPU time plus a child start and never stalls the worker. As a
backstop, a page whose answer takes over `WALL_FACTOR` x the limit in wall time (a child
that is stopped, or starved of CPU) is killed and rejected the same way. The child is
spawned with `subprocess` because dask worker processes are daemonic and may not fork
multiprocessing children. With `isolate: inline` the engine runs in the worker and the CPU
time is judged after the call returns: a page over the limit is rejected, but only once it
has finished, so inline is for trusted input.

Memory: one page at a time in the engine, at most `max_html_bytes` of it. With `isolate:
process` the worker also holds one batch (at most `BATCH_CHARS` characters of HTML, or one
bigger page) and, while sending it, its pickled copy; the child holds the same batch.
Measured on this stage alone with a 2 MB page of 19,000 paragraphs: the worker peaked at
95 MB (94 MB for the imports alone), its child at 114 MB with resiliparse and 199 MB with
trafilatura (resiliparse inline: 115 MB in the worker); a resiliparse child killed at the
time limit on 100,000 nested <div>s (1.2 MB) had reached 133 MB. The rest is the engine's
row batches (pipeline/artifacts.py).
"""

from __future__ import annotations

import html as html_lib
import os
import pickle
import re
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
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
# Pages per call to the extraction process, or characters of HTML, whichever comes first
# (a bigger page goes alone).
BATCH_PAGES = 64
BATCH_CHARS = 4_000_000


class ExtractParams(Params):
    engine: Literal["trafilatura", "resiliparse"] = "trafilatura"
    timeout_seconds: float = Field(default=5.0, gt=0.0)
    max_html_bytes: int = Field(default=2_000_000, ge=1)
    rejected_prefix_chars: int = Field(default=20_000, ge=0)  # of an oversize page
    isolate: Literal["auto", "process", "inline"] = "auto"  # auto: process (module docstring)
    favor_precision: bool = True  # trafilatura
    include_tables: bool = True  # trafilatura
    deduplicate: bool = False  # trafilatura; see the module docstring before enabling


class Extract(DocStage):
    kind = "extract"
    version = 1
    Params = ExtractParams

    def process(self, docs: Iterable[Document]) -> Iterator[Document | Rejected]:
        # The engine gets a batch of pages per call; the rest is `apply`, one page at a time.
        for batch in _batches(docs, BATCH_PAGES, BATCH_CHARS):
            pages = [doc for doc in batch if self._needs_engine(doc)]
            outcomes = self._engine().extract_many([doc.text for doc in pages]) if pages else []
            self._extracted = dict(zip(map(id, pages), outcomes))
            yield from super().process(batch)
        self._extracted = {}

    def apply(self, doc: Document) -> Document | Rejected:
        if doc.metadata.get("format") == "text":
            return doc
        if utf8_size_over(doc.text, self.params.max_html_bytes):
            # rejected/ keeps a prefix: the page is already too big to store again whole
            metadata = dict(doc.metadata, max_html_bytes=self.params.max_html_bytes)
            head = doc.text[:self.params.rejected_prefix_chars]
            return Rejected(Document(id=doc.id, text=head, url=doc.url, source=doc.source,
                                     metadata=metadata, columns=doc.columns), "oversize:html")
        extracted = getattr(self, "_extracted", {})
        if id(doc) in extracted:  # extracted in its batch by `process`
            text = extracted.pop(id(doc))
        else:
            [text] = self._engine().extract_many([doc.text])
        if isinstance(text, _Timeout):
            return Rejected(doc, "timeout")
        if isinstance(text, Exception):
            raise text  # the engine failed on this page: counted as error:<type>
        if not text or not text.strip():
            return Rejected(doc, "empty")
        title, date = page_title_and_date(doc.text)
        metadata = dict(doc.metadata)
        metadata.pop("format", None)
        metadata.update(title=title, date=date or doc.metadata.get("warc_date"),
                        engine=self.params.engine)
        return Document(id=doc.id, text=text.strip(), url=doc.url, source=doc.source,
                        metadata=metadata, columns=doc.columns)

    def _needs_engine(self, doc: Document) -> bool:
        return (doc.metadata.get("format") != "text"
                and not utf8_size_over(doc.text, self.params.max_html_bytes))

    def _engine(self) -> _Inline | _Sandbox:
        if getattr(self, "_runner", None) is None:
            options = self.params.model_dump()
            inline = self.params.isolate == "inline"
            self._runner = _Inline(options) if inline else _Sandbox(options)
        return self._runner


def _batches(docs: Iterable[Document], max_pages: int, max_chars: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    chars = 0
    for doc in docs:
        if batch and (len(batch) == max_pages or chars + len(doc.text) > max_chars):
            yield batch
            batch, chars = [], 0
        batch.append(doc)
        chars += len(doc.text)
    if batch:
        yield batch


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
    """A page ran past the time limit: raised at a wall-time deadline, and an outcome of
    `extract_many`."""


Outcome = str | None | Exception  # the engine's text, or why there is none


class _Inline:
    """The engine in this process: a page over the limit is judged after it returns."""

    def __init__(self, options: dict[str, Any]):
        self.options = options

    def extract_many(self, pages: list[str]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for html in pages:
            start = time.process_time()
            try:
                text: Outcome = extract_text(self.options, html)
            except Exception as exc:
                text = exc
            if time.process_time() - start > self.options["timeout_seconds"]:
                text = _Timeout()  # cannot interrupt C++ code: judged after the fact
            outcomes.append(text)
        return outcomes


class _Sandbox:
    """The engine in a child process that ends itself on a page over the CPU limit; the
    parent then starts a fresh one for the rest of the batch (module docstring)."""

    def __init__(self, options: dict[str, Any]):
        self.options = options
        self.proc: subprocess.Popen | None = None

    def extract_many(self, pages: list[str]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        while len(outcomes) < len(pages):
            outcomes += self._run(pages[len(outcomes):])
        return outcomes

    def _run(self, pages: list[str]) -> list[Outcome]:
        """Outcomes of all of `pages`, or of those up to the one the child died on."""
        fresh = self.proc is None or self.proc.poll() is not None
        if fresh:
            self.stop()
            try:
                self._start()
            except RuntimeError as exc:
                return [exc] * len(pages)
        wall_limit = self.options["timeout_seconds"] * WALL_FACTOR
        try:
            _send(self.proc.stdin, pages, time.monotonic() + wall_limit)
        except (OSError, _Timeout) as exc:
            code = self.stop()
            if not fresh:  # it died or hung idle, between batches: no page's fault
                return []
            if isinstance(exc, _Timeout):
                return [exc]
            return [RuntimeError(f"the extraction process died (exit status {code})")]
        outcomes: list[Outcome] = []
        try:
            for _ in pages:
                ok, value = _receive(self.proc.stdout, time.monotonic() + wall_limit)
                outcomes.append(value if ok else RuntimeError(value))
        except _Timeout:  # the wall-time backstop
            self.stop()
            outcomes.append(_Timeout())
        except EOFError:
            code = self.stop()
            if code == -signal.SIGPROF:  # the child's own CPU-time limit
                outcomes.append(_Timeout())
            else:
                outcomes.append(RuntimeError(f"the extraction process died (exit status {code})"))
        return outcomes

    def _start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        # This module's imports bring numpy: its BLAS threads, never used here, cost the
        # child's every start about 0.1 s of CPU.
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from stages.ingest.extract import _child_main; _child_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        os.set_blocking(self.proc.stdin.fileno(), False)  # sending, too, has a deadline
        # Imports and a first warm-up page are not any document's fault: wait for them here.
        deadline = time.monotonic() + STARTUP_SECONDS
        try:
            _send(self.proc.stdin, self.options, deadline)
            _receive(self.proc.stdout, deadline)
        except (_Timeout, EOFError, OSError):
            self.stop()
            raise RuntimeError("the extraction process did not start") from None

    def stop(self) -> int | None:
        """Kill the child (if it still runs); its exit status."""
        if self.proc is None:
            return None
        self.proc.kill()
        code = self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:  # unflushed input to a dead child
                pass
        self.proc = None
        return code

    def __del__(self):
        try:
            self.stop()
        except Exception:
            pass


def _send(pipe, obj: Any, deadline: float | None = None) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    for part in (_LEN.pack(len(data)), data):  # apart: a batch is megabytes, not worth a copy
        _write_all(pipe.fileno(), part, deadline)


def _write_all(fd: int, data: bytes, deadline: float | None) -> None:
    """Write all of `data`; with a deadline, `fd` must be non-blocking."""
    view = memoryview(data)
    while view:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
                raise _Timeout()
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            continue


def _read_exact(pipe, n: int, deadline: float | None) -> bytearray:
    fd = pipe.fileno()
    out = bytearray(n)
    view = memoryview(out)
    got = 0
    while got < n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise _Timeout()
        count = os.readv(fd, [view[got:]])  # in place: a batch is megabytes
        if not count:
            raise EOFError()
        got += count
    return out


def _receive(pipe, deadline: float | None) -> Any:
    (size,) = _LEN.unpack(_read_exact(pipe, _LEN.size, deadline))
    return pickle.loads(_read_exact(pipe, size, deadline))


def _child_main() -> None:
    """The extraction process: read options, then batches of pages until stdin closes,
    answering each page as it is done; a page over the CPU limit ends the process."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a library that prints must not corrupt the protocol
    signal.signal(signal.SIGPROF, signal.SIG_DFL)  # the default action ends the process
    try:
        options = _receive(stdin, None)
        limit = options["timeout_seconds"]
        extract_text(options, "<html><body><p>warm up</p></body></html>")
        _send(stdout, (True, "ready"))
        while True:
            for html in _receive(stdin, None):
                # ITIMER_PROF counts this process's CPU time, user and system, and its
                # signal ends the process even inside C++ code (which Python cannot stop).
                signal.setitimer(signal.ITIMER_PROF, limit)
                try:
                    result = (True, extract_text(options, html))
                except Exception as exc:  # reported to the parent, counted as an error there
                    result = (False, f"{type(exc).__name__}: {exc}")
                finally:
                    signal.setitimer(signal.ITIMER_PROF, 0)
                _send(stdout, result)
    except EOFError:
        return
