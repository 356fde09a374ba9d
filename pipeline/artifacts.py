"""Files a stage leaves behind, written so that a kill at any moment loses nothing done.

Commit protocol: a file is written whole to a local temporary file,
then committed in one step (`pipeline/storage.py`: fsync and rename on local disk, one
upload on an object store, where no partial object is ever visible), and only then
recorded in the stage's `manifest.json`. The manifest entry, with the file's sha256,
document count and byte size, is the only proof that a file is done: a file with the right
name but no entry is an orphan of a killed run and is deleted before the task is redone.
Only the driver writes the manifest; workers write files and return their entries. The
stage directory is a `Path` or, for a run directory on an object store, a `UPath`.

Reading checks the same promise from the other side: inside a task (`verified_inputs`,
entered by `pipeline.stage.execute_task`), the first `open_parquet` of an upstream file on
local disk hashes it and compares with the sha256 its manifest recorded, so a byte flipped
on disk after the commit stops the task with the file's name (`DamagedInput`) instead of
silently changing this stage's output. Hashing reads the file once more (about 1 GB/s,
small beside parsing it). Files on an object store are not re-hashed: the store checks
its own objects, and the download would double.
"""

from __future__ import annotations

import json
import shutil
from contextvars import ContextVar
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.documents import Document, Rejected, doc_schema, rejected_schema
from pipeline.storage import TMP_MARK, sha256_file

MANIFEST = "manifest.json"
STATS = "stats.json"
PARQUET_OPTIONS = dict(compression="zstd", write_statistics=True)
# Columns whose values are (almost) all distinct are not dictionary-encoded: for them the
# writer builds a dictionary only to give it up, and the reader of a page that was
# dictionary-encoded decodes document text about 4x slower than a plain one (measured on
# a 18 MB shard: 0.080 s against 0.022 s). The other columns (source, lang, reasons, scores)
# keep the dictionary.
UNIQUE_COLUMNS = frozenset({"id", "text", "url", "metadata"})
ROWS_PER_BATCH = 1024
# A batch (and so a Parquet row group) is also cut once its text passes this size, so a
# writer or a reader of shards of near-cap documents holds MBs, not 1024 x the cap.
MAX_BATCH_TEXT = 32 << 20


@dataclass(frozen=True)
class FileEntry:
    """A committed file: its path relative to the stage directory, and how to check it."""

    path: str
    sha256: str
    docs: int
    bytes: int


def tmp_path_for(final: Path) -> Path:
    """A unique local temporary file for `final`'s bytes, so two attempts never share one."""
    return storage.local_tmp_for(final)


def write_json_atomic(path: Path, obj: Any) -> None:
    storage.write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def commit_artifact(stage_dir: Path, tmp: Path, final: Path, docs: int = 0) -> FileEntry:
    """Commit a file written by a task (a model, a tokenizer) and describe it for the manifest."""
    entry = FileEntry(
        path=final.relative_to(stage_dir).as_posix(),
        sha256=sha256_file(tmp),
        docs=docs,
        bytes=tmp.stat().st_size,
    )
    storage.commit(tmp, final)
    return entry


def commit_copy(stage_dir: Path, source: Path | str, rel: str) -> FileEntry:
    """Copy `source` (a local path or a URL) into the stage directory as `rel`, committed."""
    final = stage_dir / rel
    tmp = tmp_path_for(final)
    with storage.open_input(source) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return commit_artifact(stage_dir, tmp, final)


