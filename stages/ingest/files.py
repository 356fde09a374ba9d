"""`ingest`: local or remote text files into document shards.

Reads `.jsonl` (also `.json`/`.ndjson`; plain, `.gz`, `.zst`, `.bz2`, `.xz`), `.txt` and
`.parquet` through fsspec, so `s3://bucket/*.jsonl.gz` works when s3fs is installed.
One task per input file (sorted), shards rotated every `shard_size` documents and named
`<file index>-<part>.parquet`.

Document ids are `<source>#<record index>` unless `id_field` names a field: stable across
machines because `source` is the path relative to the common folder of all inputs.

Nothing is lost without a reason: an invalid JSON line, a line that is not UTF-8, a JSON
string holding a lone surrogate (`"\\ud83d"`: valid JSON, not text), a record without the
text field: each is one record counted under `errors[reason]` and kept in `rejected/` with
its raw text; the rest of the file is still read. A file that cannot be read to its end is
one more error after the documents read before the damage, the same for every compression:
`truncated:<gz|bz2|xz|zst>` (the compressed stream stops before its end marker: zstd frames
are walked to tell, since the zstd reader itself takes a cut-off frame for a clean end),
`corrupt:<gz|bz2|xz|zst>` (bad compressed data), `corrupt:parquet`, `unreadable_file` (it
cannot be opened or a read fails). An `empty_file` (no record) and an input that is
`not_a_regular_file` (a FIFO, socket or device a glob matched: never opened, as reading
one could block forever) count as one error each, so every input file shows in the funnel.
A file name that is not UTF-8 is read under its name with those bytes escaped
(`caf\\xe9.jsonl`): ids, rejected/ and error messages must encode as UTF-8.

Size caps and memory: files stream, and every decompressor is read in bounded steps (a
few MB of .gz/.bz2/.xz/.zst that inflate to GBs cost no more than the same GBs on disk);
one record is read at a time and never past `max_record_bytes` (default 20 MB; a JSON
line, a text file with `txt_split: file`, a paragraph or a line). A longer record is
dropped as `oversize:record` with its first `rejected_prefix_bytes` kept in rejected/, and
the rest of it is skipped in 1 MiB reads.
A text field over the cap in a Parquet input is `oversize:record` too; a Parquet row group
whose uncompressed size is over `max_row_group_bytes` (default 256 MB) is never read and
counts once as the error `oversize:row_group`, its rows skipped. So one task holds about
3 x `max_record_bytes` while it reads a record (the line's pieces, their join, the str),
one row group for Parquet, plus what the engine makes of a document it writes (its text
encoded to count bytes, the Arrow batch, the Parquet page: pipeline/artifacts.py). Measured
peak RSS of a whole ingest run (tests/stages/ingest/test_bounded_memory.py): about 140 MB
on a 1 GiB line in any compression with the default cap; about 7 x the record for one
record just under a raised cap (a 200 MiB JSON line kept: 1.5 GB, most of it the engine's).
bz2 and xz are read by our own loop over the stdlib decompressors (BZ2File and LZMAFile
stop in silence at damage near the start of any stream but the first).
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import re
import stat
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from fsspec.implementations.local import LocalFileSystem
from pydantic import Field

from pipeline.documents import Document, Rejected
from pipeline.inputs import expand_paths, fingerprint_files
from pipeline.stage import DocStage, Params, StageInput, Task

CODECS = {".gz": "gz", ".bz2": "bz2", ".xz": "xz", ".zst": "zst"}  # suffix -> reason tag
BLOCK = 1 << 20
PARQUET_BATCH_ROWS = 64
FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".txt": "txt",
           ".md": "txt", ".parquet": "parquet"}
# A JSON escape of a UTF-16 surrogate: only a line holding one can decode to a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class IngestParams(Params):
    paths: list[str] = Field(min_length=1)  # files, globs or fsspec URLs
    format: Literal["auto", "jsonl", "txt", "parquet"] = "auto"
    text_field: str = "text"
    id_field: str | None = None
    url_field: str | None = None
    txt_split: Literal["file", "paragraph", "line"] = "file"
    keep_fields: bool = True  # other record fields go to `metadata`
    shard_size: int = Field(default=10_000, ge=1)
    max_record_bytes: int = Field(default=20_000_000, ge=1)
    max_row_group_bytes: int = Field(default=256_000_000, ge=1)  # Parquet input
    rejected_prefix_bytes: int = Field(default=20_000, ge=0)


class Ingest(DocStage):
    kind = "ingest"
    version = 1
    Params = IngestParams

    @property
    def max_docs_per_shard(self) -> int:
        return self.params.shard_size

    def files(self) -> list[tuple[str, str]]:
        """(url, source) for every input file, sorted; source is relative to their common root."""
        return [(url, printable(source)) for url, source in
                expand_paths(self.params.paths, f"stage '{self.name}': params.paths")]

    def fingerprint(self) -> Any:
        return fingerprint_files(self.files())

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        files = self.files()
        if self.params.format == "auto":
            for url, _ in files:
                _format_of(url)  # fail before any work on a file we cannot read
        return [
            Task(name=f"{i:05d}", inputs=(url,), payload=(("source", source),))
            for i, (url, source) in enumerate(files)
        ]

    def input_score_columns(self, task: Task) -> dict:
        return {}

    def apply(self, doc: Document) -> Document:
        return doc

    def read(self, task: Task) -> Iterator[Document | Rejected]:
        url, source = task.inputs[0], task.get("source")
        fmt = self.params.format if self.params.format != "auto" else _format_of(url)
        irregular = not_a_regular_file(url)
        if irregular:
            yield self._bad(source, "file", "", "not_a_regular_file", f"{irregular}: not read")
            return
        records = {"jsonl": self._jsonl, "txt": self._txt, "parquet": self._parquet}[fmt]
        count = 0
        try:
            for count, item in enumerate(records(url, source), start=1):
                yield item
        except _Damaged as damage:
            yield self._bad(source, f"file@{count}", "", damage.reason,
                            f"{damage} (after {count} records)")
            return
        if count == 0:
            yield self._bad(source, "file", "", "empty_file", "no records in file")

    def _jsonl(self, url: str, source: str) -> Iterator[Document | Rejected]:
        p = self.params
        with _open_input(url, _codec_of(url)) as f:
            for index, raw in enumerate(_lines(f, p.max_record_bytes, p.rejected_prefix_bytes)):
                if isinstance(raw, _Oversize):
                    yield self._oversize(source, index, raw)
                    continue
                if not raw.strip():
                    continue
                item = self._from_line(raw, source, index)
                del raw  # a big record is held once while the engine writes it, not thrice
                yield item

    def _from_line(self, raw: bytes, source: str, index: int) -> Document | Rejected:
        end = len(raw) - (raw.endswith(b"\n") + raw.endswith(b"\r\n"))
        try:
            with memoryview(raw) as view:
                line = str(view[:end], "utf-8")  # no copy of the bytes without the newline
        except UnicodeDecodeError as exc:
            return self._bad(source, index, raw[:end].decode("utf-8", "replace"), "invalid_utf8",
                             exc)
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
            return self._bad(source, index, line, "invalid_json", exc)
        if _SURROGATE_ESCAPE.search(line):  # paired escapes (emoji) are fine: look closer
            lone = _SURROGATE.search(json.dumps(record, ensure_ascii=False))
            if lone:
                return self._bad(source, index, line, "lone_surrogate",
                                 f"a string holds U+{ord(lone.group()):04X} without its pair")
        return self._from_record(record, source, index, line)

    def _txt(self, url: str, source: str) -> Iterator[Document | Rejected]:
        p, split = self.params, self.params.txt_split
        with _open_input(url, _codec_of(url)) as f:
            if split == "file":
                parts = _whole(f, p.max_record_bytes, p.rejected_prefix_bytes)
            elif split == "paragraph":
                parts = _paragraphs(f, p.max_record_bytes, p.rejected_prefix_bytes)
            else:
                parts = _lines(f, p.max_record_bytes, p.rejected_prefix_bytes)
            index = 0
            for raw in parts:
                if isinstance(raw, _Oversize):
                    yield self._oversize(source, index, raw)
                    index += 1
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield self._bad(source, index, raw.decode("utf-8", "replace"), "invalid_utf8", exc)
                    index += 1
                    continue
                if split == "paragraph":
                    pieces = [text.replace("\r\n", "\n").strip()]
                elif split == "line":
                    pieces = text.splitlines()
                else:
                    pieces = [text]
                for piece in pieces:
                    if piece.strip():
                        yield Document(id=f"{source}#{index}", text=piece, source=source)
                        index += 1

    def _parquet(self, url: str, source: str) -> Iterator[Document | Rejected]:
        p = self.params
        with _open_input(url, "parquet") as f:
            parquet = pq.ParquetFile(f)
            index = 0
            for group in range(parquet.metadata.num_row_groups):
                meta = parquet.metadata.row_group(group)
                if meta.total_byte_size > p.max_row_group_bytes:
                    yield self._bad(source, f"{index}-{index + meta.num_rows - 1}", "",
                                    "oversize:row_group",
                                    f"row group {group}: {meta.num_rows} rows, "
                                    f"{meta.total_byte_size} bytes > {p.max_row_group_bytes}")
                    index += meta.num_rows
                    continue
                for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS,
                                                  row_groups=[group]):
                    for row in batch.to_pylist():
                        yield self._from_row(row, source, index)
                        index += 1

    def _from_row(self, row: dict, source: str, index: int) -> Document | Rejected:
        p = self.params
        text = row.get(p.text_field)
        if isinstance(text, str) and len(text) * 4 > p.max_record_bytes:  # may be over: measure
            data = text.encode("utf-8", "surrogatepass")
            if len(data) > p.max_record_bytes:
                return self._oversize(source, index,
                                      _Oversize(data[:p.rejected_prefix_bytes], len(data)))
        return self._from_record(row, source, index, None)

    def _from_record(self, record: Any, source: str, index: int, raw: str | None) -> Document | Rejected:
        p = self.params

        def bad(reason: str, error: str) -> Rejected:  # the record as read, for rejected/
            shown = raw if raw is not None else json.dumps(record, default=str, ensure_ascii=False)
            return self._bad(source, index, shown, reason, error)

        if not isinstance(record, dict):
            return bad("not_an_object", f"got {type(record).__name__}")
        text = record.get(p.text_field)
        if text is None:
            return bad("missing_text_field", f"no field {p.text_field!r}")
        if not isinstance(text, str):
            return bad("text_not_string", f"{p.text_field!r} is {type(text).__name__}")
        doc_id = f"{source}#{index}"
        if p.id_field:
            if record.get(p.id_field) is None:
                return bad("missing_id_field", f"no field {p.id_field!r}")
            doc_id = str(record[p.id_field])
        url = record.get(p.url_field) if p.url_field else None
        metadata = {}
        if p.keep_fields:
            used = {p.text_field, p.id_field, p.url_field}
            metadata = json.loads(json.dumps(
                {k: v for k, v in record.items() if k not in used}, default=str))
        return Document(id=doc_id, text=text, url=None if url is None else str(url),
                        source=source, metadata=metadata)

    @staticmethod
    def _oversize(source: str, index: int, big: _Oversize) -> Rejected:
        doc = Document(id=f"{source}#{index}", text=big.head.decode("utf-8", "replace"),
                       source=source, metadata={"record_bytes": big.size})
        return Rejected(doc, "oversize:record")

    @staticmethod
    def _bad(source: str, index: int | str, raw: str, reason: str, error: Any) -> Rejected:
        doc = Document(id=f"{source}#{index}", text=raw, source=source)
        return Rejected(doc, reason, error=printable(str(error) or type(error).__name__))


def _format_of(url: str) -> str:
    suffixes = [s.lower() for s in PurePosixPath(url).suffixes]
    while suffixes and suffixes[-1] in CODECS:
        suffixes.pop()
    if suffixes and suffixes[-1] in FORMATS:
        return FORMATS[suffixes[-1]]
    raise ValueError(f"cannot tell the format of {url!r} from its name; set params.format")


@dataclass
class _Oversize:
    """A record longer than the cap: its first bytes and its whole size."""

    head: bytes
    size: int


def _lines(f, cap: int, prefix: int) -> Iterator[bytes | _Oversize]:
    """Physical lines (newline included) of at most `cap` bytes; a longer one is skipped."""
    if not isinstance(f, io.BufferedIOBase):  # zstd's reader cannot read lines
        f = io.BufferedReader(f)
    while True:
        line = f.readline(cap + 1)
        if not line:
            return
        if len(line) <= cap or line.endswith(b"\n"):
            yield line
            continue
        head, size = line[:prefix], len(line)
        while not line.endswith(b"\n"):
            line = f.readline(BLOCK)
            if not line:
                break
            size += len(line)
        yield _Oversize(head, size)


def _whole(f, cap: int, prefix: int) -> Iterator[bytes | _Oversize]:
    """The whole file as one record, if it is at most `cap` bytes."""
    data = f.read(cap + 1)
    if len(data) <= cap:
        yield data
        return
    head, size = data[:prefix], len(data)
    del data
    while chunk := f.read(BLOCK):
        size += len(chunk)
    yield _Oversize(head, size)


def _paragraphs(f, cap: int, prefix: int) -> Iterator[bytes | _Oversize]:
    """Runs of lines between empty lines; a run over `cap` bytes becomes an _Oversize."""
    parts: list[bytes] = []
    size, head = 0, None  # head: set once the paragraph in progress passed the cap

    def done() -> Iterator[bytes | _Oversize]:
        if head is not None:
            yield _Oversize(head, size)
        elif parts:
            yield b"".join(parts)

    for line in _lines(f, cap, prefix):
        if line in (b"\n", b"\r\n"):
            yield from done()
            parts, size, head = [], 0, None
            continue
        big = isinstance(line, _Oversize)
        n = line.size if big else len(line)
        if head is None and (big or size + n > cap):
            head = (b"".join(parts) + (line.head if big else line))[:prefix]
            parts = []
        elif head is None:
            parts.append(line)
        size += n
    yield from done()


# ---------------------------------------------------------------------------------------
# Input files: decompressed in bounded reads, damage classified once (warc.py shares
# `not_a_regular_file` and `printable`)


def not_a_regular_file(url: str) -> str | None:
    """What a local input is when it is not a regular file ("a FIFO", ...), else None.

    Opening a FIFO blocks until a writer comes and a device may never end, so they are
    refused before they are opened. Remote URLs are objects, never special files.
    """
    fs, path = fsspec.core.url_to_fs(url)
    if not isinstance(fs, LocalFileSystem):
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # opening it says why
    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISDIR, "a directory"))
    return next((f"{printable(url)} is {what}" for test, what in kinds if test(mode)),
                f"{printable(url)} is not a regular file")


def printable(text: str) -> str:
    """`text` with its lone surrogates escaped, so that it encodes as UTF-8 (Parquet).

    A file name that is not UTF-8 reaches Python with its bytes as surrogates
    (b'caf\\xe9' -> 'caf\\udce9'); those come back as `\\xe9`, any other as `\\ud83d`.
    """
    if not _SURROGATE.search(text):
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _codec_of(url: str) -> str | None:
    return CODECS.get(PurePosixPath(url).suffix.lower())


class _Damaged(Exception):
    """A file that cannot be read on: `reason` is what rejected/ and the funnel say."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


