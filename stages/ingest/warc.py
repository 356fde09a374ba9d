"""`ingest_warc`: WARC, ARC and WET files into documents holding the page's HTML.

Inputs: `params.paths` (files, globs, fsspec URLs) and/or the WARC files an upstream
`crawl` stage committed. One task per file, sorted; shards rotate every `shard_size`.

Output: one document per HTML `response` (or `resource`) record with status 200, its
`text` the page HTML decoded to str, `metadata.format = "html"`; one document per WET
`conversion` record, `metadata.format = "text"`. The raw HTML stays in `text` so that
`extract` can be rerun with another engine without rereading WARC files; `extract`
replaces it with the main text. Ids are `<source>#<record ordinal>`; metadata keeps the
WARC record id, date, MIME type, HTTP status and the charset with where it came from.

Every record is counted once (`in` = records + damaged spans):
- dropped: `warc_type:<request|warcinfo|metadata|...>`, `revisit`, `http_<status>`,
  `not_html`, `empty_payload`, `oversize:record`, `oversize:decoded_body`, `arc_header`;
- errors: `undecodable` (no charset decodes the page), `content_encoding`,
  `malformed_http`, `malformed_record` (bad header block), `garbage` (bytes between
  records), `truncated_record`, `corrupt:gz`, `truncated:gz` (the reasons `ingest` gives a
  damaged .gz), `unreadable_file`, `empty_file`, `not_a_regular_file` (a FIFO, socket or device a glob
  matched: never opened, it could block forever; one error, as for `ingest`).

The reader is our own and reads damaged files to the end: gzip members are inflated one
after another with zlib (a corrupt member: skip to the next gzip header; a file that is a
single gzip stream rather than one member per record, as warcio refuses, reads fine), and
record framing resynchronizes on the next `WARC/1.x` line after garbage or a bad header.
A truncated last member is reported as `truncated:gz`, never taken as a clean end. Only
gzip is inflated: a .warc.zst/.bz2/.xz is read as it is stored, which is `garbage`.
A file name that is not UTF-8 is read under its name with those bytes escaped.

Charset: the HTTP header, then a `<meta>` declaration in the first 4 KiB, then
detection with charset-normalizer; a page that decodes under none without replacement
characters (more than 1% of them) is `undecodable`. Labels map as browsers do
(iso-8859-1 and ascii read as windows-1252); a label naming a Python codec that is no web
charset (base64, idna, unicode_escape, utf-7, ...) is ignored, as browsers ignore it.

Size caps, enforced while the bytes stream (nothing is decoded whole and measured after):
- `max_record_bytes` (default 20 MB): a record block as stored, after the file's own gzip.
  A longer record is `oversize:record`; only its first `rejected_prefix_bytes` are read,
  the rest is skipped as it streams by.
- `max_body_bytes` (default 10 MB): the HTTP payload once Transfer-Encoding chunked and
  Content-Encoding gzip/deflate/br are undone (WET text: the record). Decoding stops at the
  cap: the record is `oversize:decoded_body` (a 1 MiB gzip bomb that would inflate to
  1 GiB costs 10 MB, and the time to inflate 10 MB).
- `rejected_prefix_bytes` (default 20,000): how much of an oversize or damaged record
  rejected/ keeps, decoded where it can be.
Type and status are judged from the headers first, so a big image is `not_html`, and its
body is never decoded.

Memory: inflating the file never produces more than 1 MiB per call (a gzip member that
inflates to 1 GiB streams through); skipping garbage or an oversize record holds one
block. One record in flight costs at most about 2 x `max_record_bytes` (read buffer and
block) + 2 x `max_body_bytes` (decoded bytes and str; 4x for text outside the BMP): about
100 MB with the defaults, whatever the file holds. Documents then wait in the engine's
row batches (pipeline/artifacts.py).
"""

from __future__ import annotations

import codecs
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
from pydantic import Field

from pipeline.documents import Document, Rejected
from pipeline.inputs import expand_paths, fingerprint_files
from pipeline.stage import DocStage, Params, StageInput, Task
from stages.ingest.files import not_a_regular_file, printable

