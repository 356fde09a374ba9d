"""`coherence_keep`: phase 3 of `coherence_filter`, score every document and keep the coherent.

Inputs: the doc stages to filter and the `coherence_table` stage. One task per input shard,
same shard name out. A task scores its documents a batch at a time against the table
(`Table.scores`, stages/filters/coherence.py), taking the first documents of its shard out
of the counts when coherence_counts counted them (leave-one-out: `meta/counted.json`), sets
`coherence` (null for a document with fewer than two words) and drops a document of at
least `min_words` words scoring below `min_pmi` as `coherence:low_pmi`.

Memory: one batch of documents (ROWS_PER_BATCH, or MAX_BATCH_TEXT of text), the word arrays
of one chunk of it (CHUNK_CHARS of text, about 40 MB, stages/filters/coherence.py) and the
table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa

from pipeline import storage
from pipeline.artifacts import MAX_BATCH_TEXT, ROWS_PER_BATCH
from pipeline.documents import Document, Rejected
from pipeline.stage import FilterStage, Params, StageInput, Task, TaskResult
from stages.filters.coherence import REJECT_LOW_COHERENCE, Table
from stages.filters.coherence_table import table_files


class CoherenceKeepParams(Params):
    min_pmi: float = 0.05
    min_words: int = 50


class CoherenceKeep(FilterStage):
    kind = "coherence_keep"
    version = 1
    Params = CoherenceKeepParams
    score_columns = {"coherence": pa.float64()}

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        table_input = self.input_of_kind(inputs, "coherence_table")
        table, counted_file = table_files(table_input)
        counted = json.loads(storage.read_text(counted_file))
        docs = [i for i in inputs if i is not table_input]
        return [Task(t.name, t.inputs, (("table", table), ("counted", counted.get(t.name, 0))))
                for t in super().tasks(docs)]

    def run_task(self, task: Task) -> TaskResult:
        if getattr(self, "_table_path", None) != task.get("table"):
            self._table, self._table_path = Table.load(task.get("table")), task.get("table")
        self._counted = task.get("counted")
        return super().run_task(task)

    def process(self, docs: Iterable[Document]) -> Iterator[Document | Rejected]:
        batch: list[Document] = []
        size, row = 0, 0
        for doc in docs:
            batch.append(doc)
            size += len(doc.text)
            if len(batch) >= ROWS_PER_BATCH or size >= MAX_BATCH_TEXT:
                yield from self._judge(batch, row)
                row += len(batch)
                batch, size = [], 0
        if batch:
            yield from self._judge(batch, row)

    def _judge(self, batch: list[Document], first_row: int) -> Iterator[Document | Rejected]:
        counted = first_row + np.arange(len(batch)) < self._counted
        scores, n_words = self._table.scores([d.text for d in batch], counted)
        for doc, score, words in zip(batch, scores.tolist(), n_words.tolist()):
            doc.columns["coherence"] = None if math.isnan(score) else score
            if words >= self.params.min_words and score < self.params.min_pmi:
                yield Rejected(doc, REJECT_LOW_COHERENCE)
            else:
                yield doc
