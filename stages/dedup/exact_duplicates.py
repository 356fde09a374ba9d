"""`exact_duplicates`: phase 2 of exact dedup, groups of copies within one hash partition.

Input: one `exact_fingerprints` stage. One task per partition p (`p<NNNNN>`) reads the
partition-p fingerprint file of every shard. Copies share a fingerprint, hence a
partition, so each group of copies is whole in one task: sorted by (fingerprint, doc),
a group's first row is its first copy in corpus order, the one kept.

Output, for every document in a group of two or more: `duplicates/<shard>/p<NNNNN>.parquet`
(row, kept, kept_id, count), one file per source shard that has such documents, sorted
by row; `exact_filter` reads only its own shard's files. `kept_id` is the kept copy's
document id (its own on the kept copy), `count` the copies in the corpus. A last task,
`shards`, writes `meta/shards.json`: the corpus-order table of input shards the filter
checks its inputs against.

In `lmforge status`, `in` counts fingerprints read and `kept` distinct fingerprints (the
manifest's task `info` has duplicates and the largest group).

Memory: one partition (docs / partitions documents), never the corpus: about 160 bytes
per document with 11-character ids, measured by bench/dedup.py `exact-memory` (1M
documents: 258 MB peak in one partition, 128 MB in each of 16; the engine alone is 101 MB).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline import storage
from pipeline.artifacts import open_parquet
from pipeline.stage import Counts, Params, Stage, StageInput, Task, TaskResult
from stages.dedup.minhash import (
    SHARDS_TABLE,
    commit_json,
    commit_table,
    files_under,
    ref_row,
    ref_shard,
)

SHARDS_TASK = "shards"


class ExactDuplicatesParams(Params):
    pass


class ExactDuplicates(Stage):
    kind = "exact_duplicates"
    version = 1
    units = "fingerprints"  # `in` counts fingerprints, `kept` distinct ones
    Params = ExactDuplicatesParams

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        fingerprints = self.input_of_kind(inputs, "exact_fingerprints")
        meta_files = tuple(files_under(fingerprints, "meta"))
        metas = sorted((json.loads(storage.read_text(f)) for f in meta_files),
                       key=lambda m: m["shard_index"])
        if [m["shard_index"] for m in metas] != list(range(len(metas))):
            raise ValueError(f"stage '{self.name}': shard indices of '{fingerprints.name}' "
                             f"are not 0..{len(metas) - 1}")
        names = tuple(m["name"] for m in metas)
        found = {Path(f).name: f for f in files_under(fingerprints, "fingerprints")}
        tasks = []
        for p in range(metas[0]["partitions"] if metas else 0):
            expected = [f"{name}-p{p:05d}.parquet" for name in names]
            missing = [n for n in expected if n not in found]
            if missing:
                raise ValueError(f"stage '{self.name}': partition {p}: no {missing[0]} in "
                                 f"'{fingerprints.name}'")
            tasks.append(Task(name=f"p{p:05d}", inputs=tuple(found[n] for n in expected),
                              payload=(("names", names),)))
        tasks.append(Task(name=SHARDS_TASK, inputs=meta_files))
        return tasks

    def run_task(self, task: Task) -> TaskResult:
        if task.name == SHARDS_TASK:
            return self._write_shards_table(task)
        table = pa.concat_tables([_read_table(f) for f in task.inputs])
        hi, lo, doc = (table.column(c).to_numpy() for c in ("hi", "lo", "doc"))
        order = np.lexsort((doc, lo, hi))
        hi, lo, doc = hi[order], lo[order], doc[order]
        starts = np.ones(len(doc), dtype=bool)
        starts[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
        group = np.cumsum(starts) - 1
        sizes = np.bincount(group)
        first = np.flatnonzero(starts)[group]  # sorted position of each row's kept copy
        copied = sizes[group] > 1
        rows = np.flatnonzero(copied)
        by_doc = np.argsort(doc[rows], kind="stable")  # shard by shard, row by row
        rows = rows[by_doc]
        duplicates = pa.table({
            "doc": doc[rows],
            "kept": first[rows] == rows,
            "kept_id": table.column("id").take(pa.array(order[first[rows]])),
            "count": sizes[group[rows]].astype(np.int64),
        })
        files = self._write_by_shard(task, duplicates)
        counts = Counts(n_in=len(doc), kept=len(sizes))
        info = {"duplicates": len(doc) - len(sizes),
                "largest_group": int(sizes.max()) if len(sizes) else 0}
        return TaskResult(files, counts, info=info)

    def _write_by_shard(self, task: Task, duplicates: pa.Table) -> list:
        """One file per source shard that has copies (the table is sorted by doc)."""
        doc = duplicates.column("doc").to_numpy()
        shard = ref_shard(doc)
        bounds = np.flatnonzero(np.diff(shard)) + 1
        files = []
        for lo, hi in zip([0, *bounds], [*bounds, len(doc)]):
            if lo == hi:
                continue
            part = duplicates.slice(lo, hi - lo)
            part = part.set_column(0, "row", pa.array(ref_row(doc[lo:hi])))
            name = task.get("names")[shard[lo]]
            final = self.stage_dir / "duplicates" / name / f"{task.name}.parquet"
            files.append(commit_table(self.stage_dir, final, part))
        return files

    def _write_shards_table(self, task: Task) -> TaskResult:
        metas = sorted((json.loads(storage.read_text(f)) for f in task.inputs),
                       key=lambda m: m["shard_index"])
        table = {"shards": [{k: m[k] for k in ("shard_index", "name", "shard", "rows")}
                            for m in metas]}
        entry = commit_json(self.stage_dir, self.stage_dir / "meta" / SHARDS_TABLE, table)
        # Counts stay empty: they would add documents to a count of fingerprints.
        return TaskResult([entry], Counts(),
                          info={"shards": len(metas), "docs": sum(m["rows"] for m in metas)})


def _read_table(path: str) -> pa.Table:
    with open_parquet(path) as parquet:
        return parquet.read()
