"""`quality_filter`: score documents with a trained quality classifier; keep the best.

    quality:
      kind: quality_filter
      inputs: [clean, quality_model]     # documents, and the train_quality_classifier stage
      params: {top_percent: 10}          # or {threshold: 0.5}

Every document gets a `quality_score` column: the classifier's probability of the
high-quality label (`train_quality_classifier` writes the model and its labels; the one
scoring function is `QualityScorer.score` in stages/filters/quality.py). The model is
found among the files of the input stage of kind `train_quality_classifier` (or the one
named by `model_input`); every other input supplies documents.

`threshold` keeps documents scoring at least that much: stage NAME becomes one stage of
kind `quality_threshold`, one task per shard (memory: one batch and the model).

`top_percent` keeps exactly round(N * top_percent / 100) of the N input documents, the
best-scoring ones: a document is kept when its (score, id) pair is at or above the
keep-th best pair, so ties on the score are broken by id and the kept set does not
depend on the sharding or the executor. A shard cannot see the others, so stage NAME
becomes three stages joined by files on disk (a composite, pipeline/stage.py), and no
task holds the corpus:

    NAME.scores  quality_scores  one task per shard: scores every document, writes its
                                 (score, id) pairs sorted and a fixed-bin histogram.
                                 Memory: one batch of texts, the shard's pairs, the model
    NAME.cut     quality_cut     one task: adds up the histograms (SCORE_BINS counters),
                                 finds the bin holding the keep-th best and reads only
                                 that bin from every score file (row-group statistics)
                                 to get the exact (score, id) cut. Memory: the bin's pairs
                                 up to MAX_SORT_ROWS (1M), else one row group of 1024
                                 pairs per shard, merged
    NAME         quality_top     one task per shard, same shard names out: reads its
                                 shard's scores (no second scoring) and keeps the
                                 documents at or above the cut. Memory: one batch of
                                 documents and the shard's scores

so `inputs: [NAME]` downstream reads the filtered documents either way. Documents are
scored once; the cut phase reads a bin's worth of pairs, not the corpus.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from pipeline.stage import CompositeStage, Params, Phase, phase_name


class QualityFilterParams(Params):
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    top_percent: float | None = Field(default=None, ge=0.0, le=100.0)
    model_input: str | None = None  # default: the input of kind train_quality_classifier

    @model_validator(mode="after")
    def _one_rule(self) -> QualityFilterParams:
        if (self.threshold is None) == (self.top_percent is None):
            raise ValueError("give exactly one of threshold and top_percent")
        return self


class QualityFilter(CompositeStage):
    kind = "quality_filter"
    Params = QualityFilterParams

    @classmethod
    def expand(cls, name: str, params: Params, inputs: list[str]) -> list[Phase]:
        model = {"model_input": params.model_input} if params.model_input else {}
        if params.threshold is not None:
            return [Phase(name, "quality_threshold", tuple(inputs),
                          {"threshold": params.threshold, **model})]
        scores, cut = phase_name(name, "scores"), phase_name(name, "cut")
        return [
            Phase(scores, "quality_scores", tuple(inputs), model),
            Phase(cut, "quality_cut", (scores,), {"top_percent": params.top_percent}),
            Phase(name, "quality_top", (*inputs, scores, cut), model),
        ]
