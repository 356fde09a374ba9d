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
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any, Literal

import fsspec
import pyarrow.parquet as pq
from pydantic import Field

from pipeline.documents import Document, Rejected
from pipeline.inputs import expand_paths, fingerprint_files
from pipeline.stage import DocStage, Params, StageInput, Task

COMPRESSIONS = {".gz", ".zst", ".bz2", ".xz"}
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
        with fsspec.open(url, "rb", compression="infer") as f:
            if not isinstance(f, io.BufferedIOBase):  # zstd's reader cannot iterate lines
                f = io.BufferedReader(f)
            for index, raw in enumerate(f):
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
        with fsspec.open(url, "rb", compression="infer") as f:
            data = f.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield self._bad(source, 0, data.decode("utf-8", "replace"), "invalid_utf8", exc)
            return
        if self.params.txt_split == "file":
            parts = [text] if text.strip() else []
        elif self.params.txt_split == "paragraph":
            parts = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
        else:
            parts = [line for line in text.splitlines() if line.strip()]
        for index, part in enumerate(parts):
            yield Document(id=f"{source}#{index}", text=part, source=source)

    def _parquet(self, url: str, source: str) -> Iterator[Document | Rejected]:
        with fsspec.open(url, "rb") as f:
            index = 0
            for batch in pq.ParquetFile(f).iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    yield self._from_record(row, source, index, None)
                    index += 1

    def _from_record(self, record: Any, source: str, index: int, raw: str | None) -> Document | Rejected:
        p = self.params
        shown = raw if raw is not None else json.dumps(record, default=str, ensure_ascii=False)
        if not isinstance(record, dict):
            return self._bad(source, index, shown, "not_an_object", f"got {type(record).__name__}")
        text = record.get(p.text_field)
        if text is None:
            return self._bad(source, index, shown, "missing_text_field", f"no field {p.text_field!r}")
        if not isinstance(text, str):
            return self._bad(source, index, shown, "text_not_string", f"{p.text_field!r} is {type(text).__name__}")
        doc_id = f"{source}#{index}"
        if p.id_field:
            if record.get(p.id_field) is None:
                return self._bad(source, index, shown, "missing_id_field", f"no field {p.id_field!r}")
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
