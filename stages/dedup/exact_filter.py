"""`exact_filter`: phase 3 of exact dedup, drop every copy but the first.

Inputs: the doc stages the fingerprints were computed on (same order) and the
`exact_duplicates` stage. One task per input shard, same shard name out; each reads only
its own shard's `duplicates/<shard>/` files.

Every document gets two columns: `exact_dup_of` (the kept twin's id on rejected copies,
null on kept documents) and `exact_dup_count` (copies of this text in the corpus, 1 when
unique). The first copy in corpus order is kept; later copies go to rejected/ as
`exact_dedup:duplicate`. Memory: one batch of documents plus the shard's documents that
have copies (one dict entry each).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa

from pipeline.artifacts import open_parquet
from pipeline.documents import Document, Rejected
from pipeline.stage import FilterStage, Params, StageInput, Task, TaskResult
from stages.dedup.minhash import in_run, read_shards_table

REASON = "exact_dedup:duplicate"


class ExactFilterParams(Params):
    pass


class ExactFilter(FilterStage):
    kind = "exact_filter"
    version = 1
    Params = ExactFilterParams
    score_columns = {"exact_dup_of": pa.string(), "exact_dup_count": pa.int64()}

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        duplicates = self.input_of_kind(inputs, "exact_duplicates")
        table = read_shards_table(duplicates)
        shards = [s for i in inputs if i is not duplicates for s in i.shards]
        expected = [in_run(self.stage_dir, s["shard"]) for s in table["shards"]]
        if shards != expected:
            raise ValueError(
                f"stage '{self.name}': its doc inputs must be the stages whose shards the "
                f"fingerprints were computed on ({len(expected)} shards, first "
                f"{expected[:1]}); got {len(shards)} shards, first {shards[:1]}"
            )
        by_shard: dict[str, list[str]] = {}
        for f in duplicates.files:
            if Path(f).parent.parent.name != "duplicates":
                continue  # meta/shards.json
            by_shard.setdefault(Path(f).parent.name, []).append(f)
        return [
            Task(name=s["name"], inputs=(in_run(self.stage_dir, s["shard"]),),
                 payload=(("rows", s["rows"]), ("duplicates", tuple(by_shard.get(s["name"], ())))))
            for s in table["shards"]
        ]

    def run_task(self, task: Task) -> TaskResult:
        # DocStage.process sees only documents; the task's duplicate table is bound here.
        self._task = (task.get("rows"), self._duplicates_of_shard(task.get("duplicates")))
        try:
            return super().run_task(task)
        finally:
            self._task = None

    def process(self, docs: Iterable[Document]) -> Iterator[Document | Rejected]:
        rows, duplicates = self._task
        seen = 0
        for row, doc in enumerate(docs):
            seen += 1
            entry = duplicates.get(row)
            if entry is None:
                doc.columns.update(exact_dup_of=None, exact_dup_count=1)
                yield doc
                continue
            kept, kept_id, count = entry
            if kept and kept_id != doc.id:
                raise ValueError(
                    f"stage '{self.name}': row {row} has id {doc.id!r} but the duplicates "
                    f"table says {kept_id!r}: the shard changed after its fingerprints"
                )
            doc.columns.update(exact_dup_of=None if kept else kept_id, exact_dup_count=count)
            yield doc if kept else Rejected(doc, REASON)
        if seen != rows:
            raise ValueError(f"stage '{self.name}': the shard has {seen} rows, its "
                             f"fingerprints {rows}: it changed while the stage ran")

    @staticmethod
    def _duplicates_of_shard(paths: tuple[str, ...]) -> dict[int, tuple[bool, str, int]]:
        """row -> (kept, kept id, copies) for the shard's documents that have copies."""
        found = {}
        for path in paths:
            with open_parquet(path) as parquet:
                table = parquet.read()
            found.update(zip(table.column("row").to_pylist(),
                             zip(table.column("kept").to_pylist(),
                                 table.column("kept_id").to_pylist(),
                                 table.column("count").to_pylist())))
        return found

