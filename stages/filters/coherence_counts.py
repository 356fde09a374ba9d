"""`coherence_counts`: phase 1 of `coherence_filter`, word and word-pair counts of a sample.

Inputs: the doc stages to filter. The tasks are at most `sample_shards` of their shards,
spread evenly in corpus order, each named as coherence_keep names its task for that shard
(the DocStage rule). A task counts the words and adjacent word pairs (stages/filters/
coherence.py) of its shard's documents in order until it has counted
sample_words / tasks words (whole documents), and writes `counts/<shard>.npz`, whose
totals record how many documents it counted: coherence_keep takes exactly those out of
the counts when it scores them (leave-one-out).

Memory: one batch of texts (ROWS_PER_BATCH documents, at most MAX_BATCH_TEXT), the word
arrays of one chunk (CHUNK_CHARS of text, about 40 MB) and the shard's table (about 12 bytes
per distinct word or pair, at most 24 bytes per counted word).
"""

from __future__ import annotations

from pipeline.artifacts import ROWS_PER_BATCH, open_parquet
from pipeline.stage import Counts, DocStage, Params, Stage, StageInput, Task, TaskResult
from stages.filters.coherence import Table, count_texts


class CoherenceCountsParams(Params):
    sample_shards: int = 64
    sample_words: int = 10_000_000


class CoherenceCounts(Stage):
    kind = "coherence_counts"
    version = 1
    units = "documents -> counted"
    Params = CoherenceCountsParams

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        shard_tasks = DocStage.tasks(self, inputs)
        if not shard_tasks:
            raise ValueError(f"stage '{self.name}': its inputs have no doc shards: "
                             f"{[i.name for i in inputs]}")
        picked = sample_evenly(len(shard_tasks), self.params.sample_shards)
        budget = max(1, self.params.sample_words // len(picked))
        return [Task(shard_tasks[i].name, shard_tasks[i].inputs, (("words", budget),))
                for i in picked]

    def run_task(self, task: Task) -> TaskResult:
        budget = task.get("words")
        table = Table.empty()
        with open_parquet(task.inputs[0]) as parquet:
            for batch in parquet.iter_batches(batch_size=ROWS_PER_BATCH, columns=["text"]):
                texts = batch.column("text").to_pylist()
                counts, taken = count_texts(texts, budget - int(table.totals[0]))
                table = Table.merge([table, counts])  # totals: words, pairs, texts counted
                if taken < len(texts) or table.totals[0] >= budget:
                    break
        counted_words, counted_docs = int(table.totals[0]), int(table.totals[2])
        entry = table.save(self.stage_dir, self.stage_dir / "counts" / f"{task.name}.npz")
        return TaskResult([entry], Counts(n_in=counted_docs, kept=counted_docs),
                          info={"words": counted_words, "distinct_pairs": len(table.pairs)})


def sample_evenly(n: int, k: int) -> list[int]:
    """At most k of the indices 0..n-1, spread evenly, the first always included."""
    if k >= n:
        return list(range(n))
    return sorted({i * n // k for i in range(k)})
