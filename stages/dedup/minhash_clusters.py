"""`minhash_clusters`: phase 3 of MinHash-LSH, duplicate clusters by union-find over pairs.

Input: one `minhash_buckets` stage. One task reads every `pairs/` file, drops pairs seen
in several partitions, and joins them into connected components (scipy's union-find-
equivalent `connected_components`). Transitive chains A~B~C land in one cluster even when
A and C never shared a band.

Kept member rule: the document with the smallest reference `shard_index << 32 | row`,
i.e. the first one in corpus order (shards in the sorted order of the upstream manifest,
rows in file order). It does not depend on executor, worker count or partitioning.

Output: `clusters/clusters.parquet`, one row per document that has a duplicate, sorted by
`doc`: doc, kept (references), size (documents in its cluster), kept_id (the kept
member's document id, read from its shard); and `meta/shards.json` passed on for the
filter. In `lmforge status`, `in` is pairs and `kept` is documents in clusters (the
manifest's `info` has clusters, duplicates and the largest cluster). Memory: the pairs and the documents in them (typically far fewer than all
documents), plus one shard's `id` column at a time.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stages.dedup.minhash import (
    SHARDS_TABLE,
    commit_json,
    commit_table,
    connected_clusters,
    files_under,
    input_of_kind,
    read_shards_table,
    ref_row,
    ref_shard,
    unique_pairs,
)
from pipeline.stage import Counts, Params, Stage, StageInput, Task, TaskResult

CLUSTERS_FILE = "clusters.parquet"
ROW_GROUP = 65536  # the filter reads only the row groups of its own shard


class MinhashClustersParams(Params):
    pass


class MinhashClusters(Stage):
    kind = "minhash_clusters"
    version = 1
    Params = MinhashClustersParams

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        buckets = input_of_kind(self.name, inputs, "minhash_buckets")
        table = read_shards_table(buckets)
        shards = tuple(s["shard"] for s in table["shards"])
        return [Task(name="clusters", inputs=tuple(files_under(buckets, "pairs")),
                     payload=(("shards", shards), ("shards_table", table)))]

    def run_task(self, task: Task) -> TaskResult:
    units = "pairs -> documents"  # `in` counts pairs, `kept` counts documents
        start = time.perf_counter()
        a_parts, b_parts = [], []
        for path in task.inputs:
            pairs = pq.read_table(path)
            a_parts.append(pairs.column("a").to_numpy())
            b_parts.append(pairs.column("b").to_numpy())
        empty = np.empty(0, dtype=np.uint64)
        a, b = unique_pairs(np.concatenate(a_parts or [empty]), np.concatenate(b_parts or [empty]))
        docs, kept, sizes = connected_clusters(a, b)
        kept_ids = self._ids_of(kept, task.get("shards"))
        table = pa.table({
            "doc": pa.array(docs, pa.uint64()),
            "kept": pa.array(kept, pa.uint64()),
            "size": pa.array(sizes, pa.int64()),
            "kept_id": pa.array(kept_ids, pa.string()),
        })
        files = [
            commit_table(self.stage_dir, self.stage_dir / "clusters" / CLUSTERS_FILE, table,
                         row_group_size=ROW_GROUP),
            commit_json(self.stage_dir, self.stage_dir / "meta" / SHARDS_TABLE,
                        task.get("shards_table")),
        ]
        clusters = int((docs == kept).sum())
        info = {
            "pairs": len(a),
            "clusters": clusters,
            "docs_in_clusters": len(docs),
            "duplicates": len(docs) - clusters,
            "largest_cluster": int(sizes.max()) if len(sizes) else 0,
        }
        counts = Counts(n_in=len(a), kept=len(docs))
        return TaskResult(files, counts, time.perf_counter() - start, info=info)

    def _ids_of(self, refs: np.ndarray, shards: tuple[str, ...]) -> list[str]:
        """Document ids of references, reading each shard's `id` column once."""
        unique, inverse = np.unique(refs, return_inverse=True)
        ids = np.empty(len(unique), dtype=object)
        shard_of = ref_shard(unique)
        for index in np.unique(shard_of):
            mask = shard_of == index
            path = shards[index]
            column = pq.read_table(path, columns=["id"]).column("id")
            rows = ref_row(unique[mask])
            if len(rows) and rows.max() >= len(column):
                raise ValueError(
                    f"stage '{self.name}': {Path(path).name} has {len(column)} rows, pairs "
                    f"refer to row {rows.max()}: the shard changed after its signatures"
                )
            ids[mask] = column.take(pa.array(rows)).to_pylist()
        return list(ids[inverse])
