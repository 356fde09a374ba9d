"""`minhash_clusters`: phase 3 of MinHash-LSH, duplicate clusters by union-find over pairs.

Input: one `minhash_buckets` stage. One task streams every `pairs/` file twice, PAIR_BATCH
pairs at a time: first to list the documents that have a pair (sorted, distinct), then to
join each batch into a union-find forest over those documents (`union_pairs` in
minhash.py: the roots a batch touches are joined by scipy's connected components, so the
work per batch follows the batch, not the corpus). Transitive chains A~B~C land in one
cluster even when A and C never shared a band; a pair found in several partitions joins
nothing the second time.

Kept member rule: the document with the smallest reference `shard_index << 32 | row`,
i.e. the first one in corpus order (shards in the sorted order of the upstream manifest,
rows in file order). It does not depend on executor, worker count, partitioning or batch
size.

Output: `clusters/clusters.parquet`, one row per document that has a duplicate, sorted by
`doc`: doc, kept (references), size (documents in its cluster), kept_id (the kept
member's document id, read from its shard); and `meta/shards.json` passed on for the
filter. In `lmforge status`, `in` is pair rows read (a pair found in k partitions counts
k times) and `kept` is documents in clusters (the manifest's `info` has clusters,
duplicates and the largest cluster).

Memory is bounded by the documents that have a near-duplicate, never by the pairs (any
number, read PAIR_BATCH at a time) nor by the corpus: about 50 bytes per clustered
document (references, the union-find forest, cluster sizes, the kept members' ids) plus
about 60 MB of batch scratch and imports above the engine's own; the output is written
one row group at a time. bench/dedup.py `clusters-memory` measures it: at 1M clustered
documents the peak stays at 206-224 MB from 2M to 32M pair rows, and grows by about
50 MB per million clustered documents (352 MB at 4M; the engine alone is 101 MB). So a
1 GB worker clusters about 17M near-duplicate documents; a corpus with more needs a
partitioned union-find, which this phase does not have.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.artifacts import open_parquet
from pipeline.stage import Counts, Params, Stage, StageInput, Task, TaskResult
from stages.dedup.minhash import (
    SHARDS_TABLE,
    cluster_roots,
    commit_json,
    commit_row_groups,
    files_under,
    in_run,
    read_shards_table,
    ref_row,
    ref_shard,
    sorted_distinct,
    union_pairs,
)

CLUSTERS_FILE = "clusters.parquet"
ROW_GROUP = 65536  # the filter reads only the row groups of its own shard
CLUSTERS_SCHEMA = pa.schema([("doc", pa.uint64()), ("kept", pa.uint64()), ("size", pa.int64()),
                             ("kept_id", pa.string())])
PAIR_BATCH = 1 << 18  # pairs read at once: 4 MB of references, ~40 MB with the scratch


class MinhashClustersParams(Params):
    pass


class MinhashClusters(Stage):
    kind = "minhash_clusters"
    version = 1
    units = "pairs -> documents"  # `in` counts pairs, `kept` counts documents
    Params = MinhashClustersParams

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        buckets = self.input_of_kind(inputs, "minhash_buckets")
        table = read_shards_table(buckets)
        shards = tuple(in_run(self.stage_dir, s["shard"]) for s in table["shards"])
        return [Task(name="clusters", inputs=tuple(files_under(buckets, "pairs")),
                     payload=(("shards", shards), ("shards_table", table)))]

    def run_task(self, task: Task) -> TaskResult:
        docs = np.empty(0, dtype=np.uint64)
        pair_rows = 0
        for a, b in _pair_batches(task.inputs):
            docs = _insert_new(docs, sorted_distinct(np.concatenate([a, b])))
            pair_rows += len(a)
        parent = np.arange(len(docs), dtype=np.int32 if len(docs) < 2**31 else np.int64)
        for a, b in _pair_batches(task.inputs):
            union_pairs(parent, _positions(docs, a), _positions(docs, b))
        labels = cluster_roots(parent)
        del parent
        sizes = np.bincount(labels, minlength=len(docs))  # by root index
        kept_index = sorted_distinct(labels)  # the roots: shard by shard in corpus order
        kept_ids = self._ids_of(docs[kept_index], task.get("shards"))

        def row_groups() -> Iterator[pa.Table]:
            # One row group at a time: the output is never whole in memory.
            for lo in range(0, max(len(docs), 1), ROW_GROUP):
                roots = labels[lo: lo + ROW_GROUP]
                yield pa.table({
                    "doc": pa.array(docs[lo: lo + ROW_GROUP], pa.uint64()),
                    "kept": pa.array(docs[roots], pa.uint64()),
                    "size": pa.array(sizes[roots], pa.int64()),
                    "kept_id": kept_ids.take(pa.array(np.searchsorted(kept_index, roots))),
                })

        files = [
            commit_row_groups(self.stage_dir, self.stage_dir / "clusters" / CLUSTERS_FILE,
                              CLUSTERS_SCHEMA, row_groups()),
            commit_json(self.stage_dir, self.stage_dir / "meta" / SHARDS_TABLE,
                        task.get("shards_table")),
        ]
        info = {
            "pair_rows": pair_rows,
            "clusters": len(kept_index),
            "docs_in_clusters": len(docs),
            "duplicates": len(docs) - len(kept_index),
            "largest_cluster": int(sizes.max()) if len(sizes) else 0,
        }
        counts = Counts(n_in=pair_rows, kept=len(docs))
        return TaskResult(files, counts, info=info)

    def _ids_of(self, refs: np.ndarray, shards: tuple[str, ...]) -> pa.Array:
        """Document ids of sorted references, as Arrow strings (no Python object per id).

        Each shard's `id` column is read once, and only for the shards that hold one.
        """
        shard_of = ref_shard(refs)
        parts = []
        for index in sorted_distinct(shard_of):
            path = shards[index]
            with open_parquet(path) as parquet:
                column = parquet.read(columns=["id"]).column("id").combine_chunks()
            rows = ref_row(refs[shard_of == index])
            if rows.max() >= len(column):
                raise ValueError(
                    f"stage '{self.name}': {Path(path).name} has {len(column)} rows, pairs "
                    f"refer to row {rows.max()}: the shard changed after its signatures"
                )
            parts.append(column.take(pa.array(rows)).cast(pa.string()))
        return pa.concat_arrays(parts) if parts else pa.array([], pa.string())


def _insert_new(docs: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Sorted distinct `docs` with the values of the sorted distinct `batch` it lacks: one
    new array, no sort of the whole."""
    at = np.searchsorted(docs, batch)
    known = np.zeros(len(batch), dtype=bool)
    inside = at < len(docs)
    known[inside] = docs[at[inside]] == batch[inside]
    return np.insert(docs, at[~known], batch[~known])


def _positions(docs: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Where each reference sits in the sorted `docs`. Searching sorted references walks
    `docs` in order (cache friendly): several times faster than random lookups, sort included."""
    order = np.argsort(refs)
    found = np.empty(len(refs), dtype=np.int64)
    found[order] = np.searchsorted(docs, refs[order])
    return found


def _pair_batches(paths: tuple[str, ...]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The (a, b) pairs of every `pairs/` file, PAIR_BATCH rows at a time."""
    for path in paths:
        with open_parquet(path) as parquet:
            for batch in parquet.iter_batches(batch_size=PAIR_BATCH, columns=["a", "b"]):
                yield (batch.column("a").to_numpy(zero_copy_only=False),
                       batch.column("b").to_numpy(zero_copy_only=False))
