"""`ingest`: local or remote text files into document shards.

Reads `.jsonl` (also `.json`/`.ndjson`; plain, `.gz`, `.zst`, `.bz2`, `.xz`), `.txt` and
`.parquet` through fsspec, so `s3://bucket/*.jsonl.gz` works when s3fs is installed.
One task per input file (sorted), shards rotated every `shard_size` documents and named
`<file index>-<part>.parquet`.

Document ids are `<source>#<record index>` unless `id_field` names a field: stable across
machines because `source` is the path relative to the common folder of all inputs.

Nothing is lost without a reason: an invalid JSON line, a line that is not UTF-8, a record
without the text field, an empty or unreadable file, a truncated compressed file: each is
one record counted under `errors[reason]` and kept in `rejected/` with its raw text; the
rest of the file is still read.

Size caps and memory: files stream; one record is read at a time and never past
`max_record_bytes` (default 20 MB; a JSON line, a text file with `txt_split: file`, a
paragraph or a line). A longer record is dropped as `oversize:record` with its first
`rejected_prefix_bytes` kept in rejected/, and the rest of it is skipped in 1 MiB reads.
A text field over the cap in a Parquet input is `oversize:record` too; a Parquet row group
whose uncompressed size is over `max_row_group_bytes` (default 256 MB) is never read and
counts once as the error `oversize:row_group`, its rows skipped. So one task holds about
4 x `max_record_bytes` (bytes, str and parsed JSON) or one row group, plus the engine's
row batches (pipeline/artifacts.py).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

import fsspec
import pyarrow.parquet as pq
from pydantic import Field

from pipeline.documents import Document, Rejected
from pipeline.inputs import expand_paths, fingerprint_files
from pipeline.stage import DocStage, Params, StageInput, Task

COMPRESSIONS = {".gz", ".zst", ".bz2", ".xz"}
BLOCK = 1 << 20
PARQUET_BATCH_ROWS = 64
FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".txt": "txt",
           ".md": "txt", ".parquet": "parquet"}


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
        return expand_paths(self.params.paths, f"stage '{self.name}': params.paths")

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
        count = 0
        try:
            records = {"jsonl": self._jsonl, "txt": self._txt, "parquet": self._parquet}[fmt]
            for count, item in enumerate(records(url, source), start=1):
                yield item
        except (OSError, EOFError, ValueError, RuntimeError) as exc:
            reason = "truncated_file" if count else "unreadable_file"
            yield self._bad(source, f"file@{count}", "", reason, exc)
            return
        if count == 0:
            yield self._bad(source, "file", "", "empty_file", "no records in file")

    def _jsonl(self, url: str, source: str) -> Iterator[Document | Rejected]:
        p = self.params
        with fsspec.open(url, "rb", compression="infer") as f:
            for index, raw in enumerate(_lines(f, p.max_record_bytes, p.rejected_prefix_bytes)):
                if isinstance(raw, _Oversize):
                    yield self._oversize(source, index, raw)
                    continue
                if not raw.strip():
                    continue
                raw = raw.rstrip(b"\r\n")
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield self._bad(source, index, raw.decode("utf-8", "replace"), "invalid_utf8", exc)
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield self._bad(source, index, line, "invalid_json", exc)
                    continue
                yield self._from_record(record, source, index, line)

    def _txt(self, url: str, source: str) -> Iterator[Document | Rejected]:
        p, split = self.params, self.params.txt_split
        with fsspec.open(url, "rb", compression="infer") as f:
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
        with fsspec.open(url, "rb") as f:
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
        return Rejected(doc, reason, error=str(error) or type(error).__name__)


def _format_of(url: str) -> str:
    suffixes = [s.lower() for s in PurePosixPath(url).suffixes]
    while suffixes and suffixes[-1] in COMPRESSIONS:
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
