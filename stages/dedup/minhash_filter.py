"""`minhash_filter`: phase 4 of MinHash-LSH, keep one document per duplicate cluster.

Inputs: the doc stage the signatures were computed on, and the `minhash_clusters` stage
(in any order). One task per doc shard, same shard names out. Each task reads only the
row groups of `clusters.parquet` that hold its own shard's documents.

Every document gets two columns: `dup_cluster` (the id of its cluster's kept member; its
own id when it has no near-duplicate) and `dup_cluster_size` (1 when unique). The kept
member is the first document of the cluster in corpus order (minhash_clusters documents
the rule); every other member goes to rejected/ as `minhash:duplicate`, its
`dup_cluster` naming the document that was kept in its place.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import nullcontext

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.documents import Document, Rejected
from stages.dedup.minhash import files_under, in_run, read_shards_table
from pipeline.stage import FilterStage, Params, StageInput, Task

REASON = "minhash:duplicate"


class MinhashFilterParams(Params):
    pass


class MinhashFilter(FilterStage):
    kind = "minhash_filter"
    version = 1
    Params = MinhashFilterParams
    score_columns = {"dup_cluster": pa.string(), "dup_cluster_size": pa.int64()}

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        clusters = self.input_of_kind(inputs, "minhash_clusters")
        docs = [i for i in inputs if i is not clusters]
        table = read_shards_table(clusters)
        expected = [in_run(self.stage_dir, s["shard"]) for s in table["shards"]]
        if len(docs) != 1 or docs[0].shards != expected:
            raise ValueError(
                f"stage '{self.name}': its doc input must be the stage whose shards the "
                f"signatures were computed on ({len(expected)} shards, first "
                f"{expected[:1]}); got {[d.name for d in docs]}"
            )
        clusters_file = [f for f in files_under(clusters, "clusters")][0]
        return [
            Task(name=s["name"], inputs=(in_run(self.stage_dir, s["shard"]),),
                 payload=(("shard_index", s["shard_index"]), ("clusters", clusters_file)))
            for s in table["shards"]
        ]

    def run_task(self, task: Task):
        # DocStage.process sees only documents; this stage also needs the task's shard
        # index to find each row's cluster, so run_task binds it for the duration.
        low = task.get("shard_index") << 32
        self._shard = (low, self._clusters_of_shard(task.get("clusters"), low))
        try:
            return super().run_task(task)
        finally:
            self._shard = None

    def process(self, docs: Iterable[Document]) -> Iterator[Document | Rejected]:
        low, clusters = self._shard
        for row, doc in enumerate(docs):
            entry = clusters.get(row)
            if entry is None:
                doc.columns.update(dup_cluster=doc.id, dup_cluster_size=1)
                yield doc
                continue
            kept, kept_id, size = entry
            doc.columns.update(dup_cluster=kept_id, dup_cluster_size=size)
            if kept != low + row:
                yield Rejected(doc, REASON)
            elif kept_id != doc.id:
                raise ValueError(
                    f"stage '{self.name}': row {row} has id {doc.id!r} but the clusters table "
                    f"says {kept_id!r}: the shard changed after its signatures were computed"
                )
            else:
                yield doc

    @staticmethod
    def _clusters_of_shard(path: str, low: int) -> dict[int, tuple[int, str, int]]:
        """row -> (kept reference, kept id, size) for one shard's clustered documents."""
        local = storage.is_local(path)
        with nullcontext(path) if local else storage.open_input(path) as source:
            table = pq.read_table(source, filters=[("doc", ">=", low), ("doc", "<", low + (1 << 32))])
        return {
            doc - low: (kept, kept_id, size)
            for doc, kept, kept_id, size in zip(
                table.column("doc").to_pylist(), table.column("kept").to_pylist(),
                table.column("kept_id").to_pylist(), table.column("size").to_pylist(),
            )
        }
