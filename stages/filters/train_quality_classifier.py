"""`train_quality_classifier`: a fastText quality classifier, trained the DCLM / GPT-3 way.

    quality_model:
      kind: train_quality_classifier
      inputs: [clean, reference]            # the corpus to filter, and curated text
      params:
        positive_input: reference           # or positive_paths: [curated/*.jsonl]
        max_positives: 100000
        max_negatives: 100000
        seed: 0

Positives are documents of a reference corpus the user trusts: the input stage named by
`positive_input` (e.g. an `ingest` of curated text), or files given by `positive_paths`
(`.txt`: one document per file; `.jsonl`/`.jsonl.gz`: a `text` field per line; `.parquet`:
doc shards). Negatives are sampled from every other input: the corpus being filtered, as
GPT-3 and DCLM do (most of a web crawl is worse than the reference). Both samples are
bottom-k by a seeded hash of the document id, so they are the same whatever the shard
layout or the order documents are read in; with `balance` (the default) the larger class
is cut to the size of the smaller, so the classifier learns no class prior; the same hash
holds out `holdout_fraction` of each class for evaluation.

One task trains fastText's supervised model (labels `__label__hq` / `__label__lq`) on the
shuffled sample, single-threaded by default because fastText's Hogwild threads make the
model differ from run to run; `thread` above 1 is faster but not reproducible. Training
runs in a fresh Python process: fastText initialises its embeddings in 10 blocks, one per
thread, and with fewer than 10 threads the rest is uninitialised memory (the "NaN unless
thread >= 10" trap of the data README); a fresh process gets zeroed pages for it, which
makes single-threaded training safe and bit-for-bit reproducible.
Held-out precision, recall, F1 and accuracy are in the task's `info` (manifest.json) and in
`model/metrics.json`; the artifact is `model/quality.bin` plus `model/metrics.json`, which
also records the settings `quality_filter` needs (labels, lowercasing).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import fsspec
from pydantic import Field, model_validator

from pipeline.artifacts import commit_artifact, read_doc_shard, tmp_path_for
from pipeline.inputs import expand_paths, fingerprint_files
from pipeline.stage import Counts, Params, Stage, StageInput, Task, TaskResult
from stages.filters.text import fasttext_line, load_fasttext

POSITIVE, NEGATIVE = "hq", "lq"
MODEL_FILE, METRICS_FILE = "model/quality.bin", "model/metrics.json"


class TrainQualityParams(Params):
    positive_input: str | None = None  # name of the input stage holding the positives
    positive_paths: list[str] = []  # or curated files (globs): .txt, .jsonl(.gz), .parquet
    max_positives: int = Field(default=100_000, ge=2)
    max_negatives: int = Field(default=100_000, ge=2)
    holdout_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    balance: bool = True  # as many negatives as positives (and vice versa): no class prior
    min_chars: int = Field(default=1, ge=1)  # skip (near-)empty documents
    lowercase: bool = False
    seed: int = 0
    # fastText supervised hyperparameters (DCLM used epoch 5, lr 0.1, wordNgrams 2)
    epoch: int = Field(default=5, ge=1)
    lr: float = Field(default=0.1, gt=0.0)
    word_ngrams: int = Field(default=2, ge=1)
    dim: int = Field(default=100, ge=1)
    min_count: int = Field(default=1, ge=1)
    bucket: int = Field(default=2_000_000, ge=1)
    thread: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _one_positive_source(self) -> TrainQualityParams:
        if (self.positive_input is None) == (not self.positive_paths):
            raise ValueError("give exactly one of positive_input and positive_paths")
        return self


class TrainQualityClassifier(Stage):
    kind = "train_quality_classifier"
    version = 1
    Params = TrainQualityParams
    needs_documents = True  # an upstream stage that kept nothing fails it

    def fingerprint(self) -> Any:
        return fingerprint_files(self.positive_files()) if self.params.positive_paths else None

    def positive_files(self) -> list[tuple[str, str]]:
        """(url, source) of the curated files, sorted."""
        return expand_paths(self.params.positive_paths, f"stage '{self.name}': params.positive_paths")

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        p = self.params
        names = [i.name for i in inputs]
        if p.positive_input is not None and p.positive_input not in names:
            raise ValueError(
                f"stage '{self.name}': params.positive_input {p.positive_input!r} is not one "
                f"of its inputs ({', '.join(names)})"
            )
        negatives = tuple(s for i in inputs if i.name != p.positive_input for s in i.shards)
        positives = tuple(s for i in inputs if i.name == p.positive_input for s in i.shards)
        if not negatives:
            raise ValueError(
                f"stage '{self.name}': no negative documents: give the corpus to filter as an "
                "input besides the positives"
            )
        return [Task(
            name="train",
            inputs=negatives,
            payload=(("positives", tuple((s, s) for s in positives) or tuple(self.positive_files())),),
        )]

    def run_task(self, task: Task) -> TaskResult:
        p = self.params
        counts = Counts()
        positives = self._sample(_read_texts(task.get("positives")), p.max_positives, counts)
        negatives = self._sample(
            _read_texts([(path, path) for path in task.inputs]), p.max_negatives, counts
        )
        if len(positives) < 2 or len(negatives) < 2:
            raise ValueError(
                f"stage '{self.name}': too few documents to train on "
                f"({len(positives)} positives, {len(negatives)} negatives)"
            )
        if p.balance and len(positives) != len(negatives):
            k = min(len(positives), len(negatives))
            counts.dropped["train_quality_classifier:balance"] = len(positives) + len(negatives) - 2 * k
            positives, negatives = positives[:k], negatives[:k]
        train, held_out = self._split(positives, negatives)
        model_path = self.stage_dir / MODEL_FILE
        saved = self._train(train, model_path)
        metrics = evaluate(load_fasttext(saved), held_out, p.lowercase)
        metrics.update(
            positives=len(positives),
            negatives=len(negatives),
            train_examples=len(train),
            labels={"positive": POSITIVE, "negative": NEGATIVE},
            lowercase=p.lowercase,
            seed=p.seed,
        )
        entries = [commit_artifact(self.stage_dir, saved, model_path, docs=len(train))]
        metrics_path = self.stage_dir / METRICS_FILE
        tmp = tmp_path_for(metrics_path)
        tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        entries.append(commit_artifact(self.stage_dir, tmp, metrics_path))
        counts.kept = len(positives) + len(negatives)
        return TaskResult(entries, counts, info=metrics)

    def _sample(self, texts: Iterator[tuple[str, str]], k: int, counts: Counts) -> list[tuple[str, str]]:
        """Bottom-k of (seeded hash of id): the same sample for any read order or sharding."""
        heap: list[tuple[int, str, str]] = []  # max-heap through negated ranks
        eligible = 0
        for doc_id, text in texts:
            counts.n_in += 1
            counts.bytes_in += len(text)
            if len(text) < self.params.min_chars:
                counts.dropped["train_quality_classifier:too_short"] += 1
                continue
            eligible += 1
            rank = _hash(self.params.seed, "sample", doc_id)
            if len(heap) < k:
                heapq.heappush(heap, (-rank, doc_id, text))
            elif rank < -heap[0][0]:
                heapq.heapreplace(heap, (-rank, doc_id, text))
        if eligible > len(heap):
            counts.dropped["train_quality_classifier:not_sampled"] += eligible - len(heap)
        # lowest rank first, so that truncating the list keeps a bottom-k sample
        return [(doc_id, text) for _, doc_id, text in sorted(heap, reverse=True)]

    def _split(self, positives: list[tuple[str, str]], negatives: list[tuple[str, str]]):
        """Training lines (shuffled with the seed) and held-out (label, text) pairs."""
        train: list[str] = []
        held_out: list[tuple[str, str]] = []
        for label, docs in ((POSITIVE, positives), (NEGATIVE, negatives)):
            for doc_id, text in docs:
                if _hash(self.params.seed, "holdout", doc_id) / 2**64 < self.params.holdout_fraction:
                    held_out.append((label, text))
                else:
                    train.append(f"__label__{label} {fasttext_line(text, self.params.lowercase)}")
        random.Random(self.params.seed).shuffle(train)
        return train, held_out

    def _train(self, lines: list[str], model_path: Path) -> Path:
        """Train in a fresh Python process; return the path of the saved (temporary) model.

        fastText (this binding) fills its input matrix in 10 fixed blocks, one per thread,
        and leaves the blocks of missing threads uninitialised: with fewer than 10 threads,
        90% of the embeddings start as whatever the allocator hands back. In a long-lived
        process that is recycled memory and training hits NaN at random; in a fresh process
        with glibc told to mmap large blocks it is fresh zeroed pages, so single-threaded
        training is both safe and bit-for-bit reproducible.
        """
        p = self.params
        train_file = tmp_path_for(model_path.with_suffix(".train.txt"))
        saved = tmp_path_for(model_path)
        args = dict(
            input=str(train_file), epoch=p.epoch, lr=p.lr, wordNgrams=p.word_ngrams, dim=p.dim,
            minCount=p.min_count, bucket=p.bucket, thread=p.thread, seed=p.seed, verbose=0,
        )
        try:
            train_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
            result = subprocess.run(
                [sys.executable, "-c", _TRAIN_SCRIPT, json.dumps(args), str(saved)],
                env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"},
                capture_output=True, text=True, check=False,
            )
        finally:
            train_file.unlink(missing_ok=True)
        if result.returncode != 0:
            saved.unlink(missing_ok=True)
            error = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(
                f"stage '{self.name}': fastText training failed: {error} (if it says "
                "'Encountered NaN', lower lr or raise thread to 10)"
            )
        return saved


_TRAIN_SCRIPT = """
import json, sys
import fasttext
fasttext.FastText.eprint = lambda *a, **k: None
fasttext.train_supervised(**json.loads(sys.argv[1])).save_model(sys.argv[2])
"""


def evaluate(model: Any, held_out: list[tuple[str, str]], lowercase: bool) -> dict[str, Any]:
    """Precision, recall, F1 (of the positive class) and accuracy on held-out documents."""
    tp = fp = fn = tn = 0
    for label, text in held_out:
        predicted = model.predict(fasttext_line(text, lowercase), k=1)[0]
        positive = bool(predicted) and predicted[0] == f"__label__{POSITIVE}"
        if label == POSITIVE:
            tp, fn = tp + positive, fn + (not positive)
        else:
            fp, tn = fp + positive, tn + (not positive)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "held_out": len(held_out),
        "precision": round(precision, 6),
        "recall": round(recall, 6),
        "f1": round(f1, 6),
        "accuracy": round((tp + tn) / len(held_out), 6) if held_out else 0.0,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


def _hash(seed: int, purpose: str, doc_id: str) -> int:
    digest = hashlib.blake2b(f"{seed}\0{purpose}\0{doc_id}".encode("utf-8", "surrogatepass"),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _read_texts(files: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """(id, text) of every document in doc shards or curated files, given (path, source)
    pairs: a file's documents are named after its source, so ids do not depend on where
    the data sits on this machine."""
    for path, source in files:
        if path.endswith(".parquet"):
            for doc in read_doc_shard(path):
                yield doc.id, doc.text
        elif path.endswith((".jsonl", ".jsonl.gz", ".json", ".ndjson")):
            with fsspec.open(path, "rt", encoding="utf-8", compression="infer") as f:
                for n, line in enumerate(f):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                        text = record["text"]
                    except (ValueError, KeyError, TypeError) as exc:
                        raise ValueError(f"{path}: line {n + 1}: no JSON 'text' field ({exc})") from None
                    yield str(record.get("id", f"{source}#{n}")), str(text)
        else:
            with fsspec.open(path, "rt", encoding="utf-8", errors="replace", compression="infer") as f:
                yield source, f.read()
