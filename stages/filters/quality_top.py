"""`quality_top`: phase 3 of a top-percent `quality_filter`, keep the documents above the cut.

Inputs: the doc stages the scores were computed on, the `quality_scores` and `quality_cut`
stages (a `train_quality_classifier` input, or the one named `model_input`, is passed
over). One task per input shard, same shard name out. A task reads its own shard's score
file instead of scoring again, sets `quality_score` and keeps a document when its
(score, id) is at or above the cut in `meta/cut.json`; the others go to rejected/ as
`quality_filter:below_top_percent`. A shard whose rows or ids differ from its score file
fails the task: it changed after it was scored.

Memory: one batch of documents plus the shard's scores (8 bytes and the id per document).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline import storage
from pipeline.artifacts import open_parquet
from pipeline.documents import Document, Rejected
from pipeline.stage import FilterStage, Params, StageInput, Task, TaskResult
from stages.filters.quality import (
    CUT_FILE,
    REJECT_BELOW_TOP_PERCENT,
    doc_inputs_of,
    files_under,
)



class QualityTopParams(Params):
    model_input: str | None = None  # an input to pass over; default: any train_quality_classifier


class QualityTop(FilterStage):
    kind = "quality_top"
    version = 1
    Params = QualityTopParams
    score_columns = {"quality_score": pa.float64()}

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        scores = self.input_of_kind(inputs, "quality_scores")
        cut_input = self.input_of_kind(inputs, "quality_cut")
        cut_files = [f for f in cut_input.files if Path(f).as_posix().endswith(CUT_FILE)]
        if len(cut_files) != 1:
            raise ValueError(f"stage '{self.name}': '{cut_input.name}' has no committed {CUT_FILE}")
        cut = json.loads(storage.read_text(cut_files[0]))["cut"]
        docs = doc_inputs_of([i for i in inputs if i not in (scores, cut_input)],
                             self.params.model_input)
        score_files = files_under(scores, "scores")
        tasks = super().tasks(docs)
        missing = [t.name for t in tasks if t.name not in score_files]
        if missing or len(tasks) != len(score_files):
            raise ValueError(
                f"stage '{self.name}': its doc inputs must be the shards '{scores.name}' "
                f"scored ({sorted(score_files)[:3]} ...); got {[t.name for t in tasks][:3]} ..."
            )
        cut = tuple(cut) if cut is not None else None
        return [Task(t.name, t.inputs, (("cut", cut), ("scores", score_files[t.name])))
                for t in tasks]

    def run_task(self, task: Task) -> TaskResult:
        # DocStage.process sees only documents; the task's scores and cut are bound here.
        self._task = (task.get("cut"), *_scores_by_row(task.get("scores")))
        try:
            return super().run_task(task)
        finally:
            self._task = None

    def process(self, docs: Iterable[Document]) -> Iterator[Document | Rejected]:
        cut, scores, ids = self._task
        seen = 0
        for row, doc in enumerate(docs):
            seen += 1
            if row >= len(ids) or ids[row] != doc.id:
                raise ValueError(f"stage '{self.name}': row {row} has id {doc.id!r}, its score "
                                 "file another: the shard changed after it was scored")
            score = float(scores[row])
            doc.columns["quality_score"] = score
            if cut is not None and (score, doc.id) >= cut:
                yield doc
            else:
                yield Rejected(doc, REJECT_BELOW_TOP_PERCENT)
        if seen != len(ids):
            raise ValueError(f"stage '{self.name}': the shard has {seen} rows, its score file "
                             f"{len(ids)}: it changed after it was scored")


def _scores_by_row(path: str) -> tuple[np.ndarray, list[str]]:
    """A shard's scores and ids in row order (its score file is sorted by score)."""
    with open_parquet(path) as parquet:
        table = parquet.read(columns=["score", "id", "row"])
    order = np.argsort(table.column("row").to_numpy())
    if not np.array_equal(table.column("row").to_numpy()[order], np.arange(table.num_rows)):
        raise ValueError(f"{path}: its rows are not 0..{table.num_rows - 1}")
    return table.column("score").to_numpy()[order], table.column("id").take(order).to_pylist()