BLOCK = 1 << 20
MAX_HEADER_BYTES = 64 * 1024
MAX_RECORD_BYTES = 20_000_000  # a record block as stored, read into memory whole
MAX_BODY_BYTES = 10_000_000  # an HTTP payload once chunking and compression are undone
REJECTED_PREFIX_BYTES = 20_000  # how much of a damaged or oversize record rejected/ keeps
CHUNK_LINE_BYTES = 4096  # a chunk-size line (with extensions) is never longer
HTML_TYPES = ("text/html", "application/xhtml+xml")
SNIFFED_TYPES = ("", "unknown", "application/octet-stream", "text/plain")  # HTML if it looks so
WARC_SUFFIXES = (".warc", ".arc", ".wet")
# WHATWG encoding labels that differ from Python's codecs.
CHARSET_ALIASES = {"iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
                   "us-ascii": "cp1252", "ascii": "cp1252", "iso8859-1": "cp1252",
                   "x-sjis": "shift_jis", "shift-jis": "shift_jis", "gb2312": "gb18030",
                   "gbk": "gb18030", "x-user-defined": "cp1252"}
# Python codecs that are no web charset (bytes -> bytes transforms such as base64 are
# refused by `_codec` too): they decode, but into what no browser shows, or lone surrogates.
NOT_WEB_CHARSETS = {"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape",
                    "utf-7"}
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.I)
_ARC_HEADER = re.compile(rb"^(\S+) (\S+) (\d{8,}) (\S*) (\d+)(?: .*)?$")


class IngestWarcParams(Params):
    paths: list[str] = []  # files, globs or fsspec URLs; upstream crawl WARCs are added
    shard_size: int = Field(default=10_000, ge=1)
    max_record_bytes: int = Field(default=MAX_RECORD_BYTES, ge=1)
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1)
    rejected_prefix_bytes: int = Field(default=REJECTED_PREFIX_BYTES, ge=0)


class IngestWarc(DocStage):
    kind = "ingest_warc"
    version = 1
    Params = IngestWarcParams

    @property
    def max_docs_per_shard(self) -> int:
        return self.params.shard_size

    def files(self, inputs: list[StageInput] = ()) -> list[tuple[str, str]]:
        """(url, source) for every input file; source is what document ids start with."""
        found = ([(url, printable(source)) for url, source in
                  expand_paths(self.params.paths, f"stage '{self.name}': params.paths")]
                 if self.params.paths else [])
        for inp in inputs:
            found += [(f, f"{inp.name}/{Path(f).name}") for f in inp.files
                      if any(s in Path(f).name for s in WARC_SUFFIXES)]
        if not self.params.paths and not inputs:
            raise FileNotFoundError(f"stage '{self.name}': no WARC/ARC/WET input "
                                    "(set params.paths or give a crawl stage as input)")
        return found

    def fingerprint(self) -> Any:
        return fingerprint_files(self.files()) if self.params.paths else []

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        return [Task(name=f"{i:05d}", inputs=(url,), payload=(("source", source),))
                for i, (url, source) in enumerate(self.files(inputs))]

    def input_score_columns(self, task: Task) -> dict:
        return {}

    def apply(self, doc: Document) -> Document:
        return doc

    def read(self, task: Task) -> Iterator[Document | Rejected]:
        url, source = task.inputs[0], task.get("source")
        irregular = not_a_regular_file(url)
        if irregular:
            doc = Document(id=f"{source}#file", text="", source=source)
            yield Rejected(doc, "not_a_regular_file", error=f"{irregular}: not read")
            return
        count = 0
        try:
            p = self.params
            with fsspec.open(url, "rb") as f:
                records = read_records(f, p.max_record_bytes, p.rejected_prefix_bytes)
                for count, item in enumerate(records, start=1):
                    yield to_document(item, source, count - 1, p.max_body_bytes,
                                      p.rejected_prefix_bytes)
        except OSError as exc:
            doc = Document(id=f"{source}#file", text="", source=source)
            yield Rejected(doc, "unreadable_file", error=printable(f"{url}: {exc}"))
            return
        if count == 0:  # every input file shows in the funnel, as for `ingest`
            doc = Document(id=f"{source}#file", text="", source=source)
            yield Rejected(doc, "empty_file", error="no records in file")


# ---------------------------------------------------------------------------------------
# Bytes: gzip members (or plain) -> a stream of chunks, with breaks where data was lost


