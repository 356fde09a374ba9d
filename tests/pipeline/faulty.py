"""A stage for executor tests: its process dies (SIGKILL) the first time it sees a marker id."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pyarrow as pa

from pipeline.documents import Document
from pipeline.stage import DocStage, Params


class DieOnceParams(Params):
    marker: str  # a file path: absent -> create it and die; present -> behave
    victim_id: str


class DieOnce(DocStage):
    kind = "die_once"
    Params = DieOnceParams
    score_columns = {"length": pa.int64()}

    def apply(self, doc: Document) -> Document:
        if doc.id == self.params.victim_id and not Path(self.params.marker).exists():
            Path(self.params.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        doc.columns["length"] = len(doc.text)
        return doc