class ParquetShardWriter:
    """Streams rows into Parquet shards, rotating to a new file every `max_docs` documents.

    Rows are buffered `ROWS_PER_BATCH` at a time or until their text passes
    `MAX_BATCH_TEXT`, so memory is bounded by the batch (and readers by the row group), not
    the shard. Shards are named by `name_for(index)`; a shard is committed when it is full
    or when the writer closes. Zero documents still commit one (empty) shard, so every task
    leaves proof that it ran.
    """

    def __init__(
        self,
        stage_dir: Path,
        subdir: str,
        name_for: Callable[[int], str],
        schema: pa.Schema,
        max_docs: int | None = None,
    ):
        self.stage_dir = stage_dir
        self.directory = stage_dir / subdir
        self.name_for = name_for
        self.schema = schema
        self.max_docs = max_docs
        self.entries: list[FileEntry] = []
        self._rows: list[dict[str, Any]] = []
        self._text_chars = 0
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._docs_in_shard = 0

    def write(self, row: dict[str, Any]) -> None:
        if self._writer is None:
            self._open()
        self._rows.append(row)
        self._text_chars += len(row.get("text") or "")
        self._docs_in_shard += 1
        if len(self._rows) >= ROWS_PER_BATCH or self._text_chars >= MAX_BATCH_TEXT:
            self._flush()
        if self.max_docs is not None and self._docs_in_shard >= self.max_docs:
            self._commit()

    def close(self) -> list[FileEntry]:
        if self._writer is None and not self.entries:
            self._open()
        if self._writer is not None:
            self._commit()
        return self.entries

    def abort(self) -> None:
        """Drop the shard in progress (on an exception): its temp file must not linger."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def _open(self) -> None:
        final = self.directory / self.name_for(len(self.entries))
        self._tmp = tmp_path_for(final)
        dictionary = [name for name in self.schema.names if name not in UNIQUE_COLUMNS]
        self._writer = pq.ParquetWriter(self._tmp, self.schema, use_dictionary=dictionary,
                                        **PARQUET_OPTIONS)
        self._docs_in_shard = 0

    def _flush(self) -> None:
        if self._rows:
            table = pa.Table.from_pylist(self._rows, schema=self.schema)
            self._writer.write_table(table, row_group_size=ROWS_PER_BATCH)
            self._rows = []
            self._text_chars = 0

    def _commit(self) -> None:
        self._flush()
        self._writer.close()
        self._writer = None
        final = self.directory / self.name_for(len(self.entries))
        self.entries.append(commit_artifact(self.stage_dir, self._tmp, final, self._docs_in_shard))
        self._tmp = None


class DocShardWriter:
    """Kept documents to `shards/`, rejected ones to `rejected/`, with the same shard names."""

    def __init__(
        self,
        stage_dir: Path,
        stage_name: str,
        name_for: Callable[[int], str],
        score_columns: dict[str, pa.DataType],
        max_docs: int | None = None,
    ):
        self.stage_name = stage_name
        self.score_columns = set(score_columns)
        self.kept = ParquetShardWriter(
            stage_dir, "shards", name_for, doc_schema(score_columns), max_docs
        )
        self.rejected = ParquetShardWriter(
            stage_dir, "rejected", name_for, rejected_schema(score_columns), max_docs
        )

    def keep(self, doc: Document) -> None:
        self.kept.write(self._row(doc))

    def reject(self, rejected: Rejected) -> None:
        row = self._row(rejected.doc)
        row.update(
            stage=self.stage_name,
            reason=rejected.reason,
            error=rejected.error,
            outcome=rejected.outcome,
        )
        self.rejected.write(row)

    def close(self) -> list[FileEntry]:
        return self.kept.close() + self.rejected.close()

    def _row(self, doc: Document) -> dict[str, Any]:
        # Arrow would silently drop a column the schema lacks: refuse instead.
        if not self.score_columns.issuperset(doc.columns):
            unknown = sorted(set(doc.columns) - self.score_columns)
            raise ValueError(
                f"stage '{self.stage_name}': document {doc.id!r} has columns {unknown} that "
                "are neither declared in the stage's score_columns nor in its input shards"
            )
        return doc.to_row()

    def abort(self) -> None:
        self.kept.abort()
        self.rejected.abort()


class DamagedInput(RuntimeError):
    """An upstream file whose bytes are not those its manifest recorded."""


# Inside a task: the manifest sha256 of each input file, and the files already checked.
_EXPECTED: ContextVar[tuple[dict[str, str], set[str]] | None] = ContextVar(
    "lmforge_expected_inputs", default=None)


@contextmanager
def verified_inputs(checksums: dict[str, str]) -> Iterator[None]:
    """Within the block, `open_parquet` checks listed local files against `checksums`."""
    token = _EXPECTED.set((checksums, set()))
    try:
        yield
    finally:
        _EXPECTED.reset(token)


def verify_input(path: Path | str) -> None:
    """Raise DamagedInput if `path` is a listed input whose sha256 has changed (checked
    once per task; a no-op outside `verified_inputs` and for object-store files)."""
    expected = _EXPECTED.get()
    key = str(path)
    if expected is None or key not in expected[0] or key in expected[1] \
            or not storage.is_local(key):
        return
    got = sha256_file(key)
    if got != expected[0][key]:
        raise DamagedInput(
            f"{key}: damaged: its sha256 is {got[:12]}..., its stage's manifest recorded "
            f"{expected[0][key][:12]}... (the file changed after it was committed); run "
            "`lmforge verify RUN_DIR --repair`, then run again to rebuild it")
    expected[1].add(key)


def read_doc_shard(path: Path | str, batch_size: int = ROWS_PER_BATCH) -> Iterable[Document]:
    """Stream the documents of one doc shard, one record batch in memory at a time."""
    with open_parquet(path) as parquet:
        for batch in parquet.iter_batches(batch_size=batch_size):
            for row in batch.to_pylist():
                yield Document.from_row(row)


@contextmanager
def open_parquet(path: Path | str) -> Iterator[pq.ParquetFile]:
    """A committed Parquet file, on local disk or in the object store, open for reading
    (checked against its manifest sha256 first inside a task: `verified_inputs`)."""
    verify_input(path)
    with (nullcontext(path) if storage.is_local(path) else storage.open_input(path)) as source:
        parquet = pq.ParquetFile(source)
        try:
            yield parquet
        finally:
            parquet.close()


def shard_schema(path: Path | str) -> pa.Schema:
    with open_parquet(path) as parquet:
        return parquet.schema_arrow


def entry_to_dict(entry: FileEntry) -> dict[str, Any]:
    return asdict(entry)