class _ReadFailed(Exception):
    """The file's own read failed (not its decompression): the cause is chained."""


class _Tap:
    """The raw file as decompressors read it: a failed read is told apart from bad data."""

    def __init__(self, raw):
        self.raw = raw
        self.size = 0  # bytes read so far
        self.frames: _ZstdFrames | None = None  # set by a zstd reader

    def read(self, n: int = -1) -> bytes:
        try:
            data = self.raw.read(n)
        except OSError as exc:
            raise _ReadFailed(str(exc)) from exc
        self.size += len(data)
        if self.frames is not None:
            self.frames.feed(data)
        return data

    def read_framed(self, n: int = -1) -> bytes:
        """A read that ends where the next zstd block or frame starts, so that the zstd
        reader hands out what the blocks before a damaged one hold before it fails."""
        return self.read(self.frames.until_next(n))


@contextmanager
def _open_input(url: str, kind: str | None) -> Iterator[Any]:
    """The file open for reading, decompressed when `kind` is a codec; any failure while
    the block reads it becomes `_Damaged` with a reason for that kind.

    Every decompressor here returns at most what it is asked for per read (GzipFile,
    `_Streams`, zstandard's stream reader), so a bomb streams through bounded reads.
    """
    try:
        raw = fsspec.open(url, "rb").open()
    except OSError as exc:
        raise _Damaged("unreadable_file", f"cannot open: {exc}") from exc
    tap = _Tap(raw)
    try:
        if kind == "gz":
            yield gzip.GzipFile(fileobj=tap, mode="rb")
        elif kind == "bz2":
            yield io.BufferedReader(_Streams(tap, bz2.BZ2Decompressor))
        elif kind == "xz":
            yield io.BufferedReader(_Streams(tap, lzma.LZMADecompressor))
        elif kind == "zst":
            yield io.BufferedReader(_ZstdReader(tap))
        else:
            yield raw
    except _ReadFailed as exc:
        raise _Damaged("unreadable_file", f"read failed: {exc}") from exc
    except EOFError as exc:
        if kind not in CODECS.values():
            raise
        if tap.size == 0:  # a 0-byte .bz2/.xz is an empty file, as a 0-byte .gz/.zst is
            return
        raise _Damaged(f"truncated:{kind}", f"the file ends inside a {kind} stream") from exc
    except (OSError, ValueError, RuntimeError, zlib.error, lzma.LZMAError, zstandard.ZstdError,
            pa.ArrowException) as exc:
        if kind is None:
            raise _Damaged("unreadable_file", f"read failed: {exc}") from exc
        what = "Parquet file" if kind == "parquet" else f"{kind} data"
        raise _Damaged(f"corrupt:{kind}", f"bad {what}: {exc or type(exc).__name__}") from exc
    finally:
        raw.close()


