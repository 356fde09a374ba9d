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
  `not_html`, `empty_payload`, `record_too_large`, `arc_header`;
- errors: `undecodable` (no charset decodes the page), `content_encoding`,
  `malformed_http`, `malformed_record` (bad header block), `garbage` (bytes between
  records), `truncated_record`, `corrupt_gzip`, `truncated_gzip`.

The reader is our own and reads damaged files to the end: gzip members are inflated one
after another with zlib (a corrupt member: skip to the next gzip header; a file that is a
single gzip stream rather than one member per record, as warcio refuses, reads fine), and
record framing resynchronizes on the next `WARC/1.x` line after garbage or a bad header.
A truncated last member is reported as `truncated_gzip`, never taken as a clean end.

Charset: the HTTP header, then a `<meta>` declaration in the first 4 KiB, then
detection with charset-normalizer; a page that decodes under none without replacement
characters (more than 1% of them) is `undecodable`. Labels map as browsers do
(iso-8859-1 and ascii read as windows-1252).
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

BLOCK = 1 << 20
MAX_HEADER_BYTES = 64 * 1024
REJECTED_TEXT_CHARS = 20_000  # how much of a damaged span rejected/ keeps
HTML_TYPES = ("text/html", "application/xhtml+xml")
WARC_SUFFIXES = (".warc", ".arc", ".wet")
# WHATWG encoding labels that differ from Python's codecs.
CHARSET_ALIASES = {"iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
                   "us-ascii": "cp1252", "ascii": "cp1252", "iso8859-1": "cp1252",
                   "x-sjis": "shift_jis", "shift-jis": "shift_jis", "gb2312": "gb18030",
                   "gbk": "gb18030", "x-user-defined": "cp1252"}
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.I)
_ARC_HEADER = re.compile(rb"^(\S+) (\S+) (\d{8,}) (\S*) (\d+)(?: .*)?$")


class IngestWarcParams(Params):
    paths: list[str] = []  # files, globs or fsspec URLs; upstream crawl WARCs are added
    shard_size: int = Field(default=10_000, ge=1)
    max_record_bytes: int = Field(default=50_000_000, ge=1)


