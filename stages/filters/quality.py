"""What the quality_* stages share: the classifier's score and the layout of score files.

The score (`QualityScorer.score`) is the fastText probability of the high-quality label
that `train_quality_classifier` wrote beside its model (capped at 1.0; 0.0 when the label
is not predicted). Every quality stage scores through this one function, so a document
gets the same `quality_score` under a threshold and under a top percent. The model is
found among the files of the input of kind `train_quality_classifier`, or of the input
named by `model_input`; every other input supplies documents.

Score files, written by `quality_scores` and read by `quality_cut` and `quality_top`:

    scores/<shard>.parquet      score float64, id string, row int64, bin int32; sorted by
                                (score, id) descending, the order of "better", in row
                                groups of SCORE_ROW_GROUP rows with statistics
    histograms/<shard>.npy      int64[SCORE_BINS]: the shard's documents per bin

`bin` = floor(score * SCORE_BINS), the top bin holding 1.0 too. The bins are fixed, so the
histograms of all shards add up, and `bin` falls along each sorted file: a reader of one
bin opens only the row groups whose `bin` statistics include it (`rows_in_bin`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.artifacts import FileEntry, commit_artifact, open_parquet, tmp_path_for
from pipeline.stage import StageInput
from stages.filters.text import fasttext_line, load_fasttext

TRAIN_KIND = "train_quality_classifier"
MODEL_SUFFIX, METRICS_SUFFIX = "model/quality.bin", "model/metrics.json"
REJECT_BELOW_THRESHOLD = "quality_filter:below_threshold"
REJECT_BELOW_TOP_PERCENT = "quality_filter:below_top_percent"
CUT_FILE = "meta/cut.json"  # quality_cut writes it, quality_top reads it

SCORE_BINS = 4096
SCORE_ROW_GROUP = 1024  # rows; what a bin reader skips by, and buffers per file when merging
SCORE_SCHEMA = pa.schema([("score", pa.float64()), ("id", pa.string()), ("row", pa.int64()),
                          ("bin", pa.int32())])
BETTER_FIRST = [("score", "descending"), ("id", "descending")]  # Arrow orders strings by
# UTF-8 bytes, which is code point order: Python's order of (score, id) tuples


def model_input_of(stage_name: str, inputs: list[StageInput], name: str | None) -> StageInput:
    """The input holding the classifier: the one named `name`, else the one of TRAIN_KIND."""
    found = [i for i in inputs if _is_model(i, name)]
    if len(found) != 1:
        raise ValueError(
            f"stage '{stage_name}': needs exactly one model input "
            f"({'named ' + repr(name) if name else 'of kind ' + TRAIN_KIND}); inputs: "
            + ", ".join(f"{i.name} ({i.kind})" for i in inputs)
        )
    return found[0]


def doc_inputs_of(inputs: list[StageInput], name: str | None) -> list[StageInput]:
    """The inputs that supply documents: all but the model input."""
    return [i for i in inputs if not _is_model(i, name)]


def _is_model(stage_input: StageInput, name: str | None) -> bool:
    return stage_input.name == name if name else stage_input.kind == TRAIN_KIND


def scorer_settings(model_input: StageInput) -> dict[str, Any]:
    """What a task needs to score: the model file, the positive label, the lowercasing."""
    settings = json.loads(storage.read_text(_file_ending(model_input, METRICS_SUFFIX)))
    return {
        "model": _file_ending(model_input, MODEL_SUFFIX),
        "label": f"__label__{settings['labels']['positive']}",
        "lowercase": settings["lowercase"],
    }


class QualityScorer:
    """The classifier's score of one text; the model loads on the first call (per worker)."""

    def __init__(self, settings: dict[str, Any]):
        self.settings = settings
        self._model = None

    def score(self, text: str) -> float:
        """Probability of the high-quality label."""
        if self._model is None:
            self._model = load_fasttext(storage.local_copy(self.settings["model"]))
        line = fasttext_line(text, self.settings["lowercase"])
        labels, probs = self._model.predict(line, k=-1)
        for label, prob in zip(labels, probs):
            if label == self.settings["label"]:
                return min(float(prob), 1.0)
        return 0.0


def score_bins(scores: np.ndarray) -> np.ndarray:
    """The fixed histogram bin of each score in [0, 1]."""
    if len(scores) and not (np.all(scores >= 0.0) and np.all(scores <= 1.0)):
        raise ValueError("quality scores must lie in [0, 1]")
    return np.minimum((scores * SCORE_BINS).astype(np.int64), SCORE_BINS - 1).astype(np.int32)


def rows_in_bin(path: str, bin_index: int) -> Iterator[pa.Table]:
    """The (score, id) rows of bin `bin_index` in one score file, one row group at a time,
    better first; row groups whose `bin` statistics exclude the bin are never read. The
    file is reopened per row group, so a paused reader holds no open file."""
    with open_parquet(path) as parquet:
        meta = parquet.metadata
        column = parquet.schema_arrow.get_field_index("bin")
        groups = []
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(column).statistics
            if stats is None or not stats.has_min_max or stats.min <= bin_index <= stats.max:
                groups.append(g)
    for g in groups:
        with open_parquet(path) as parquet:
            table = parquet.read_row_group(g, columns=["score", "id", "bin"])
        table = table.filter(pc.equal(table.column("bin"), bin_index))
        if table.num_rows:
            yield table.select(["score", "id"])


def commit_score_table(stage_dir: Path, final: Path, table: pa.Table) -> FileEntry:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(final)
    pq.write_table(table, tmp, row_group_size=SCORE_ROW_GROUP, compression="zstd",
                   use_dictionary=False, write_statistics=True)
    return commit_artifact(stage_dir, tmp, final, docs=table.num_rows)


def commit_histogram(stage_dir: Path, final: Path, counts: np.ndarray) -> FileEntry:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(final)
    with open(tmp, "wb") as f:
        np.save(f, counts.astype(np.int64))
    return commit_artifact(stage_dir, tmp, final, docs=int(counts.sum()))


def read_histogram(path: str) -> np.ndarray:
    with storage.open_input(path) as f:
        counts = np.load(f)
    if counts.shape != (SCORE_BINS,):
        raise ValueError(f"{path}: a histogram of {counts.shape} bins, expected {SCORE_BINS}")
    return counts


def commit_json(stage_dir: Path, final: Path, obj: Any) -> FileEntry:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(final)
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    return commit_artifact(stage_dir, tmp, final)


def files_under(stage_input: StageInput, folder: str) -> dict[str, str]:
    """File stem -> path of an input's files in `folder` (e.g. scores/)."""
    return {Path(f).stem: f for f in stage_input.files if Path(f).parent.name == folder}


def _file_ending(stage_input: StageInput, suffix: str) -> str:
    for path in stage_input.files:
        if Path(path).as_posix().endswith(suffix):
            return path
    raise FileNotFoundError(
        f"input stage '{stage_input.name}' has no committed {suffix} (files: "
        f"{', '.join(stage_input.files) or 'none'})"
    )
