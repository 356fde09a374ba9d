"""`quality_filter`: score documents with a trained quality classifier; keep the best.

    quality:
      kind: quality_filter
      inputs: [clean, quality_model]     # documents, and the train_quality_classifier stage
      params: {top_percent: 10}          # or {threshold: 0.5}

Every document gets a `quality_score` column: the classifier's probability of the
high-quality label (`train_quality_classifier` writes the model and its labels). The model
is found among the files of the input stage of kind `train_quality_classifier` (or the one
named by `model_input`); every other input supplies documents.

`threshold` keeps documents scoring at least that much. `top_percent` keeps exactly
round(N * top_percent / 100) of the N input documents, the best-scoring ones. A shard task
cannot see the other shards, so the cut is computed once, before any task runs: `tasks()`
scores every input document (one streaming pass, on the driver, holding only one score and
id per document) and sorts them by (score, id), highest first; the k-th pair is the cut,
shipped to every task in its payload. A task keeps a document when its (score, id) pair is
at or above the cut, so ties on the score are broken by id and the kept count is exact and
independent of sharding and executor. The price is a second scoring pass; fastText scores
tens of thousands of documents a second, well below the cost of the stages before it. A
threshold taken from the training sample's score quantiles would avoid that pass but only
approximates the percentile of the corpus actually filtered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field, model_validator

from pipeline import storage
from pipeline.artifacts import read_doc_shard
from pipeline.documents import Document, Rejected
from pipeline.stage import FilterStage, Params, StageInput, Task, TaskResult
from stages.filters.text import fasttext_line, load_fasttext

TRAIN_KIND = "train_quality_classifier"
MODEL_SUFFIX, METRICS_SUFFIX = "model/quality.bin", "model/metrics.json"


class QualityFilterParams(Params):
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    top_percent: float | None = Field(default=None, ge=0.0, le=100.0)
    model_input: str | None = None  # default: the input of kind train_quality_classifier

    @model_validator(mode="after")
    def _one_rule(self) -> QualityFilterParams:
        if (self.threshold is None) == (self.top_percent is None):
            raise ValueError("give exactly one of threshold and top_percent")
        return self


class QualityFilter(FilterStage):
    kind = "quality_filter"
    version = 1
    Params = QualityFilterParams
    score_columns = {"quality_score": pa.float64()}

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        model_input = self._model_input(inputs)
        model = _file_ending(model_input, MODEL_SUFFIX)
        settings = json.loads(storage.read_text(_file_ending(model_input, METRICS_SUFFIX)))
        payload: dict[str, Any] = {
            "model": model,
            "label": f"__label__{settings['labels']['positive']}",
            "lowercase": settings["lowercase"],
        }
        doc_inputs = [i for i in inputs if i is not model_input]
        tasks = super().tasks(doc_inputs)
        if self.params.top_percent is not None:
            self._payload = payload
            payload["cut"] = self._top_cut([s for t in tasks for s in t.inputs])
        return [Task(t.name, t.inputs, tuple(sorted(payload.items()))) for t in tasks]

    def _model_input(self, inputs: list[StageInput]) -> StageInput:
        name = self.params.model_input
        found = [i for i in inputs if (i.name == name if name else i.kind == TRAIN_KIND)]
        if len(found) != 1:
            raise ValueError(
                f"stage '{self.name}': needs exactly one model input "
                f"({'named ' + repr(name) if name else 'of kind ' + TRAIN_KIND}); inputs: "
                + ", ".join(f"{i.name} ({i.kind})" for i in inputs)
            )
        return found[0]

    def _top_cut(self, shards: list[str]) -> tuple[float, str] | None:
        """The (score, id) of the last document kept, or None when none is kept."""
        scored = [(self.score(doc.text), doc.id) for s in shards for doc in read_doc_shard(s)]
        keep = round(len(scored) * self.params.top_percent / 100)
        if keep == 0:
            return None
        scored.sort(reverse=True)
        return scored[keep - 1]

    def run_task(self, task: Task) -> TaskResult:
        self._payload = dict(task.payload)
        return super().run_task(task)

    def score(self, text: str) -> float:
        """Probability of the high-quality label."""
        payload = self._payload
        if getattr(self, "_model", None) is None:
            self._model = load_fasttext(storage.local_copy(payload["model"]))
        labels, probs = self._model.predict(fasttext_line(text, payload["lowercase"]), k=-1)
        for label, prob in zip(labels, probs):
            if label == payload["label"]:
                return min(float(prob), 1.0)
        return 0.0

    def apply(self, doc: Document) -> Document | Rejected:
        score = self.score(doc.text)
        doc.columns["quality_score"] = score
        if self.params.threshold is not None:
            if score < self.params.threshold:
                return Rejected(doc, "quality_filter:below_threshold")
            return doc
        cut = self._payload.get("cut")
        if cut is None or (score, doc.id) < tuple(cut):
            return Rejected(doc, "quality_filter:below_top_percent")
        return doc


def _file_ending(stage_input: StageInput, suffix: str) -> str:
    for path in stage_input.files:
        if Path(path).as_posix().endswith(suffix):
            return path
    raise FileNotFoundError(
        f"input stage '{stage_input.name}' has no committed {suffix} (files: "
        f"{', '.join(stage_input.files) or 'none'})"
    )
