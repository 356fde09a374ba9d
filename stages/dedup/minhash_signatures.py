"""`minhash_signatures`: phase 1 of MinHash-LSH near-duplicate removal.

One task per input doc shard. For every document: normalized word `ngram` shingles, a
`num_perm`-value MinHash signature (stages/dedup/minhash.py: vectorized numpy, measured in
bench/dedup.py against datasketch and datatrove), and one 64-bit key per LSH band.
`bands` x `rows` come from `threshold` by datasketch's false-positive/false-negative
optimum (weighted for recall by default: 16 x 8 for 0.8 and 128 permutations), or are
given explicitly.

This is the first half of the on-disk shuffle: band keys are partitioned by key into
`partitions` files per shard (`buckets/<shard>-p<NNNNN>.parquet`: band, key, doc), so the
`minhash_buckets` task for partition p reads one file per shard and nobody ever holds all
keys. `partitions` therefore sets the memory of the next phase: about
docs x bands x 18 bytes / partitions.

Also written per shard: `meta/<shard>.json` (its index in corpus order, path relative to
the run directory, row count, parameters) and what `minhash_buckets` needs to verify
candidate pairs: with `keep_shingles` (default), every document's distinct shingle hashes
(`shingles/<shard>.npy`, uint32, about 4 bytes per word, and `<shard>.offsets.npy`) for
the exact Jaccard; with `keep_signatures`, `signatures/<shard>.npy` (uint32, rows x
num_perm) for the estimated one. Documents without any word have no shingles and no band
keys: they are never near-duplicates (exact_dedup handles empty texts). Documents are
referenced as `shard_index << 32 | row`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from pipeline.artifacts import open_parquet
from stages.dedup.minhash import (
    MinHasher,
    band_keys,
    commit_array,
    commit_json,
    commit_table,
    doc_ref,
    optimal_bands,
    run_relative,
    shingle_sets,
)
from pipeline.stage import Counts, Params, Stage, StageInput, Task, TaskResult
from stages.words import text_slices

BATCH_ROWS = 1024


class MinhashSignaturesParams(Params):
    ngram: int = Field(default=5, ge=1, le=64)  # words per shingle
    num_perm: int = Field(default=128, ge=2, le=1024)
    seed: int = Field(default=1, ge=0)
    threshold: float = Field(default=0.8, gt=0.0, lt=1.0)  # Jaccard that LSH is tuned for
    bands: int | None = Field(default=None, ge=1)  # give bands and rows, or neither
    rows: int | None = Field(default=None, ge=1)
    # Recall-weighted by default because minhash_buckets verifies candidates exactly by
    # default (false positives cost verification time only); use 0.5/0.5 with verify: off.
    false_positive_weight: float = Field(default=0.05, ge=0.0, le=1.0)
    false_negative_weight: float = Field(default=0.95, ge=0.0, le=1.0)
    partitions: int = Field(default=16, ge=1, le=65536)
    keep_shingles: bool = True  # needed by minhash_buckets' verify: exact
    keep_signatures: bool = False  # needed by minhash_buckets' verify: estimated

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
    version = 2  # 2: meta records the shard relative to the run directory
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
        # Computed once here: the optimum integrates over every (bands, rows) split.
        bands, rows = self.params.lsh()
        return [
            Task(name=name, inputs=(path,),
                 payload=(("shard_index", index), ("bands", bands), ("rows", rows)))
            for index, (name, path) in enumerate(zip(names, shards))
        ]

    def run_task(self, task: Task) -> TaskResult:
        p = self.params
        bands, rows = task.get("bands"), task.get("rows")
        shard_index = task.get("shard_index")
        path = task.inputs[0]
        hasher = MinHasher(p.num_perm, p.ngram, p.seed)
        keys, refs, signatures, sets, set_sizes = [], [], [], [], []
        counts = Counts()
        no_words = 0
        with open_parquet(path) as parquet:
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=["text"]):
                for texts in text_slices(batch.column(0)):  # bounded word arrays
                    shingles, per_doc = hasher.shingles(texts)
                    sig = hasher.signatures_of_shingles(shingles, per_doc)
                    rows_in = np.arange(counts.n_in, counts.n_in + len(texts))
                    batch_refs = doc_ref(shard_index, rows_in)
                    has_words = per_doc > 0
                    no_words += int((~has_words).sum())
                    keys.append(band_keys(sig[has_words], bands, rows))
                    refs.append(batch_refs[has_words])
                    if p.keep_signatures:
                        signatures.append(sig)
                    if p.keep_shingles:
                        values, offsets = shingle_sets(shingles, per_doc)
                        sets.append(values)
                        set_sizes.append(np.diff(offsets))
                    counts.n_in += len(texts)
                    counts.bytes_in += int(pc.sum(pc.binary_length(texts)).as_py() or 0)
        counts.kept = counts.n_in

        files = self._write_buckets(task.name, keys, refs, bands)
        if p.keep_signatures:
            matrix = np.concatenate(signatures) if signatures else np.empty((0, p.num_perm), np.uint32)
            files.append(commit_array(self.stage_dir, self.stage_dir / "signatures" / f"{task.name}.npy",
                                      matrix))
        if p.keep_shingles:
            sizes = np.concatenate(set_sizes) if set_sizes else np.empty(0, np.int64)
            offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            values = np.concatenate(sets) if sets else np.empty(0, np.uint32)
            folder = self.stage_dir / "shingles"
            files.append(commit_array(self.stage_dir, folder / f"{task.name}.npy", values))
            files.append(commit_array(self.stage_dir, folder / f"{task.name}.offsets.npy", offsets))
        meta: dict[str, Any] = {
            "shard_index": shard_index,
            "shard": run_relative(self.stage_dir, path),
            "name": task.name,
            "rows": counts.n_in,
            "docs_without_words": no_words,
            "ngram": p.ngram,
            "num_perm": p.num_perm,
            "seed": p.seed,
            "threshold": p.threshold,
            "bands": bands,
            "rows_per_band": rows,
            "partitions": p.partitions,
            "signatures": f"signatures/{task.name}.npy" if p.keep_signatures else None,
            "shingles": f"shingles/{task.name}.npy" if p.keep_shingles else None,
            "shingle_offsets": f"shingles/{task.name}.offsets.npy" if p.keep_shingles else None,
        }
        files.append(commit_json(self.stage_dir, self.stage_dir / "meta" / f"{task.name}.json", meta))
        info = {"docs_without_words": no_words, "bands": bands, "rows": rows}
        return TaskResult(files, counts, info=info)

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
