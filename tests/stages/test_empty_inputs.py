"""Every stage kind on upstream stages with zero documents (issue 19, item 4).

A stage that transforms documents completes with zero documents; one for which an empty
input makes no sense (training a tokenizer, a classifier, a model) fails with a message
naming the upstream stage that produced nothing.
"""

from __future__ import annotations

import gzip
import json

import pytest

import pipeline
from pipeline.runner import StageFailed
from stages import STAGE_KINDS


def empty_dag(tmp_path):
    """ingest (one document) -> `none` (a filter that drops it): every later stage reads
    a complete stage with zero documents. A second branch, `corpus`, has documents to
    train a tokenizer and a quality classifier on, for the stages that need one."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jsonl").write_text(json.dumps({"id": "a", "text": "one two"}) + "\n")
    lines = [json.dumps({"id": f"c{i}", "text": f"Document {i} says {'word ' * (i % 7)}and more."})
             for i in range(40)]
    (src / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    positives = tmp_path / "positives.jsonl.gz"
    with gzip.open(positives, "wt") as f:
        for i in range(20):
            f.write(json.dumps({"text": f"A clean sentence number {i} about the river."}) + "\n")
    (tmp_path / "eval.txt").write_text("an evaluation text of more than thirteen words, so that "
                                       "its n-grams exist and the stage has something to match")
    empty_warc = tmp_path / "info-only.warc.gz"  # a WARC file with no page in it
    info = b"software: lmforge-test\r\n"
    empty_warc.write_bytes(gzip.compress(
        b"WARC/1.0\r\nWARC-Type: warcinfo\r\nWARC-Record-ID: <urn:uuid:0>\r\n"
        b"WARC-Date: 2026-01-01T00:00:00Z\r\nContent-Type: application/warc-fields\r\n"
        + f"Content-Length: {len(info)}\r\n\r\n".encode() + info + b"\r\n\r\n"))
    stages = {
        "ingest": {"kind": "ingest", "params": {"paths": [str(src / "a.jsonl")]}},
        "none": {"kind": "filter", "inputs": ["ingest"], "params": {"min_words": 1000}},
        "corpus": {"kind": "ingest", "params": {"paths": [str(src / "corpus.jsonl")]}},
        "tokenizer": {"kind": "train_tokenizer", "inputs": ["corpus"],
                      "params": {"vocab_size": 300}},
        "classifier": {"kind": "train_quality_classifier", "inputs": ["corpus"],
                       "params": {"positive_paths": [str(positives)]}},
        "pages": {"kind": "ingest_warc", "params": {"paths": [str(empty_warc)]}},
        "text": {"kind": "extract", "inputs": ["none"], "params": {"engine": "resiliparse"}},
        "langid": {"kind": "langid", "inputs": ["none"]},
        "heuristics": {"kind": "heuristic_filter", "inputs": ["none"]},
        "pii": {"kind": "pii", "inputs": ["none"]},
        "exact": {"kind": "exact_dedup", "inputs": ["none"]},
        "dedup": {"kind": "minhash_dedup", "inputs": ["none"], "params": {"partitions": 2}},
        "top": {"kind": "quality_filter", "inputs": ["none", "classifier"],
                "params": {"top_percent": 50}},
        "above": {"kind": "quality_filter", "inputs": ["none", "classifier"],
                  "params": {"threshold": 0.5}},
        "tokens": {"kind": "tokenize", "inputs": ["none", "tokenizer"]},
        "decon": {"kind": "decontaminate", "inputs": ["none"],
                  "params": {"paths": [str(tmp_path / "eval.txt")]}},
        "coherent": {"kind": "coherence_filter", "inputs": ["none"]},
    }
    return {"name": "empty", "run_dir": str(tmp_path / "run"), "stages": stages}


EMPTY = ["pages", "text", "langid", "heuristics", "pii", "exact", "dedup", "top", "above",
         "tokens", "decon", "coherent"]


def test_document_stages_complete_with_zero_documents(tmp_path):
    outcomes = {o.name: o for o in pipeline.run(empty_dag(tmp_path))}
    assert outcomes["none"].counts.kept == 0
    for name in EMPTY:
        assert outcomes[name].status == "ran"
        assert outcomes[name].counts.kept == 0, name
        assert outcomes[name].counts.n_in == (name == "pages"), name  # pages: the warcinfo
    status = pipeline.cli.run_status(tmp_path / "run")["stages"]
    assert all(s["state"] == "complete" for s in status)
    # issue 19, item 5: the tokenizer's held-out sample is set aside, not dropped
    tokenizer = next(s for s in status if s["stage"] == "tokenizer")
    assert tokenizer["units"] == "documents -> trained on"
    assert tokenizer["dropped"] == {} and tokenizer["set_aside"]["tokenizer:heldout"] > 0
    assert tokenizer["in"] == 40 == tokenizer["kept"] + sum(tokenizer["set_aside"].values())
    table = pipeline.cli.format_status(pipeline.cli.run_status(tmp_path / "run"))
    assert "set aside: tokenizer:heldout" in table and "drop: tokenizer" not in table


@pytest.mark.parametrize("kind, params, upstream", [
    ("train_tokenizer", {"vocab_size": 300}, "none"),
    ("train_quality_classifier", {"positive_paths": ["POSITIVES"]}, "none"),
    ("pretrain", {"model": {"dim": 32, "n_layers": 1, "n_heads": 2, "hidden_dim": 64,
                            "max_seq_len": 16},
                  "data": {"seq_len": 16}, "train": {"batch_size": 2, "max_steps": 2}}, "tokens"),
])
def test_training_on_nothing_names_the_empty_upstream(tmp_path, kind, params, upstream):
    config = empty_dag(tmp_path)
    keep = ("ingest", "none", "corpus", "tokenizer", "tokens")
    config["stages"] = {k: v for k, v in config["stages"].items() if k in keep}
    positives = str(tmp_path / "positives.jsonl.gz")
    params = json.loads(json.dumps(params).replace("POSITIVES", positives))
    config["stages"]["trained"] = {"kind": kind, "inputs": [upstream], "params": params}
    with pytest.raises(StageFailed, match=f"upstream stage '{upstream}' produced no documents"):
        pipeline.run(config)


def test_every_kind_is_covered(tmp_path):
    config = empty_dag(tmp_path)
    covered = {s["kind"] for s in config["stages"].values()} | {"pretrain"}
    # phases of the composites above; sft and dpo read a pretrain (sft) stage and chat
    # files; crawl with no page fetched is an error of its own (tests/stages/crawl)
    others = {"exact_fingerprints", "exact_duplicates", "exact_filter", "minhash_signatures",
              "minhash_buckets", "minhash_clusters", "minhash_filter", "quality_threshold",
              "quality_scores", "quality_cut", "quality_top", "coherence_counts",
              "coherence_table", "coherence_keep", "sft", "dpo", "crawl"}
    assert set(STAGE_KINDS) == covered | others
