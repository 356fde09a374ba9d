"""`minhash_signatures`: phase 1 of MinHash-LSH near-duplicate removal.

One task per input doc shard. For every document: normalized word `ngram` shingles, a
`num_perm`-value MinHash signature (pipeline/minhash.py: vectorized numpy, measured in
bench/dedup.py against datasketch and datatrove), and one 64-bit key per LSH band.
`bands` x `rows` come from `threshold` by datasketch's false-positive/false-negative
optimum, or are given explicitly.

This is the first half of the on-disk shuffle: band keys are partitioned by key into
`partitions` files per shard (`buckets/<shard>-p<NNNNN>.parquet`: band, key, doc), so the
`minhash_buckets` task for partition p reads one file per shard and nobody ever holds all
keys. `partitions` therefore sets the memory of the next phase: about
docs x bands x 18 bytes / partitions.

Also written per shard: `meta/<shard>.json` (its index in corpus order, path, row count,
parameters) and, with `keep_signatures`, `signatures/<shard>.npy` (uint32, rows x
num_perm) for the optional verification of candidate pairs. Documents without any word
have no shingles and no band keys: they are never near-duplicates (exact_dedup handles
empty texts). Documents are referenced as `shard_index << 32 | row`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from pipeline.minhash import (
    MinHasher,
    band_keys,
    commit_array,
    commit_json,
    commit_table,
    doc_ref,
    optimal_bands,
)
from pipeline.stage import Counts, Params, Stage, StageInput, Task, TaskResult

BATCH_ROWS = 1024


class MinhashSignaturesParams(Params):
    ngram: int = Field(default=5, ge=1, le=64)  # words per shingle
    num_perm: int = Field(default=128, ge=2, le=1024)
    seed: int = Field(default=1, ge=0)
    threshold: float = Field(default=0.8, gt=0.0, lt=1.0)  # Jaccard that LSH is tuned for
    bands: int | None = Field(default=None, ge=1)  # give bands and rows, or neither
    rows: int | None = Field(default=None, ge=1)
    false_positive_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    false_negative_weight: float = Field(default=0.5, ge=0.0, le=1.0)
    partitions: int = Field(default=16, ge=1, le=65536)
    keep_signatures: bool = True  # needed by minhash_buckets' verify_threshold

    @model_validator(mode="after")
    def _bands_and_rows(self) -> MinhashSignaturesParams:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither (then threshold decides)")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows = {self.bands * self.rows} exceeds num_perm {self.num_perm}")
        return self

    def lsh(self) -> tuple[int, int]:
        if self.bands is not None:
            return self.bands, self.rows
        return optimal_bands(self.threshold, self.num_perm, self.false_positive_weight,
                             self.false_negative_weight)


class MinhashSignatures(Stage):
    kind = "minhash_signatures"
    version = 1
    Params = MinhashSignaturesParams

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        if len(inputs) != 1 or not inputs[0].shards:
            raise ValueError(
                f"stage '{self.name}': needs exactly one input stage with doc shards "
                f"(the same one minhash_filter will filter); got {[i.name for i in inputs]}"
            )
        shards = inputs[0].shards
        names = [Path(s).stem for s in shards]
        if len(set(names)) != len(names):
            raise ValueError(f"stage '{self.name}': input shard names are not unique: {names}")
        return [
            Task(name=name, inputs=(path,), payload=(("shard_index", index),))
            for index, (name, path) in enumerate(zip(names, shards))
        ]

    def run_task(self, task: Task) -> TaskResult:
        start = time.perf_counter()
        p = self.params
        bands, rows = p.lsh()
        shard_index = task.get("shard_index")
        path = task.inputs[0]
        hasher = MinHasher(p.num_perm, p.ngram, p.seed)
        keys, refs, signatures = [], [], []
        counts = Counts()
        no_words = 0
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=["text"]):
            texts = batch.column(0)
            sig, shingles = hasher.signatures(texts)
            batch_refs = doc_ref(shard_index, np.arange(counts.n_in, counts.n_in + len(texts)))
            has_words = shingles > 0
            no_words += int((~has_words).sum())
            keys.append(band_keys(sig[has_words], bands, rows))
            refs.append(batch_refs[has_words])
            if p.keep_signatures:
                signatures.append(sig)
            counts.n_in += len(texts)
            counts.bytes_in += int(pc.sum(pc.binary_length(texts)).as_py() or 0)
        counts.kept = counts.n_in

        files = self._write_buckets(task.name, keys, refs, bands)
        if p.keep_signatures:
            matrix = np.concatenate(signatures) if signatures else np.empty((0, p.num_perm), np.uint32)
            files.append(commit_array(self.stage_dir, self.stage_dir / "signatures" / f"{task.name}.npy",
                                      matrix))
        meta: dict[str, Any] = {
            "shard_index": shard_index,
            "shard": path,
            "name": task.name,
            "rows": counts.n_in,
            "docs_without_words": no_words,
            "ngram": p.ngram,
            "num_perm": p.num_perm,
            "seed": p.seed,
            "bands": bands,
            "rows_per_band": rows,
            "partitions": p.partitions,
            "signatures": f"signatures/{task.name}.npy" if p.keep_signatures else None,
        }
        files.append(commit_json(self.stage_dir, self.stage_dir / "meta" / f"{task.name}.json", meta))
        info = {"docs_without_words": no_words, "bands": bands, "rows": rows}
        return TaskResult(files, counts, time.perf_counter() - start, info=info)

    def _write_buckets(self, name: str, keys: list[np.ndarray], refs: list[np.ndarray],
                       bands: int) -> list:
        """One file per partition (empty ones too: the buckets stage expects all of them)."""
        partitions = self.params.partitions
        key = np.concatenate(keys).reshape(-1) if keys else np.empty(0, np.uint64)
        doc = np.repeat(np.concatenate(refs), bands) if refs else np.empty(0, np.uint64)
        band = np.tile(np.arange(bands, dtype=np.uint16), len(key) // bands)
        part = (key % np.uint64(partitions)).astype(np.int64)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(partitions + 1))
        files = []
        for index in range(partitions):
            rows = order[bounds[index]: bounds[index + 1]]
            table = pa.table({"band": band[rows], "key": key[rows], "doc": doc[rows]})
            final = self.stage_dir / "buckets" / f"{name}-p{index:05d}.parquet"
            files.append(commit_table(self.stage_dir, final, table))
        return files