class _Streams(io.RawIOBase):
    """bz2 or xz streams one after another, at most one buffer inflated per read.

    Not the stdlib's BZ2File/LZMAFile: they take bytes after a stream's end that do not
    start a good stream for trailing junk and stop there in silence, so damage near the start
    of any stream but the first would lose the rest of the file without a word.
    """

    def __init__(self, tap: _Tap, decompressor: Any):
        self.tap, self.new = tap, decompressor
        self.dec = decompressor()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            if self.dec.eof:
                data = self.dec.unused_data or self.tap.read(BLOCK)
                if not data:
                    return 0
                self.dec = self.new()
            elif self.dec.needs_input:
                data = self.tap.read(BLOCK)
                if not data:
                    raise EOFError("the file ends inside a stream")
            else:
                data = b""  # it holds input it has not inflated yet
            out = self.dec.decompress(data, len(buffer))
            if out:
                buffer[:len(out)] = out
                return len(out)


class _ZstdReader(io.RawIOBase):
    """zstd frames one after another, read in bounded steps; a cut-off frame raises
    EOFError and bytes that are no frame raise ZstdError (zstandard's reader would return
    a clean end for the first and, at a frame boundary, sometimes for the second)."""

    def __init__(self, tap: _Tap):
        self.tap = tap
        self.frames = tap.frames = _ZstdFrames()
        self.reader = zstandard.ZstdDecompressor().stream_reader(
            _Framed(tap), read_size=BLOCK, read_across_frames=True)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            size = self.tap.size
            n = self.reader.readinto1(buffer)  # one read of the input at most
            if n:
                return n
            if self.tap.size == size:  # nothing more to read: the end
                self.frames.check_end()
                return 0