@dataclass
class _Break:
    reason: str  # corrupt:gz / truncated:gz
    detail: str


def _chunks(f) -> Iterator[bytes | _Break]:
    head = f.read(BLOCK)
    if not head.startswith(b"\x1f\x8b"):
        while head:
            yield head
            head = f.read(BLOCK)
        return
    buf, member, produced = head, zlib.decompressobj(31), False
    started = False  # the member has been fed bytes: the file must not end inside it
    broken = False  # one break per damaged stretch, however many resyncs it takes
    while True:
        if not buf:
            buf = f.read(BLOCK)
            if not buf:
                rest = member.flush() if produced and not member.eof else b""
                if rest:  # output the last bounded call held back
                    yield rest
                break
        started = True
        try:
            # max_length: one call never inflates more than BLOCK, however dense the input
            # (a 1 MiB gzip member can hold 1 GiB of zeros).
            out = member.decompress(buf, BLOCK)
        except zlib.error as exc:
            if not broken:
                yield _Break("corrupt:gz", f"bad gzip data: {exc}")
            broken = True
            buf = _next_gzip_header(f, buf[1:])
            member, produced, started = zlib.decompressobj(31), False, False
            continue
        if out:
            produced, broken = True, False
            yield out
        if member.eof:
            buf, member, produced = member.unused_data, zlib.decompressobj(31), False
            started = False
        else:
            buf = member.unconsumed_tail
    if started and not member.eof:
        yield _Break("truncated:gz", "the file ends inside a gzip member")


def _next_gzip_header(f, buf: bytes) -> bytes:
    while True:
        at = buf.find(b"\x1f\x8b\x08")
        if at >= 0:
            return buf[at:]
        more = f.read(BLOCK)
        if not more:
            return b""
        buf = buf[-2:] + more


class _Cut(Exception):
    def __init__(self, brk: _Break):
        self.brk = brk


class _Stream:
    """A read buffer over `_chunks`; reading across a break raises `_Cut`."""

    def __init__(self, chunks: Iterator[bytes | _Break]):
        self.chunks = chunks
        self.buf = bytearray()
        self.pos = 0  # offset of buf[0] in the decompressed stream
        self.brk: _Break | None = None
        self.eof = False

    def _fill(self, n: int) -> bool:
        while len(self.buf) < n:
            if self.brk is not None or self.eof:
                return False
            item = next(self.chunks, None)
            if item is None:
                self.eof = True
            elif isinstance(item, _Break):
                self.brk = item
            else:
                self.buf += item
        return True

    def _short(self) -> None:
        if self.brk is not None:
            raise _Cut(self.brk)

    def at_end(self) -> bool:
        return not self._fill(1) and self.brk is None

    def peek(self, n: int) -> bytes:
        self._fill(n)
        return bytes(self.buf[:n])

    def readline(self, limit: int = MAX_HEADER_BYTES) -> bytes:
        start = 0
        while True:
            at = self.buf.find(b"\n", start)
            if at >= 0:
                return self.take(at + 1)
            if len(self.buf) >= limit:
                return self.take(limit)
            start = len(self.buf)
            if not self._fill(len(self.buf) + 1):
                self._short()
                return self.take(len(self.buf))

    def read(self, n: int) -> bytes:
        if not self._fill(n):
            self._short()
        return self.take(min(n, len(self.buf)))

    def skip(self, n: int) -> int:
        skipped = 0
        while skipped < n:
            if not self.buf and not self._fill(1):
                self._short()
                break
            step = min(n - skipped, len(self.buf))
            self.take(step)
            skipped += step
        return skipped

    def take(self, n: int) -> bytes:
        with memoryview(self.buf) as view:
            out = bytes(view[:n])  # one copy (slicing the bytearray first would make two)
        del self.buf[:n]
        self.pos += n
        return out

    def resume(self) -> _Break | None:
        """Drop what is left before a break; the stream goes on after it."""
        brk, self.brk = self.brk, None
        self.pos += len(self.buf)
        self.buf.clear()
        return brk

    def skip_to_line_start(self, marker: bytes) -> tuple[int, bool]:
        """Skip until the stream starts at `marker` at a line start, or up to a break/EOF.

        Returns (bytes skipped, found). Holds at most one block beyond the marker's length,
        however long the stretch it skips.
        """
        needle, skipped = b"\n" + marker, 0
        while True:
            at = self.buf.find(needle)
            if at >= 0:
                self.take(at + 1)
                return skipped + at + 1, True
            keep = min(len(self.buf), len(needle) - 1)  # a needle may straddle two blocks
            skipped += len(self.buf) - keep
            self.take(len(self.buf) - keep)
            if not self._fill(len(self.buf) + 1):
                skipped += len(self.buf)
                self.take(len(self.buf))
                return skipped, False


