"""Engine test helpers: generated corpora (jsonl files with a few planted bad records),
`DieOnce`, a stage whose worker process dies (SIGKILL) the first time it sees a marker id,
and a DAG of every stage family over inputs on the S3 test server (`dag`, `upload_inputs`),
with `committed` to compare runs by the checksums their manifests list."""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
from pathlib import Path

import fsspec
import pyarrow as pa

from pipeline import storage
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
        "truncated:gz": 1,
        "corrupt:gz": 1,
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


DATA = Path(__file__).resolve().parents[1] / "data"
REPO = Path(__file__).resolve().parents[2]
TINY = {"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "hidden_dim": 64, "max_seq_len": 32}


def upload_inputs(bucket: str) -> dict[str, str]:
    fs = fsspec.filesystem("s3")
    urls = {}
    for name in ("iana.warc.gz",):
        fs.put_file(str(DATA / "warc" / name), f"{bucket[5:]}/inputs/{name}")
        urls[name] = f"{bucket}/inputs/{name}"
    fs.put_file(str(DATA / "filter_docs.jsonl.gz"), f"{bucket[5:]}/inputs/filter_docs.jsonl.gz")
    urls["docs"] = f"{bucket}/inputs/filter_docs.jsonl.gz"
    return urls


def dag(run_dir: str, urls: dict[str, str], pretrain_steps: int = 6, every_kind: bool = False) -> dict:
    """The DAG: WARC and jsonl inputs -> extract -> langid -> heuristics -> pii -> exact and
    MinHash dedup -> BPE -> token shards -> a tiny pretrained model. `every_kind` adds a
    quality classifier and its top-percent filter, the generic filter and an SFT stage."""
    config = {
        "name": "s3",
        "run_dir": run_dir,
        "stages": {
            "pages": {"kind": "ingest_warc", "params": {"paths": [urls["iana.warc.gz"]]}},
            "text": {"kind": "extract", "inputs": ["pages"], "params": {"engine": "resiliparse"}},
            "docs": {"kind": "ingest", "params": {"paths": [urls["docs"]], "shard_size": 50}},
            "lang": {"kind": "langid", "inputs": ["text", "docs"], "params": {"keep": ["en"]}},
            "rules": {"kind": "heuristic_filter", "inputs": ["lang"],
                      "params": {"rule_sets": ["gopher_repetition", "fineweb_quality"]}},
            "pii": {"kind": "pii", "inputs": ["rules"]},
            "exact": {"kind": "exact_dedup", "inputs": ["pii"]},
            "near": {"kind": "minhash_dedup", "inputs": ["exact"],
                     "params": {"threshold": 0.8, "num_perm": 64, "partitions": 2}},
            "bpe": {"kind": "train_tokenizer", "inputs": ["near"], "params": {"vocab_size": 400}},
            "tok": {"kind": "tokenize", "inputs": ["near", "bpe"], "params": {"val_fraction": 0.1}},
            "lm": {"kind": "pretrain", "inputs": ["tok"], "params": {
                "model": TINY, "data": {"seq_len": 32},
                "train": {"batch_size": 4, "max_steps": pretrain_steps, "warmup_steps": 2,
                          "lr": 3e-3, "min_lr": 3e-4, "eval_every": 3, "eval_batches": 1,
                          "log_every": 3, "checkpoint_every": 3, "seed": 0},
                "sample_tokens": 8}},
        },
    }
    if every_kind:
        stages = config["stages"]
        stages["qmodel"] = {"kind": "train_quality_classifier", "inputs": ["text", "docs"],
                            "params": {"positive_input": "docs", "seed": 0, "epoch": 5, "dim": 16,
                                       "bucket": 10_000, "holdout_fraction": 0.2,
                                       "balance": False}}
        stages["quality"] = {"kind": "quality_filter", "inputs": ["lang", "qmodel"],
                             "params": {"top_percent": 90}}
        stages["clean"] = {"kind": "filter", "inputs": ["quality"], "params": {"min_words": 5}}
        stages["rules"]["inputs"] = ["clean"]
        stages["chat"] = {"kind": "sft", "inputs": ["lm"], "params": {
            "preset": str(REPO / "configs" / "sft.yaml"),
            "data": {"train_file": str(DATA / "sft_preference_240.json"), "max_examples": 40,
                     "seq_len": 32, "val_fraction": 0.2},
            "train": {"batch_size": 4, "max_steps": 2, "warmup_steps": 1, "eval_every": 2,
                      "eval_batches": 1, "log_every": 1, "seed": 0}}}
    return config


def committed(run_dir) -> dict[str, str]:
    """sha256 of every file every manifest lists, by stage/relative path (timings aside)."""
    root = storage.run_location(run_dir)
    out = {}
    for manifest_path in sorted(storage.files_under(root), key=str):
        if manifest_path.name != "manifest.json":
            continue
        manifest = json.loads(storage.read_text(manifest_path))
        assert manifest["complete"], manifest_path
        for task in manifest["tasks"].values():
            for f in task["files"]:
                if f["path"].endswith("train_log.jsonl"):
                    continue  # wall-clock timings
                out[f"{manifest['stage']}/{f['path']}"] = f["sha256"]
    return out
