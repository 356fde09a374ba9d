"""`exact_fingerprints`: phase 1 of exact dedup, every document's fingerprint, partitioned.

Inputs: one or more doc stages. Corpus order is inputs in config order, shards in
manifest order, rows in file order; a shard's place in it is its `shard_index`, and a
document is referenced as `shard_index << 32 | row` (as in the MinHash phases), so the
smallest reference of a group of copies is its first copy in corpus order.

One task per input shard. For every document: the 128-bit fingerprint of its normalized
word sequence, with its URL when `include_url` (`text_fingerprints` in minhash.py). This
is the first half of an on-disk shuffle: rows (hi, lo, doc, id) go to
`fingerprints/<shard>-p<NNNNN>.parquet` by `hi % partitions`, one file per partition
(empty ones too), so the `exact_duplicates` task for partition p reads one file per
shard and no task ever holds the whole index. Also `meta/<shard>.json`: the shard's
index, path (relative to the run directory), output name and row count.

Memory: one batch of texts (BATCH_ROWS documents) plus one shard's fingerprint rows
(24 bytes and the id per document).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from pipeline.artifacts import open_parquet
from pipeline.stage import Counts, Params, Stage, StageInput, Task, TaskResult
from stages.dedup.minhash import (
    commit_json,
    commit_table,
    doc_ref,
    run_relative,
    text_fingerprints,
)
from stages.words import text_slices

BATCH_ROWS = 4096


class ExactFingerprintsParams(Params):
    include_url: bool = False  # the same text under another URL is then not a duplicate
    partitions: int = Field(default=16, ge=1, le=65536)  # tasks of exact_duplicates


class ExactFingerprints(Stage):
    kind = "exact_fingerprints"
    version = 1
    Params = ExactFingerprintsParams

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        shards = [(inp.name, s) for inp in inputs for s in inp.shards]
        if not shards:
            raise ValueError(f"stage '{self.name}': its inputs have no doc shards: "
                             f"{[i.name for i in inputs]}")
        names = [Path(s).stem for _, s in shards]
        if len(set(names)) != len(names):
            # The rule DocStage follows, so the filter's output shards keep these names.
            names = [f"{stage}-{Path(s).stem}" for stage, s in shards]
        return [Task(name=name, inputs=(path,), payload=(("shard_index", index),))
                for index, (name, (_, path)) in enumerate(zip(names, shards))]

    def run_task(self, task: Task) -> TaskResult:
        path = task.inputs[0]
        columns = ["id", "text", "url"] if self.params.include_url else ["id", "text"]
        fingerprints, ids = [], []
        counts = Counts()
        with open_parquet(path) as parquet:
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                start = 0
                for texts in text_slices(batch.column("text")):  # bounded word arrays
                    urls = (batch.column("url").slice(start, len(texts))
                            if self.params.include_url else None)
                    fingerprints.append(text_fingerprints(texts, urls))
                    start += len(texts)
                ids.append(batch.column("id").cast(pa.string()))
                counts.n_in += batch.num_rows
                counts.bytes_in += int(pc.sum(pc.binary_length(batch.column("text"))).as_py() or 0)
        counts.kept = counts.n_in
        fp = np.concatenate(fingerprints) if fingerprints else np.empty((0, 2), np.uint64)
        id_column = pa.concat_arrays(ids) if ids else pa.array([], pa.string())
        files = self._write_partitions(task, fp, id_column)
        meta = {"shard_index": task.get("shard_index"), "name": task.name,
                "shard": run_relative(self.stage_dir, path),
                "rows": counts.n_in, "partitions": self.params.partitions}
        files.append(commit_json(self.stage_dir, self.stage_dir / "meta" / f"{task.name}.json", meta))
        return TaskResult(files, counts)

    def _write_partitions(self, task: Task, fp: np.ndarray, ids: pa.Array) -> list:
        partitions = self.params.partitions
        doc = doc_ref(task.get("shard_index"), np.arange(len(fp)))
        part = (fp[:, 0] % np.uint64(partitions)).astype(np.int64)
        order = np.argsort(part, kind="stable")  # rows stay in file order within a partition
        bounds = np.searchsorted(part[order], np.arange(partitions + 1))
        files = []
        for p in range(partitions):
            rows = order[bounds[p]: bounds[p + 1]]
            table = pa.table({"hi": fp[rows, 0], "lo": fp[rows, 1], "doc": doc[rows],
                              "id": ids.take(pa.array(rows, pa.int64()))})
            final = self.stage_dir / "fingerprints" / f"{task.name}-p{p:05d}.parquet"
            files.append(commit_table(self.stage_dir, final, table))
        return files
