"""`exact_dedup`: remove documents whose normalized text (optionally with URL) repeats.

Two documents are exact duplicates when they have the same normalized word sequence
(lowercase, punctuation and whitespace folded: the words MinHash sees, see
stages/dedup/minhash.py), and, with `include_url`, the same URL. The key is a 128-bit
fingerprint of that sequence.

The first copy in corpus order is kept: inputs in config order, shards in manifest
order, rows in file order. Later copies go to rejected/ as `exact_dedup:duplicate`.
Columns: `exact_dup_of` (the kept twin's id on rejected copies, null on kept documents)
and `exact_dup_count` (copies of this text in the corpus, 1 when unique).

One task reads the corpus twice: first only the text (and URL) columns, to build the
fingerprint index (24 bytes per document in numpy arrays: about 24 MB per million
documents), then every document, to write one output shard per input shard with the same
name. It is I/O bound and keeps one shard in memory at a time besides the index. For
corpora whose index does not fit in memory, the minhash pipeline (whose partitions bound
its memory) removes exact copies too: identical texts share every band key.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.artifacts import DocShardWriter, read_doc_shard
from pipeline.documents import Rejected, score_columns_of
from stages.dedup.minhash import text_fingerprints
from pipeline.stage import Counts, Params, Stage, StageInput, Task, TaskResult

REASON = "exact_dedup:duplicate"
BATCH_ROWS = 4096


class ExactDedupParams(Params):
    include_url: bool = False  # the same text under another URL is then not a duplicate


class ExactDedup(Stage):
    kind = "exact_dedup"
    version = 1
    Params = ExactDedupParams
    doc_stage = True
    score_columns = {"exact_dup_of": pa.string(), "exact_dup_count": pa.int64()}

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        shards = [(inp.name, s) for inp in inputs for s in inp.shards]
        stems = [Path(s).stem for _, s in shards]
        if len(set(stems)) != len(stems):
            stems = [f"{name}-{Path(s).stem}" for name, s in shards]
        return [Task(name="exact", inputs=tuple(s for _, s in shards),
                     payload=(("names", tuple(stems)),))]

    def run_task(self, task: Task) -> TaskResult:
        start = time.perf_counter()
        kept_ref, copies = self._index(task.inputs)
        counts = Counts()
        files = []
        kept_ids: dict[int, str] = {}  # ids of kept documents that have later copies
        ref = 0
        for path, name in zip(task.inputs, task.get("names")):
            columns = {**score_columns_of(pq.read_schema(path)), **self.score_columns}
            writer = DocShardWriter(self.stage_dir, self.name, lambda _, n=name: f"{n}.parquet",
                                    columns)
            try:
                for doc in read_doc_shard(path):
                    size = len(doc.text.encode("utf-8", "surrogatepass"))
                    counts.n_in += 1
                    counts.bytes_in += size
                    count = int(copies[ref])
                    if kept_ref[ref] == ref:
                        if count > 1:
                            kept_ids[ref] = doc.id
                        doc.columns.update(exact_dup_of=None, exact_dup_count=count)
                        writer.keep(doc)
                        counts.kept += 1
                        counts.bytes_out += size
                    else:
                        doc.columns.update(exact_dup_of=kept_ids[int(kept_ref[ref])],
                                           exact_dup_count=count)
                        writer.reject(Rejected(doc, REASON))
                        counts.dropped[REASON] += 1
                    ref += 1
                files += writer.close()
            except BaseException:
                writer.abort()
                raise
        if ref != len(kept_ref):
            raise ValueError(f"stage '{self.name}': the input shards changed while it ran")
        return TaskResult(files, counts, time.perf_counter() - start)

    def _index(self, paths: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """For every document in corpus order: the position of its first copy, and its copies."""
        columns = ["text", "url"] if self.params.include_url else ["text"]
        parts = []
        for path in paths:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=columns):
                urls = batch.column("url") if self.params.include_url else None
                parts.append(text_fingerprints(batch.column("text"), urls))
        fingerprints = np.concatenate(parts) if parts else np.empty((0, 2), np.uint64)
        n = len(fingerprints)
        positions = np.arange(n)
        # Sorted by fingerprint, then position: each group starts with its first copy.
        order = np.lexsort((positions, fingerprints[:, 1], fingerprints[:, 0]))
        fp = fingerprints[order]
        starts = np.ones(n, dtype=bool)
        starts[1:] = (fp[1:] != fp[:-1]).any(axis=1)
        group = np.cumsum(starts) - 1
        first = order[starts]
        sizes = np.bincount(group)
        kept_ref = np.empty(n, dtype=np.int64)
        copies = np.empty(n, dtype=np.int64)
        kept_ref[order] = first[group]
        copies[order] = sizes[group]
        return kept_ref, copies
