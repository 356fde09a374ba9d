"""`quality_threshold`: score documents with the quality classifier, keep those scoring enough.

What `quality_filter` with `threshold` is, as one stage. Inputs: the doc stages to filter
and the `train_quality_classifier` stage (or the input named by `model_input`). Every
document gets `quality_score` (`QualityScorer.score`, stages/filters/quality.py); one
scoring below `threshold` goes to rejected/ as `quality_filter:below_threshold`. One task
per input shard, same shard name out.

Memory: one batch of documents and the fastText model.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from pipeline.documents import Document, Rejected
from pipeline.stage import FilterStage, Params, StageInput, Task, TaskResult
from stages.filters.quality import (
    REJECT_BELOW_THRESHOLD,
    QualityScorer,
    doc_inputs_of,
    model_input_of,
    scorer_settings,
)


class QualityThresholdParams(Params):
    threshold: float = Field(ge=0.0, le=1.0)
    model_input: str | None = None  # default: the input of kind train_quality_classifier


class QualityThreshold(FilterStage):
    kind = "quality_threshold"
    version = 1
    Params = QualityThresholdParams
    score_columns = {"quality_score": pa.float64()}

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        settings = scorer_settings(model_input_of(self.name, inputs, self.params.model_input))
        payload = tuple(sorted(settings.items()))
        return [Task(t.name, t.inputs, payload)
                for t in super().tasks(doc_inputs_of(inputs, self.params.model_input))]

    def run_task(self, task: Task) -> TaskResult:
        settings = dict(task.payload)
        if getattr(self, "_scorer", None) is None or self._scorer.settings != settings:
            self._scorer = QualityScorer(settings)
        return super().run_task(task)

    def apply(self, doc: Document) -> Document | Rejected:
        score = self._scorer.score(doc.text)
        doc.columns["quality_score"] = score
        if score < self.params.threshold:
            return Rejected(doc, REJECT_BELOW_THRESHOLD)
        return doc