# ---------------------------------------------------------------------------------------
# Records


@dataclass
class Record:
    """One framed record, or a damaged span (`problem` set)."""

    offset: int
    warc_type: str = ""
    headers: dict[str, str] | None = None
    content: bytes = b""
    problem: str | None = None
    detail: str = ""
    raw: bytes = b""
    too_large: bool = False


def read_records(f, max_record_bytes: int,
                 prefix_bytes: int = REJECTED_PREFIX_BYTES) -> Iterator[Record]:
    """Every record of a WARC/ARC file, and every damaged span, in file order.

    A record block over `max_record_bytes` is not held: its first `prefix_bytes` are
    kept (`too_large` set) and the rest is skipped as it streams by.
    """
    stream = _Stream(_chunks(f))
    is_arc = stream.peek(11) == b"filedesc://"

    def frame(stream: _Stream) -> Record | None:
        return (_arc_record if is_arc else _warc_record)(stream, max_record_bytes, prefix_bytes)

    while True:
        while stream.peek(1) in (b"\r", b"\n"):
            stream.take(1)  # blank lines between records
        if stream.at_end():
            return
        start = stream.pos
        try:
            record = frame(stream)
        except _Cut as cut:  # the data ran into a gzip break mid-record
            stream.resume()
            yield Record(start, problem=cut.brk.reason, detail=f"offset {start}: {cut.brk.detail}")
            continue
        if record is None:  # a break with no record in progress
            brk = stream.resume()
            if brk is None:
                return
            yield Record(start, problem=brk.reason, detail=f"offset {start}: {brk.detail}")
            continue
        yield record


def _warc_record(stream: _Stream, max_bytes: int, prefix_bytes: int) -> Record | None:
    offset = stream.pos
    if not stream.peek(5):
        return None
    if stream.peek(7) != b"WARC/1.":
        return _garbage(stream, offset, b"WARC/1.", prefix_bytes)
    stream.readline()
    headers, bad = _header_block(stream)
    length = headers.get("content-length", "")
    if bad or not length.strip().isdigit():
        detail = bad or f"Content-Length {length!r}"
        return Record(offset, problem="malformed_record", detail=f"offset {offset}: {detail}")
    record = Record(offset, headers.get("warc-type", "").lower(), headers)
    return _read_block(stream, record, int(length), max_bytes, prefix_bytes)


def _arc_record(stream: _Stream, max_bytes: int, prefix_bytes: int) -> Record | None:
    offset = stream.pos
    line = stream.readline()
    if not line:
        return None
    m = _ARC_HEADER.match(line.rstrip(b"\r\n"))
    if not m:
        return Record(offset, problem="malformed_record", raw=line[:prefix_bytes],
                      detail=f"offset {offset}: not an ARC header line: {line[:200]!r}")
    url, ip, date, mime, length = (g.decode("latin-1") for g in m.groups())
    size = int(length)
    headers = {"warc-target-uri": url, "warc-ip-address": ip, "warc-date": date,
               "content-type": mime}
    kind = "arc_header" if url.startswith("filedesc:") else "response"
    record = Record(offset, kind, headers)
    return _read_block(stream, record, size, max_bytes, prefix_bytes)


def _read_block(stream: _Stream, record: Record, size: int, max_bytes: int,
                prefix_bytes: int) -> Record:
    """The record's block, or (over `max_bytes`) its prefix with the rest skipped."""
    if size > max_bytes:
        record.content = stream.read(min(size, prefix_bytes))
        got = len(record.content) + stream.skip(size - len(record.content))
        record.too_large = True
    else:
        record.content = stream.read(size)
        got = len(record.content)
    if got < size:
        offset = record.offset
        return Record(offset, problem="truncated_record", raw=record.content[:prefix_bytes],
                      detail=f"offset {offset}: {got} of {size} content bytes before the end")
    return record


