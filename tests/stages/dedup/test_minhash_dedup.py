"""`minhash_dedup`: one params block, the same bytes as the four phases wired by hand."""

from __future__ import annotations

import json
import random

import pyarrow.parquet as pq
import pytest

from pipeline import run
from pipeline.config import ConfigError, config_from_dict
from pipeline.status import run_status
from stages import stage_class_for
from tests.conftest import shard_bytes

PARAMS = {"threshold": 0.8, "num_perm": 64, "ngram": 3, "partitions": 2, "verify": "exact"}


def near_duplicate_corpus(directory) -> None:
    """Two jsonl files: 20 unique texts, and a one-word edit of 6 of them in the other file."""
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(2000)]
    texts = [[rng.choice(vocab) for _ in range(150)] for _ in range(20)]
    edits = [list(t) for t in texts[:6]]
    for words in edits:
        words[75] = "edited"
    directory.mkdir()
    for name, group in (("a", texts), ("b", edits)):
        lines = [json.dumps({"id": f"{name}{i}", "text": " ".join(w)}) for i, w in enumerate(group)]
        (directory / f"{name}.jsonl").write_text("\n".join(lines) + "\n")


def configs(tmp_path):
    corpus = tmp_path / "corpus"
    near_duplicate_corpus(corpus)
    ingest = {"kind": "ingest", "params": {"paths": [str(corpus / "*.jsonl")], "id_field": "id"}}
    composite = {"name": "one", "run_dir": str(tmp_path / "one"), "stages": {
        "docs": ingest,
        "dedup": {"kind": "minhash_dedup", "inputs": ["docs"], "params": PARAMS},
    }}
    signature_keys = {k: v for k, v in PARAMS.items() if k != "verify"}
    by_hand = {"name": "four", "run_dir": str(tmp_path / "four"), "stages": {
        "docs": ingest,
        "signatures": {"kind": "minhash_signatures", "inputs": ["docs"], "params": signature_keys},
        "buckets": {"kind": "minhash_buckets", "inputs": ["signatures"],
                    "params": {"verify": "exact"}},
        "clusters": {"kind": "minhash_clusters", "inputs": ["buckets"]},
        "dedup": {"kind": "minhash_filter", "inputs": ["docs", "clusters"]},
    }}
    return composite, by_hand


def test_minhash_dedup_gives_the_bytes_of_the_four_phases(tmp_path):
    composite, by_hand = configs(tmp_path)
    outcomes = run(composite)
    assert [o.name for o in outcomes] == [
        "docs", "dedup.signatures", "dedup.buckets", "dedup.clusters", "dedup"]
    run(by_hand)
    one, four = tmp_path / "one" / "dedup", tmp_path / "four" / "dedup"
    assert shard_bytes(one) == shard_bytes(four)
    kept = pq.read_table(one / "shards").column("id").to_pylist()
    assert sorted(kept) == sorted(f"a{i}" for i in range(20))  # the edits are dropped
    units = {s["stage"]: s["units"] for s in run_status(tmp_path / "one")["stages"]}
    assert units == {"docs": "documents", "dedup.signatures": "documents",
                     "dedup.buckets": "band rows -> pairs",
                     "dedup.clusters": "pairs -> documents", "dedup": "documents"}


def test_minhash_dedup_params_and_inputs_are_checked_at_load(tmp_path):
    composite, _ = configs(tmp_path)
    composite["stages"]["dedup"]["params"] = {**PARAMS, "bands": 4}
    with pytest.raises(ConfigError, match="stage 'dedup': params.*give both bands and rows"):
        config_from_dict(composite, stage_class_for, "c.yaml")
    composite["stages"]["dedup"]["params"] = PARAMS
    composite["stages"]["more"] = {"kind": "ingest", "params": {"paths": ["x.jsonl"]}}
    composite["stages"]["dedup"]["inputs"] = ["docs", "more"]
    with pytest.raises(ConfigError, match="c.yaml: stage 'dedup': inputs: needs exactly one"):
        config_from_dict(composite, stage_class_for, "c.yaml")
