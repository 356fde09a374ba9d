"""`minhash_buckets`: phase 2 of MinHash-LSH, candidate pairs from shared band keys.

Input: one `minhash_signatures` stage. One task per partition p (`p<NNNNN>`) reads the
partition-p bucket file of every shard, sorts the rows by (band, key, doc) and pairs every
document with the smallest document of each group that shares a band key (a star, so a
group of k documents gives k-1 pairs, not k^2/2). Its memory is that one partition:
docs x bands x 18 bytes / partitions, set by the signatures stage's `partitions`, never
the whole corpus. Output: `pairs/p<NNNNN>.parquet` (a, b: uint64 document references,
a < b, unique within the partition).

`verify_threshold` (optional): drop candidate pairs whose estimated Jaccard (share of
equal signature values, read from the signatures' memory-mapped .npy files, only the rows
needed) is below it. This removes LSH false positives; it can also cut a true chain that
ran through a false anchor, so leave it off when recall matters most.

A last task, `shards`, writes `meta/shards.json`: the corpus-order table of input shards
and the MinHash parameters, which the clusters and filter phases read.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from pipeline.minhash import (
    SHARDS_TABLE,
    candidate_pairs,
    commit_json,
    commit_table,
    estimated_jaccard,
    files_under,
    input_of_kind,
    ref_row,
    ref_shard,
)
from pipeline.stage import Counts, Params, Stage, StageInput, Task, TaskResult

SHARDS_TASK = "shards"


class MinhashBucketsParams(Params):
    verify_threshold: float | None = Field(default=None, ge=0.0, le=1.0)


class MinhashBuckets(Stage):
    kind = "minhash_buckets"
    version = 1
    Params = MinhashBucketsParams

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        signatures = input_of_kind(self.name, inputs, "minhash_signatures")
        metas = sorted(
            (json.loads(Path(f).read_text()) for f in files_under(signatures, "meta")),
            key=lambda m: m["shard_index"],
        )
        if not metas:
            raise ValueError(f"stage '{self.name}': input '{signatures.name}' has no shards")
        partitions = metas[0]["partitions"]
        sig_files = tuple(
            str(signatures.directory / m["signatures"]) if m["signatures"] else "" for m in metas
        )
        if self.params.verify_threshold is not None and not all(sig_files):
            raise ValueError(
                f"stage '{self.name}': params.verify_threshold needs the signatures: set "
                f"keep_signatures: true in stage '{signatures.name}'"
            )
        buckets = files_under(signatures, "buckets")
        tasks = []
        for p in range(partitions):
            suffix = f"-p{p:05d}.parquet"
            files = tuple(f for f in buckets if f.endswith(suffix))
            if len(files) != len(metas):
                raise ValueError(
                    f"stage '{self.name}': partition {p}: {len(files)} bucket files for "
                    f"{len(metas)} shards in '{signatures.name}'"
                )
            tasks.append(Task(name=f"p{p:05d}", inputs=files,
                              payload=(("signatures", sig_files), ("num_perm", metas[0]["num_perm"]))))
        meta_files = tuple(f for f in files_under(signatures, "meta"))
        tasks.append(Task(name=SHARDS_TASK, inputs=meta_files))
        return tasks

    def run_task(self, task: Task) -> TaskResult:
        start = time.perf_counter()
        if task.name == SHARDS_TASK:
            return self._write_shards_table(task, start)
        tables = [pq.read_table(f) for f in task.inputs]
        table = pa.concat_tables(tables) if tables else pa.table({"band": [], "key": [], "doc": []})
        band = table.column("band").to_numpy()
        key = table.column("key").to_numpy()
        doc = table.column("doc").to_numpy()
        a, b = candidate_pairs(band, key, doc)
        info = {"band_rows": len(doc), "candidate_pairs": len(a)}
        if self.params.verify_threshold is not None and len(a):
            similarity = self._estimated_jaccard(a, b, task)
            keep = similarity >= self.params.verify_threshold
            info["rejected_by_verification"] = int((~keep).sum())
            a, b = a[keep], b[keep]
        final = self.stage_dir / "pairs" / f"{task.name}.parquet"
        entry = commit_table(self.stage_dir, final, pa.table({"a": a, "b": b}))
        counts = Counts(n_in=len(doc), kept=len(a))
        info["pairs"] = len(a)
        return TaskResult([entry], counts, time.perf_counter() - start, info=info)

    def _estimated_jaccard(self, a: np.ndarray, b: np.ndarray, task: Task) -> np.ndarray:
        paths = task.get("signatures")
        num_perm = task.get("num_perm")
        sig_a = np.empty((len(a), num_perm), dtype=np.uint32)
        sig_b = np.empty((len(b), num_perm), dtype=np.uint32)
        for refs, out in ((a, sig_a), (b, sig_b)):
            shard = ref_shard(refs)
            for index in np.unique(shard):
                # Memory-mapped: only the pages of the rows asked for are read.
                matrix = np.load(paths[index], mmap_mode="r")
                mask = shard == index
                out[mask] = matrix[ref_row(refs[mask])]
        return estimated_jaccard(sig_a, sig_b)

    def _write_shards_table(self, task: Task, start: float) -> TaskResult:
        metas = sorted((json.loads(Path(f).read_text()) for f in task.inputs),
                       key=lambda m: m["shard_index"])
        if [m["shard_index"] for m in metas] != list(range(len(metas))):
            raise ValueError(f"stage '{self.name}': shard indices are not 0..{len(metas) - 1}")
        params = {k: metas[0][k] for k in ("ngram", "num_perm", "seed", "bands", "rows_per_band",
                                           "partitions")}
        table = {
            "params": params,
            "shards": [{k: m[k] for k in ("shard_index", "name", "shard", "rows")} for m in metas],
        }
        entry = commit_json(self.stage_dir, self.stage_dir / "meta" / SHARDS_TABLE, table)
        rows = sum(m["rows"] for m in metas)
        return TaskResult([entry], Counts(n_in=rows, kept=rows), time.perf_counter() - start)
