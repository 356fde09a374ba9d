"""`minhash_buckets`: phase 2 of MinHash-LSH, candidate pairs from shared band keys.

Input: one `minhash_signatures` stage. One task per partition p (`p<NNNNN>`) reads the
partition-p bucket file of every shard, sorts the rows by (band, key, doc) and pairs every
document with the smallest document of each group that shares a band key (a star, so a
group of k documents gives k-1 pairs, not k^2/2). Its memory is that one partition:
docs x bands x 18 bytes / partitions, set by the signatures stage's `partitions`, never
the whole corpus. Output: `pairs/p<NNNNN>.parquet` (a, b: uint64 document references,
a < b, unique within the partition).

`verify` drops candidate pairs whose Jaccard is below `verify_threshold` (default: the
signatures stage's `threshold`), i.e. the LSH false positives:
- `exact` (default): the true Jaccard of the two shingle sets (the signatures stage's
  `keep_shingles` files, memory-mapped: only the documents in pairs are read). LSH then
  only has to find candidates, so a recall-weighted band choice costs verification time,
  not precision (bench/dedup.py: F1 ~0.99 at threshold 0.8, against ~0.87 without).
- `estimated`: the share of equal MinHash values (`keep_signatures` files); noisy near
  the threshold (standard deviation about sqrt(J(1-J)/num_perm)).
- `off`: every pair that shares a band key is a duplicate (datatrove's behaviour).
A pair is verified against its group's anchor only, so a true pair B~C whose only shared
band also held a dissimilar anchor A is lost in that band; it survives in any other band
B and C share.

In `lmforge status`, a partition's `in` is band-key rows read and `kept` is pairs written
(details in the manifest's task `info`). A last task, `shards`, writes `meta/shards.json`: the corpus-order table of input shards
and the MinHash parameters, which the clusters and filter phases read.
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from pipeline import storage
from pipeline.artifacts import open_parquet
from pipeline.stage import Counts, Params, Stage, StageInput, Task, TaskResult
from stages.dedup.minhash import (
    SHARDS_TABLE,
    candidate_pairs,
    commit_json,
    commit_table,
    estimated_jaccard,
    exact_jaccard,
    gather_sets,
    files_under,
    ref_row,
    ref_shard,
)

SHARDS_TASK = "shards"
VERIFY_CHUNK = 50_000  # pairs verified at once: bounds the gathered shingle sets


class MinhashBucketsParams(Params):
    verify: Literal["exact", "estimated", "off"] = "exact"
    verify_threshold: float | None = Field(default=None, ge=0.0, le=1.0)


class MinhashBuckets(Stage):
    kind = "minhash_buckets"
    version = 1
    units = "band rows -> pairs"  # `in` counts band rows, `kept` counts pairs
    Params = MinhashBucketsParams

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        signatures = self.input_of_kind(inputs, "minhash_signatures")
        metas = sorted(
            (json.loads(storage.read_text(f)) for f in files_under(signatures, "meta")),
            key=lambda m: m["shard_index"],
        )
        if not metas:
            raise ValueError(f"stage '{self.name}': input '{signatures.name}' has no shards")
        partitions = metas[0]["partitions"]
        needed = {"exact": ("shingles", "shingle_offsets", "keep_shingles"),
                  "estimated": ("signatures", "signatures", "keep_signatures")}
        verify_files: tuple = ()
        if self.params.verify != "off":
            values_key, offsets_key, flag = needed[self.params.verify]
            if not all(m[values_key] for m in metas):
                raise ValueError(
                    f"stage '{self.name}': params.verify {self.params.verify!r} needs "
                    f"{flag}: true in stage '{signatures.name}' (or verify: off)"
                )
            # (path, sha256) of each file: on an object store, fetched once and checked.
            verify_files = tuple(
                tuple((path, signatures.checksum(path))
                      for path in (str(signatures.directory / m[values_key]),
                                   str(signatures.directory / m[offsets_key])))
                for m in metas
            )
        threshold = self.params.verify_threshold
        payload = (("verify_files", verify_files), ("num_perm", metas[0]["num_perm"]),
                   ("threshold", metas[0]["threshold"] if threshold is None else threshold))
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
            tasks.append(Task(name=f"p{p:05d}", inputs=files, payload=payload))
        meta_files = tuple(f for f in files_under(signatures, "meta"))
        tasks.append(Task(name=SHARDS_TASK, inputs=meta_files))
        return tasks

    def run_task(self, task: Task) -> TaskResult:
        if task.name == SHARDS_TASK:
            return self._write_shards_table(task)
        tables = [_read_table(f) for f in task.inputs]
        table = pa.concat_tables(tables) if tables else pa.table({"band": [], "key": [], "doc": []})
        band = table.column("band").to_numpy()
        key = table.column("key").to_numpy()
        doc = table.column("doc").to_numpy()
        a, b = candidate_pairs(band, key, doc)
        info = {"band_rows": len(doc), "candidate_pairs": len(a)}
        if self.params.verify != "off" and len(a):
            keep = np.concatenate([
                self._similarity(a[lo: lo + VERIFY_CHUNK], b[lo: lo + VERIFY_CHUNK], task)
                >= task.get("threshold")
                for lo in range(0, len(a), VERIFY_CHUNK)
            ])
            info["rejected_by_verification"] = int((~keep).sum())
            a, b = a[keep], b[keep]
        final = self.stage_dir / "pairs" / f"{task.name}.parquet"
        entry = commit_table(self.stage_dir, final, pa.table({"a": a, "b": b}))
        counts = Counts(n_in=len(doc), kept=len(a))
        info["pairs"] = len(a)
        return TaskResult([entry], counts, info=info)

    def _similarity(self, a: np.ndarray, b: np.ndarray, task: Task) -> np.ndarray:
        files = task.get("verify_files")
        if self.params.verify == "estimated":
            sig_a, sig_b = (_gather_rows(refs, files, task.get("num_perm")) for refs in (a, b))
            return estimated_jaccard(sig_a, sig_b)
        (a_owner, a_values), (b_owner, b_values) = (_gather_shingles(r, files) for r in (a, b))
        return exact_jaccard(a_owner, a_values, b_owner, b_values, len(a))

    def _write_shards_table(self, task: Task) -> TaskResult:
        metas = sorted((json.loads(storage.read_text(f)) for f in task.inputs),
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
        # Counts stay empty: they would add documents to a funnel of band rows and pairs.
        return TaskResult([entry], Counts(),
                          info={"shards": len(metas), "docs": sum(m["rows"] for m in metas)})


def _gather_rows(refs: np.ndarray, files: tuple, num_perm: int) -> np.ndarray:
    """Signature rows of documents, from memory-mapped per-shard matrices."""
    out = np.empty((len(refs), num_perm), dtype=np.uint32)
    shard = ref_shard(refs)
    for index in np.unique(shard):
        mask = shard == index
        out[mask] = _memory_mapped(files[index][0])[ref_row(refs[mask])]
    return out


def _gather_shingles(refs: np.ndarray, files: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Shingle sets of documents: (position in `refs` of each value, values)."""
    shard = ref_shard(refs)
    owners, values = [], []
    for index in np.unique(shard):
        where = np.flatnonzero(shard == index)
        shingles, offsets = (_memory_mapped(f) for f in files[index])
        got, sizes = gather_sets(shingles, offsets, ref_row(refs[where]))
        owners.append(np.repeat(where, sizes))
        values.append(got)
    if not values:
        return np.empty(0, np.int64), np.empty(0, np.uint32)
    return np.concatenate(owners), np.concatenate(values)


def _read_table(path: str) -> pa.Table:
    with open_parquet(path) as parquet:
        return parquet.read()


def _memory_mapped(file: tuple[str, str | None]) -> np.ndarray:
    """An .npy file of the signatures stage, memory-mapped (a local copy of a URL)."""
    return np.load(storage.local_copy(*file), mmap_mode="r")