def _header_block(stream: _Stream) -> tuple[dict[str, str], str | None]:
    headers: dict[str, str] = {}
    total = 0
    while True:
        line = stream.readline()
        total += len(line)
        if not line:
            return headers, "the file ends inside the header block"
        if line in (b"\r\n", b"\n"):
            return headers, None
        if total > MAX_HEADER_BYTES:
            return headers, "header block too long"
        name, sep, value = line.decode("utf-8", "replace").partition(":")
        if not sep:
            return headers, f"bad header line {line[:100]!r}"
        headers[name.strip().lower()] = value.strip()


def _garbage(stream: _Stream, offset: int, marker: bytes, prefix_bytes: int) -> Record:
    raw = stream.peek(prefix_bytes)
    skipped, found = stream.skip_to_line_start(marker)
    if found:
        raw = raw[:skipped]
    return Record(offset, problem="garbage", raw=raw,
                  detail=f"offset {offset}: {skipped} bytes that are not a record")


# ---------------------------------------------------------------------------------------
# Record -> document


def to_document(record: Record, source: str, index: int, max_body_bytes: int = MAX_BODY_BYTES,
                prefix_bytes: int = REJECTED_PREFIX_BYTES) -> Document | Rejected:
    """The document for one record, or why there is none.

    The HTTP payload is decoded (chunking, then gzip/deflate/br) into at most
    `max_body_bytes`; past that the record is `oversize:decoded_body` and only the first
    `prefix_bytes` of what was decoded are kept.
    """
    doc_id = f"{source}#{index}"
    if record.problem:
        doc = Document(id=doc_id, text=record.raw.decode("utf-8", "replace"), source=source,
                       metadata={"offset": record.offset})
        return Rejected(doc, record.problem, error=record.detail or record.problem)
    h = record.headers
    url = h.get("warc-target-uri") or None
    meta = {"warc_type": record.warc_type, "warc_record_id": h.get("warc-record-id"),
            "warc_date": h.get("warc-date"), "offset": record.offset}
    doc = Document(id=doc_id, text="", url=url, source=source, metadata=meta)
    kind = record.warc_type
    if kind == "arc_header":
        return Rejected(doc, "arc_header")
    if kind == "revisit":
        return Rejected(doc, "revisit")
    if kind not in ("response", "resource", "conversion"):
        return Rejected(doc, f"warc_type:{kind or 'missing'}")
    content_type = h.get("content-type", "")
    http_headers: dict[str, str] = {}
    body = memoryview(record.content)
    if kind == "conversion":
        if record.too_large or len(body) > max_body_bytes:
            return _oversize(doc, "record" if record.too_large else "decoded_body",
                             record.content[:prefix_bytes], max_body_bytes)
        return _from_text(doc, record.content, content_type)
    if kind == "response" and (url or "").startswith(("http:", "https:")) and \
            ("application/http" in content_type or record.content.startswith(b"HTTP/")):
        try:
            status, http_headers, body = _parse_http(body)
        except ValueError as exc:
            if record.too_large:  # the prefix may end inside the headers
                return _oversize(doc, "record", record.content[:prefix_bytes], max_body_bytes)
            return Rejected(doc, "malformed_http", error=str(exc))
        meta["http_status"] = status
        if status != 200:
            return Rejected(doc, f"http_{status}")
        content_type = http_headers.get("content-type", "")
    mime = content_type.split(";")[0].strip().lower()
    meta["mime"] = mime
    if mime not in HTML_TYPES and mime not in SNIFFED_TYPES:
        return Rejected(doc, "not_html")  # decided before decoding a byte of the body
    try:
        if record.too_large:  # only a prefix was read: show it decoded, then refuse it
            head = _preview(body, http_headers, prefix_bytes)
            if mime in SNIFFED_TYPES and not _looks_like_html(head):
                return Rejected(doc, "not_html")
            return _oversize(doc, "record", head, max_body_bytes)
        body = decode_payload(body, http_headers, max_body_bytes)
    except ValueError as exc:
        return Rejected(doc, "content_encoding", error=str(exc))
    except Oversize as big:
        if mime in SNIFFED_TYPES and not _looks_like_html(big.head):
            return Rejected(doc, "not_html")
        return _oversize(doc, "decoded_body", big.head[:prefix_bytes], max_body_bytes)
    if mime in SNIFFED_TYPES and not _looks_like_html(body):
        return Rejected(doc, "not_html")
    if not body.strip():
        return Rejected(doc, "empty_payload")
    decoded = decode_html(body, _charset_param(content_type))
    if decoded is None:
        doc.text = body[:prefix_bytes].decode("utf-8", "replace")
        return Rejected(doc, "undecodable", error="no charset decodes the payload")
    doc.text, meta["charset"], meta["charset_source"] = decoded
    meta["format"] = "html"
    return doc


