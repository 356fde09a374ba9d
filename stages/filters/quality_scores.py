"""`quality_scores`: phase 1 of a top-percent `quality_filter`, every document's score.

Inputs: the doc stages to filter and the `train_quality_classifier` stage (or the input
named by `model_input`). One task per input shard, named as the filter phase will name
its task for that shard (the DocStage rule). Each scores every document of its shard
with `QualityScorer.score` (stages/filters/quality.py) and writes `scores/<shard>.parquet`
(score, id, row, bin) sorted better first, and `histograms/<shard>.npy`, the shard's count
per fixed score bin. `quality_cut` adds the histograms up and reads one bin of every
score file; `quality_top` reads its own shard's scores instead of scoring again.

Memory: one batch of texts (ROWS_PER_BATCH documents) plus one shard's score rows (about
30 bytes and the id per document) and the fastText model.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.artifacts import ROWS_PER_BATCH, open_parquet
from pipeline.stage import Counts, DocStage, Params, Stage, StageInput, Task, TaskResult
from stages.filters.quality import (
    BETTER_FIRST,
    SCORE_BINS,
    SCORE_SCHEMA,
    QualityScorer,
    commit_histogram,
    commit_score_table,
    doc_inputs_of,
    model_input_of,
    score_bins,
    scorer_settings,
)


class QualityScoresParams(Params):
    model_input: str | None = None  # default: the input of kind train_quality_classifier


class QualityScores(Stage):
    kind = "quality_scores"
    version = 1
    units = "documents -> scores"
    Params = QualityScoresParams

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        settings = scorer_settings(model_input_of(self.name, inputs, self.params.model_input))
        # The task names DocStage gives these shards: quality_top finds a shard's scores by them.
        shard_tasks = DocStage.tasks(self, doc_inputs_of(inputs, self.params.model_input))
        if not shard_tasks:
            raise ValueError(f"stage '{self.name}': its inputs have no doc shards: "
                             f"{[i.name for i in inputs]}")
        payload = tuple(sorted(settings.items()))
        return [Task(t.name, t.inputs, payload) for t in shard_tasks]

    def run_task(self, task: Task) -> TaskResult:
        settings = dict(task.payload)
        if getattr(self, "_scorer", None) is None or self._scorer.settings != settings:
            self._scorer = QualityScorer(settings)
        scores: list[float] = []
        ids = []
        counts = Counts()
        with open_parquet(task.inputs[0]) as parquet:
            for batch in parquet.iter_batches(batch_size=ROWS_PER_BATCH, columns=["id", "text"]):
                texts = batch.column("text")
                scores.extend(self._scorer.score(text) for text in texts.to_pylist())
                ids.append(batch.column("id").cast(pa.string()))
                counts.bytes_in += int(pc.sum(pc.binary_length(texts)).as_py() or 0)
        counts.n_in = counts.kept = len(scores)
        score = np.asarray(scores, dtype=np.float64)
        bins = score_bins(score)
        table = pa.table({
            "score": score,
            "id": pa.concat_arrays(ids) if ids else pa.array([], pa.string()),
            "row": np.arange(len(score), dtype=np.int64),
            "bin": bins,
        }, schema=SCORE_SCHEMA)
        table = table.take(pc.sort_indices(table, sort_keys=BETTER_FIRST))
        files = [
            commit_score_table(self.stage_dir, self.stage_dir / "scores" / f"{task.name}.parquet",
                               table),
            commit_histogram(self.stage_dir, self.stage_dir / "histograms" / f"{task.name}.npy",
                             np.bincount(bins, minlength=SCORE_BINS)),
        ]
        return TaskResult(files, counts)