class IngestWarc(DocStage):
    kind = "ingest_warc"
    version = 1
    Params = IngestWarcParams

    @property
    def max_docs_per_shard(self) -> int:
        return self.params.shard_size

    def files(self, inputs: list[StageInput] = ()) -> list[tuple[str, str]]:
        """(url, source) for every input file; source is what document ids start with."""
        found = (expand_paths(self.params.paths, f"stage '{self.name}': params.paths")
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
        try:
            with fsspec.open(url, "rb") as f:
                for index, item in enumerate(read_records(f, self.params.max_record_bytes)):
                    yield to_document(item, source, index)
        except OSError as exc:
            doc = Document(id=f"{source}#file", text="", source=source)
            yield Rejected(doc, "unreadable_file", error=f"{url}: {exc}")


# ---------------------------------------------------------------------------------------
# Bytes: gzip members (or plain) -> a stream of chunks, with breaks where data was lost


@dataclass
class _Break:
    reason: str  # corrupt_gzip / truncated_gzip
    detail: str


def _chunks(f) -> Iterator[bytes | _Break]:
    head = f.read(BLOCK)
    if not head.startswith(b"\x1f\x8b"):
        while head:
            yield head
            head = f.read(BLOCK)
        return
    buf, member, produced = head, zlib.decompressobj(31), False
    broken = False  # one break per damaged stretch, however many resyncs it takes
    while True:
        if not buf:
            buf = f.read(BLOCK)
            if not buf:
                break
        try:
            out = member.decompress(buf)
        except zlib.error as exc:
            if not broken:
                yield _Break("corrupt_gzip", f"bad gzip data: {exc}")
            broken = True
            buf = _next_gzip_header(f, buf[1:])
            member, produced = zlib.decompressobj(31), False
            continue
        if out:
            produced, broken = True, False
            yield out
        if member.eof:
            buf, member, produced = member.unused_data, zlib.decompressobj(31), False
        else:
            buf = b""
    if produced and not member.eof:
        yield _Break("truncated_gzip", "the file ends inside a gzip member")


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
        out = bytes(self.buf[:n])
        del self.buf[:n]
        self.pos += n
        return out

    def resume(self) -> _Break | None:
        """Drop what is left before a break; the stream goes on after it."""
        brk, self.brk = self.brk, None
        self.pos += len(self.buf)
        self.buf.clear()
        return brk

    def find_line_start(self, marker: bytes) -> int:
        """Bytes to skip so the stream starts at `marker` at a line start (-1: none before a break/EOF)."""
        start = 0
        while True:
            at = self.buf.find(b"\n" + marker, start)
            if at >= 0:
                return at + 1
            start = max(0, len(self.buf) - len(marker))
            if not self._fill(len(self.buf) + BLOCK):
                at = self.buf.find(b"\n" + marker, start)
                return at + 1 if at >= 0 else -1


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


def read_records(f, max_record_bytes: int) -> Iterator[Record]:
    """Every record of a WARC/ARC file, and every damaged span, in file order."""
    stream = _Stream(_chunks(f))
    frame = _arc_record if stream.peek(11) == b"filedesc://" else _warc_record
    while True:
        while stream.peek(1) in (b"\r", b"\n"):
            stream.take(1)  # blank lines between records
        if stream.at_end():
            return
        start = stream.pos
        try:
            record = frame(stream, max_record_bytes)
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


def _warc_record(stream: _Stream, max_bytes: int) -> Record | None:
    offset = stream.pos
    if not stream.peek(5):
        return None
    if stream.peek(7) != b"WARC/1.":
        return _garbage(stream, offset, b"WARC/1.")
    stream.readline()
    headers, bad = _header_block(stream)
    length = headers.get("content-length", "")
    if bad or not length.strip().isdigit():
        detail = bad or f"Content-Length {length!r}"
        return Record(offset, problem="malformed_record", detail=f"offset {offset}: {detail}")
    record = Record(offset, headers.get("warc-type", "").lower(), headers)
    size = int(length)
    if size > max_bytes:
        got = stream.skip(size)
        record.too_large = True
    else:
        record.content = stream.read(size)
        got = len(record.content)
    if got < size:
        return Record(offset, problem="truncated_record", raw=record.content[:REJECTED_TEXT_CHARS],
                      detail=f"offset {offset}: {got} of {size} content bytes before the end")
    return record


def _arc_record(stream: _Stream, max_bytes: int) -> Record | None:
    offset = stream.pos
    line = stream.readline()
    if not line:
        return None
    m = _ARC_HEADER.match(line.rstrip(b"\r\n"))
    if not m:
        return Record(offset, problem="malformed_record", raw=line[:REJECTED_TEXT_CHARS],
                      detail=f"offset {offset}: not an ARC header line: {line[:200]!r}")
    url, ip, date, mime, length = (g.decode("latin-1") for g in m.groups())
    size = int(length)
    headers = {"warc-target-uri": url, "warc-ip-address": ip, "warc-date": date,
               "content-type": mime}
    kind = "arc_header" if url.startswith("filedesc:") else "response"
    record = Record(offset, kind, headers)
    if size > max_bytes:
        got = stream.skip(size)
        record.too_large = True
    else:
        record.content = stream.read(size)
        got = len(record.content)
    if got < size:
        return Record(offset, problem="truncated_record", raw=record.content[:REJECTED_TEXT_CHARS],
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


def _garbage(stream: _Stream, offset: int, marker: bytes) -> Record:
    skip = stream.find_line_start(marker)
    raw = stream.peek(min(skip, REJECTED_TEXT_CHARS) if skip >= 0 else REJECTED_TEXT_CHARS)
    if skip >= 0:
        stream.skip(skip)
    else:
        while stream.buf:
            stream.take(len(stream.buf))
    return Record(offset, problem="garbage", raw=raw,
                  detail=f"offset {offset}: {max(skip, len(raw))} bytes that are not a record")


# ---------------------------------------------------------------------------------------
# Record -> document


def to_document(record: Record, source: str, index: int) -> Document | Rejected:
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
    if record.too_large:
        return Rejected(doc, "record_too_large")
    content_type = h.get("content-type", "")
    if kind == "conversion":
        return _from_text(doc, record.content, content_type)
    if kind == "response" and (url or "").startswith(("http:", "https:")) and \
            ("application/http" in content_type or record.content.startswith(b"HTTP/")):
        try:
            status, http_headers, body = _parse_http(record.content)
        except ValueError as exc:
            return Rejected(doc, "malformed_http", error=str(exc))
        meta["http_status"] = status
        if status != 200:
            return Rejected(doc, f"http_{status}")
        content_type = http_headers.get("content-type", "")
        try:
            body = _decode_transfer(body, http_headers)
        except ValueError as exc:
            return Rejected(doc, "content_encoding", error=str(exc))
    else:
        body = record.content
    mime = content_type.split(";")[0].strip().lower()
    meta["mime"] = mime
    if mime not in HTML_TYPES and not (mime in ("", "unknown", "application/octet-stream",
                                                "text/plain") and _looks_like_html(body)):
        return Rejected(doc, "not_html")
    if not body.strip():
        return Rejected(doc, "empty_payload")
    decoded = decode_html(body, _charset_param(content_type))
    if decoded is None:
        doc.text = body[:REJECTED_TEXT_CHARS].decode("utf-8", "replace")
        return Rejected(doc, "undecodable", error="no charset decodes the payload")
    doc.text, meta["charset"], meta["charset_source"] = decoded
    meta["format"] = "html"
    return doc


def _from_text(doc: Document, content: bytes, content_type: str) -> Document | Rejected:
    decoded = decode_html(content, _charset_param(content_type) or "utf-8", sniff_meta=False)
    if decoded is None:
        doc.text = content[:REJECTED_TEXT_CHARS].decode("utf-8", "replace")
        return Rejected(doc, "undecodable", error="the conversion record is not text")
    text, doc.metadata["charset"], doc.metadata["charset_source"] = decoded
    if not text.strip():
        return Rejected(doc, "empty_payload")
    doc.text = text
    doc.metadata["format"] = "text"
    return doc


def _parse_http(content: bytes) -> tuple[int, dict[str, str], bytes]:
    end = content.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end, sep = content.find(b"\n\n"), 2
    if end < 0:
        end, sep = len(content), 0
    head = content[:end].decode("latin-1").replace("\r\n", "\n").split("\n")
    parts = head[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"bad HTTP status line {head[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers, content[end + sep:]


def _decode_transfer(body: bytes, headers: dict[str, str]) -> bytes:
    """Undo chunking and gzip/deflate that some WARC writers store as sent on the wire."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        try:
            return zlib.decompressobj(47 if encoding != "deflate" else 15).decompress(body)
        except zlib.error:
            try:
                return zlib.decompressobj(-15).decompress(body)
            except zlib.error as exc:
                raise ValueError(f"Content-Encoding {encoding}: {exc}") from None
    if encoding == "br":
        raise ValueError("Content-Encoding br is not supported")
    return body


def _dechunk(body: bytes) -> bytes:
    out, pos = bytearray(), 0
    while pos < len(body):
        end = body.find(b"\r\n", pos)
        if end < 0:
            return body  # not chunked after all: keep the bytes as stored
        try:
            size = int(body[pos:end].split(b";")[0], 16)
        except ValueError:
            return body
        if size == 0:
            return bytes(out)
        out += body[end + 2:end + 2 + size]
        pos = end + 2 + size + 2
    return bytes(out)


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
        return codecs.lookup(label).name
    except LookupError:
        return None


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