def _oversize(doc: Document, what: str, head: bytes, limit: int) -> Rejected:
    """A record refused for its size; rejected/ keeps only `head`, a short prefix."""
    doc.text = head.decode("utf-8", "replace")
    doc.metadata["kept_prefix_bytes"] = len(head)
    doc.metadata["max_body_bytes"] = limit
    return Rejected(doc, f"oversize:{what}")


def _from_text(doc: Document, content: bytes, content_type: str) -> Document | Rejected:
    decoded = decode_html(content, _charset_param(content_type) or "utf-8", sniff_meta=False)
    if decoded is None:
        doc.text = content[:REJECTED_PREFIX_BYTES].decode("utf-8", "replace")
        return Rejected(doc, "undecodable", error="the conversion record is not text")
    text, doc.metadata["charset"], doc.metadata["charset_source"] = decoded
    if not text.strip():
        return Rejected(doc, "empty_payload")
    doc.text = text
    doc.metadata["format"] = "text"
    return doc


def _parse_http(content: memoryview) -> tuple[int, dict[str, str], memoryview]:
    """(status, headers, body); the body is a view into `content`, not a copy."""
    head = bytes(content[:MAX_HEADER_BYTES])
    end = head.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end, sep = head.find(b"\n\n"), 2
    if end < 0:
        if len(content) > MAX_HEADER_BYTES:
            raise ValueError(f"no end of the HTTP headers in the first {MAX_HEADER_BYTES} bytes")
        end, sep = len(content), 0
    lines = head[:end].decode("latin-1").replace("\r\n", "\n").split("\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"bad HTTP status line {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers, content[end + sep:]


# ---------------------------------------------------------------------------------------
# HTTP payload decoding, capped while it streams


class Oversize(Exception):
    """A decoded payload grew past its cap; `head` is what was decoded up to the cap."""

    def __init__(self, head: bytearray):
        super().__init__(f"decoded payload larger than {len(head)} bytes")
        self.head = head


class _Capped:
    """An output buffer that refuses to grow past `cap` bytes."""

    def __init__(self, cap: int):
        self.cap = cap
        self.data = bytearray()

    def add(self, piece) -> None:
        if len(self.data) + len(piece) > self.cap:
            self.data += piece[:self.cap - len(self.data)]
            raise Oversize(self.data)
        self.data += piece


def decode_payload(body: memoryview, headers: dict[str, str], cap: int) -> bytes:
    """Undo Transfer-Encoding chunked, then Content-Encoding gzip/deflate/br, as bytes stream in.

    Some WARC writers store the body as sent on the wire. At most `cap` bytes are ever
    produced: past it, `Oversize` (a 1 MiB gzip bomb costs one `cap` of memory, not the
    gigabyte it inflates to). A Content-Encoding we do not know leaves the bytes as stored.
    Raises ValueError for a body that does not decode.
    """
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    encoding = headers.get("content-encoding", "").strip().lower()

    def pieces() -> Iterator[memoryview]:
        return _dechunk(body) if chunked else iter((body,))

    out = _Capped(cap)
    if encoding in ("gzip", "x-gzip", "deflate"):
        try:
            _inflate(pieces(), zlib.decompressobj(47 if encoding != "deflate" else 15), out)
        except zlib.error:
            out = _Capped(cap)  # a raw deflate stream, as some servers send for "deflate"
            try:
                _inflate(pieces(), zlib.decompressobj(-15), out)
            except zlib.error as exc:
                raise ValueError(f"Content-Encoding {encoding}: {exc}") from None
    elif encoding == "br":
        _unbrotli(pieces(), out)
    else:
        for piece in pieces():
            out.add(piece)
    return bytes(out.data)


def _preview(body: memoryview, headers: dict[str, str], size: int) -> bytes:
    """The first `size` decoded bytes of a body we only have the start of (best effort)."""
    try:
        return decode_payload(body, headers, size)
    except Oversize as big:
        return bytes(big.head)
    except ValueError:
        return bytes(body[:size])


def _inflate(pieces: Iterator[memoryview], inflater, out: _Capped) -> None:
    for piece in pieces:
        data = piece
        while data:
            out.add(inflater.decompress(data, BLOCK))  # max_length: the bomb guard
            data = inflater.unconsumed_tail
            if inflater.eof:
                return  # bytes after the end of the stream are ignored, as browsers do
    out.add(inflater.flush())  # what the last bounded call held back (a few bytes)


def _unbrotli(pieces: Iterator[memoryview], out: _Capped) -> None:
    try:
        import brotli  # installed with fastwarc (the `acquire` extra)
    except ImportError:
        raise ValueError("Content-Encoding br needs the brotli package") from None
    decoder = brotli.Decompressor()
    try:
        for piece in pieces:
            for at in range(0, len(piece), BLOCK):
                out.add(decoder.process(bytes(piece[at:at + BLOCK]), output_buffer_limit=BLOCK))
                while not decoder.can_accept_more_data():
                    out.add(decoder.process(b"", output_buffer_limit=BLOCK))
    except brotli.error as exc:
        raise ValueError(f"Content-Encoding br: {exc}") from None


def _dechunk(body: memoryview) -> Iterator[memoryview]:
    """The data of each chunk, as views into `body`; a cut-off last chunk yields what is there."""
    pos = 0
    while pos < len(body):
        line = bytes(body[pos:pos + CHUNK_LINE_BYTES])
        end = line.find(b"\r\n")
        try:
            size = int(line[:end].split(b";")[0], 16) if end >= 0 else -1
        except ValueError:
            size = -1
        if size < 0:
            if pos == 0:  # not chunked after all: the bytes as stored
                yield body
                return
            raise ValueError(f"Transfer-Encoding chunked: bad chunk size line at byte {pos}")
        if size == 0:
            return
        start = pos + end + 2
        yield body[start:start + size]
        pos = start + size + 2


def _looks_like_html(body: bytes) -> bool:
    head = body[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<html" in head[:256]


def _charset_param(content_type: str) -> str | None:
    m = re.search(r"charset\s*=\s*[\"']?([^\s;\"']+)", content_type, re.I)
    return m.group(1) if m else None


def _codec(label: str | None) -> str | None:
    if not label:
        return None
    label = label.strip().lower()
    label = CHARSET_ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except LookupError:
        return None
    if not info._is_text_encoding or info.name in NOT_WEB_CHARSETS:
        return None
    return info.name


def decode_html(body: bytes, header_charset: str | None,
                sniff_meta: bool = True) -> tuple[str, str, str] | None:
    """(text, codec, where the charset came from) or None if nothing decodes it."""
    for bom, name in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16"),
                      (codecs.BOM_UTF16_BE, "utf-16")):
        if body.startswith(bom):
            try:
                return body.decode("utf-8-sig" if name == "utf-8" else name), name, "bom"
            except UnicodeDecodeError:
                break
    candidates = [(_codec(header_charset), "header")]
    if sniff_meta:
        m = _META_CHARSET.search(body[:4096])
        candidates.append((_codec(m.group(1).decode("ascii", "replace")) if m else None, "meta"))
    for codec, where in candidates:
        if codec and "utf-16" not in codec:  # a utf-16 label on an 8-bit page is a lie
            try:
                return body.decode(codec), codec, where
            except UnicodeDecodeError:
                continue
    try:
        return body.decode("utf-8"), "utf-8", "detected"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(body[:256 * 1024]).best()
    codec = _codec(best.encoding) if best is not None else None
    if codec:
        text = body.decode(codec, "replace")
        if text.count("\ufffd") <= 0.01 * max(len(text), 1):
            return text, codec, "detected"
    return None
