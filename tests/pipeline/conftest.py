"""Engine test helpers: generated corpora (jsonl files with a few planted bad records) and
`DieOnce`, a stage whose worker process dies (SIGKILL) the first time it sees a marker id."""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
from pathlib import Path

import pyarrow as pa

from pipeline.documents import Document
from pipeline.stage import DocStage, Params

WORDS = ("the quick brown fox jumps over lazy dog river stone light bread city garden "
         "music paper window storm silver market winter harbour candle mirror").split()


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_corpus(root: Path, files: int = 4, docs_per_file: int = 50, seed: int = 0) -> Path:
    """`files` jsonl files of `docs_per_file` documents with varied lengths; returns root."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        lines = [
            json.dumps({"id": f"f{f}-{i}", "text": sentence(rng, rng.randint(3, 60))})
            for i in range(docs_per_file)
        ]
        (root / f"part-{f:03d}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def write_malformed(root: Path) -> dict[str, int]:
    """Files covering every kind of bad input ingest must count; returns expected errors."""
    root.mkdir(parents=True, exist_ok=True)
    good = json.dumps({"text": "a perfectly good document"})
    (root / "mixed.jsonl").write_bytes(
        (good + "\n" + '{"text": "cut off\n' + json.dumps({"body": "no text"}) + "\n"
         + json.dumps({"text": 42}) + "\n" + "[1, 2]\n" + "\n" + good + "\n").encode()
        + b'{"text": "caf\xe9"}\n'
    )
    (root / "empty.jsonl").write_bytes(b"")
    rng = random.Random(1)
    lines = [json.dumps({"text": sentence(rng, 30)}) for _ in range(2000)]
    payload = gzip.compress(("\n".join(lines) + "\n").encode())
    (root / "truncated.jsonl.gz").write_bytes(payload[: len(payload) // 2])
    (root / "notgzip.jsonl.gz").write_bytes(b"this is not gzip data at all")
    (root / "notes.txt").write_bytes("plain text file\n\nsecond paragraph".encode())
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    return {
        "invalid_json": 1,
        "missing_text_field": 1,
        "text_not_string": 1,
        "not_an_object": 1,
        "invalid_utf8": 2,
        "empty_file": 1,
        "truncated_file": 1,
        "unreadable_file": 1,
    }


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