class _Framed:
    def __init__(self, tap: _Tap):
        self.read = tap.read_framed


class _ZstdFrames:
    """Walks the frame layout of zstd bytes as they are read (RFC 8878: frame header,
    blocks, checksum; skippable frames), to know whether the input ended between frames.
    Holds a few header bytes, never data."""

    MAGIC, SKIPPABLE = 0xFD2FB528, 0x184D2A50

    def __init__(self):
        self.head = bytearray()  # the header bytes being collected
        self.need = 4  # how many the current step wants
        self.skip = 0  # bytes to pass over before the next step
        self.step = self._magic
        self.checksum = 0
        self.at = 0  # bytes fed so far
        self.bad: str | None = None

    def feed(self, data: bytes) -> None:
        view, pos = memoryview(data), 0
        while pos < len(view) and self.bad is None:
            if self.skip:
                n = min(self.skip, len(view) - pos)
                self.skip -= n
                pos += n
                continue
            n = min(self.need - len(self.head), len(view) - pos)
            self.head += view[pos:pos + n]
            pos += n
            if len(self.head) == self.need:
                head = int.from_bytes(self.head, "little")
                self.head.clear()
                self.step(head, self.at + pos)
        self.at += len(view)

    def until_next(self, n: int) -> int:
        """`n`, or fewer bytes if the next header starts sooner."""
        if self.bad is not None:
            return n
        left = self.skip or self.need - len(self.head)
        return left if n < 0 else min(n, left)

    def check_end(self) -> None:
        if self.bad is not None:
            raise zstandard.ZstdError(self.bad)
        if self.step != self._magic or self.head or self.skip:
            raise EOFError("the file ends inside a zstd frame")

    def _magic(self, magic: int, at: int) -> None:
        if magic == self.MAGIC:
            self.need, self.step = 1, self._descriptor
        elif magic & 0xFFFFFFF0 == self.SKIPPABLE:
            self.need, self.step = 4, self._skippable
        else:
            self.bad = f"no zstd frame at byte {at - 4}"

    def _skippable(self, size: int, at: int) -> None:
        self.skip, self.need, self.step = size, 4, self._magic

    def _descriptor(self, fhd: int, at: int) -> None:
        single_segment = fhd >> 5 & 1
        self.checksum = 4 if fhd & 4 else 0
        self.skip = ((0 if single_segment else 1) + (0, 1, 2, 4)[fhd & 3]
                     + (single_segment, 2, 4, 8)[fhd >> 6])
        self.need, self.step = 3, self._block

    def _block(self, header: int, at: int) -> None:
        last, kind, size = header & 1, header >> 1 & 3, header >> 3
        if kind == 3:
            self.bad = f"reserved zstd block type at byte {at - 3}"
            return
        self.skip = 1 if kind == 1 else size
        if last:
            self.skip += self.checksum
            self.need, self.step = 4, self._magic
