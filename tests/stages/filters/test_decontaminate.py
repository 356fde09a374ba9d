"""decontaminate: documents sharing a 13-word n-gram with evaluation files are dropped."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import run
from pipeline.config import ConfigError
from stages.filters import decontaminate
from stages.filters.decontaminate import load_eval_ngrams, ngram_hashes, normalized_words

# Three evaluation files, one per format; each holds one 13-word passage planted below.
QUESTION = "Which planet in the solar system has the longest day measured against its year"
CHOICES = ["Venus", "Mercury", "Mars"]
HELDOUT = ("It was a bright cold day in April and the clocks were striking\n"
           "thirteen while the wind swept the dust along the empty street")
PARQUET_TEXT = "The committee agreed that the bridge would be closed for repairs until the spring"
FILLER = ("The harbour town woke slowly under a grey sky. Fishermen hauled their nets onto "
          "the quay while gulls argued over scraps. A baker on the corner had been up since four. ")


def words(text: str, start: int, stop: int) -> str:
    return " ".join(text.split()[start:stop])


DOCS = {
    # 13 consecutive words of the JSONL question: dropped
    "planted": FILLER + words(QUESTION, 1, 14) + " and more. " + FILLER,
    # 12 of them, the 13th word changed: kept
    "near_miss": FILLER + words(QUESTION, 1, 13) + " banana split. " + FILLER,
    # the same 13 words in capitals with punctuation between them: dropped (normalised)
    "case_punct": FILLER + "PLANET, in the SOLAR-system; has (the) LONGEST day: Measured "
                  "against... its year!" + FILLER,
    # 16 words (4 n-grams) across the line break of the .txt file: dropped
    "txt": "He said: April, and the clocks were striking thirteen while the wind swept the "
           "dust along the empty lanes. " + FILLER,
    # the Parquet passage: dropped
    "parquet": FILLER + PARQUET_TEXT.upper(),
    "clean": FILLER * 3,
}
DROPPED = {"planted": "questions.jsonl.gz", "case_punct": "questions.jsonl.gz",
           "txt": "heldout.txt", "parquet": "more/passages.parquet"}


def write_evals(root):
    evals = root / "evals"
    (evals / "more").mkdir(parents=True)
    with gzip.open(evals / "questions.jsonl.gz", "wt") as f:
        f.write(json.dumps({"question": QUESTION, "choices": CHOICES, "answer": 1}) + "\n")
        f.write(json.dumps({"question": "Too short to match anything here."}) + "\n")
    (evals / "heldout.txt").write_text(HELDOUT)
    pq.write_table(pa.table({"text": [PARQUET_TEXT], "label": [0]}),
                   evals / "more" / "passages.parquet")
    return evals


def config(tmp_path, params):
    tmp_path.mkdir(parents=True, exist_ok=True)
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in DOCS.items()))
    return {
        "name": "decontam",
        "run_dir": str(tmp_path / "run"),
        "stages": {
            "ingest": {"kind": "ingest", "params": {"paths": [str(corpus)], "id_field": "id",
                                                     "shard_size": 4}},
            "decontam": {"kind": "decontaminate", "inputs": ["ingest"], "params": params},
        },
    }


def eval_params(evals, **extra):
    return {"paths": [str(evals / "*.jsonl.gz"), str(evals / "*.txt"),
                      str(evals / "more" / "*.parquet")],
            "text_fields": ["question", "choices", "text"], **extra}


def rows(stage_dir, sub):
    return [row for shard in sorted((stage_dir / sub).glob("*.parquet"))
            for row in pq.read_table(shard).to_pylist()]


def test_planted_ngrams_dropped_near_misses_kept(tmp_path):
    evals = write_evals(tmp_path)
    outcomes = run(config(tmp_path, eval_params(evals)))
    counts = {o.name: o.counts for o in outcomes}["decontam"]
    assert (counts.n_in, counts.kept) == (6, 2)
    assert dict(counts.dropped) == {"decontaminate:ngram": 4} and not counts.errors

    stage_dir = tmp_path / "run" / "decontam"
    rejected = {row["id"]: row for row in rows(stage_dir, "rejected")}
    assert {k: r["reason"] for k, r in rejected.items()} == dict.fromkeys(DROPPED,
                                                                          "decontaminate:ngram")
    for doc_id, source in DROPPED.items():
        detail = json.loads(rejected[doc_id]["metadata"])["decontaminate"]
        assert detail["file"] == source and detail["files"] == [source]
        assert rejected[doc_id]["error"] is None and rejected[doc_id]["outcome"] == "dropped"
    planted = json.loads(rejected["planted"]["metadata"])["decontaminate"]
    assert planted["ngram"] == words(QUESTION, 1, 14).lower()
    assert json.loads(rejected["case_punct"]["metadata"])["decontaminate"]["ngram"] == \
        "planet in the solar system has the longest day measured against its year"
    assert rejected["planted"]["decontaminate_matches"] == 1

    kept = {row["id"]: row for row in rows(stage_dir, "shards")}
    assert sorted(kept) == ["clean", "near_miss"]
    assert {row["decontaminate_matches"] for row in kept.values()} == {0}


def test_evaluation_files_restored_with_new_times_keep_the_cache_an_edit_does_not(tmp_path):
    import os

    evals = write_evals(tmp_path)
    cfg = config(tmp_path, eval_params(evals))
    assert {o.name: o.status for o in run(cfg)}["decontam"] == "ran"
    for path in evals.rglob("*.*"):  # the same bytes, as a copy or a re-provisioned folder has them
        os.utime(path, (1_000_000_000, 1_000_000_000))
    assert {o.name: o.status for o in run(cfg)}["decontam"] == "skipped"
    (evals / "heldout.txt").write_text(HELDOUT.replace("April", "March"))
    assert {o.name: o.status for o in run(cfg)}["decontam"] == "ran"


def test_ngram_size_and_min_matches_come_from_params(tmp_path):
    evals = write_evals(tmp_path)
    # 12-word n-grams: the near miss now matches too
    outcomes = run(config(tmp_path / "a", eval_params(evals, ngram=12)))
    assert {o.name: o.counts for o in outcomes}["decontam"].dropped == {"decontaminate:ngram": 5}
    # planted and case_punct share one 13-gram each, the 14-word Parquet passage 2, txt 4
    outcomes = run(config(tmp_path / "b", eval_params(evals, min_matches=2)))
    counts = {o.name: o.counts for o in outcomes}["decontam"]
    assert counts.kept == 4 and counts.dropped == {"decontaminate:ngram": 2}
    rejected = rows(tmp_path / "b" / "run" / "decontam", "rejected")
    assert {r["id"]: r["decontaminate_matches"] for r in rejected} == {"parquet": 2, "txt": 4}
    kept = rows(tmp_path / "b" / "run" / "decontam", "shards")
    assert {r["id"]: r["decontaminate_matches"] for r in kept} == {
        "planted": 1, "near_miss": 0, "case_punct": 1, "clean": 0}


def test_normalisation_is_lowercase_word_characters():
    assert normalized_words("Hello, WORLD!  don't\tstop_now -- 3.14 Café") == [
        "hello", "world", "don", "t", "stop_now", "3", "14", "café"]
    a = ngram_hashes(normalized_words("The (quick) brown-fox JUMPS."), 5)
    b = ngram_hashes(normalized_words("the quick brown fox jumps"), 5)
    assert len(a) == 1 and np.array_equal(a, b)
    assert len(ngram_hashes(["w"] * 12, 13)) == 0


def test_txt_files_stream_in_pieces_with_the_same_ngrams(tmp_path, monkeypatch):
    text = " ".join(f"Word{i % 37}, w{i}" for i in range(400)) + "\nend"
    path = tmp_path / "long.txt"
    path.write_text(text)
    expected = np.unique(ngram_hashes(normalized_words(text), 13))
    monkeypatch.setattr(decontaminate, "_TXT_PIECE", 7)  # pieces cut inside words
    load_eval_ngrams.cache_clear()
    got = load_eval_ngrams(((str(path), "long.txt"),), "", ("text",), 13)
    load_eval_ngrams.cache_clear()
    assert np.array_equal(got.hashes, expected)


def test_an_ngram_in_two_files_is_attributed_to_the_first_by_path(tmp_path):
    for name in ("b.txt", "a.txt"):
        (tmp_path / name).write_text(QUESTION)
    (tmp_path / "c.txt").write_text(HELDOUT)
    load_eval_ngrams.cache_clear()
    got = load_eval_ngrams(tuple((str(tmp_path / n), n) for n in ("a.txt", "b.txt", "c.txt")),
                           "", ("text",), 13)
    load_eval_ngrams.cache_clear()
    owners = [got.sources[i] for i in got.file_index]
    # the 14-word question gives 2 n-grams (in a.txt and b.txt), the 24-word passage 12
    assert len(got.hashes) == 14
    assert owners.count("a.txt") == 2 and owners.count("c.txt") == 12 and "b.txt" not in owners


def test_an_empty_evaluation_set_is_an_error(tmp_path):
    (tmp_path / "short.jsonl").write_text(json.dumps({"text": "twelve words are not quite "
                                                      "enough to make one whole ngram"}) + "\n")
    with pytest.raises(ValueError, match=r"stage 'decontam': no 13-word n-gram .*short\.jsonl"):
        run(config(tmp_path, {"paths": [str(tmp_path / "short.jsonl")]}))


def test_bad_evaluation_files_are_clear_errors(tmp_path):
    (tmp_path / "evals.jsonl").write_text(json.dumps({"prompt": QUESTION}) + "\n")
    with pytest.raises(ValueError, match=r"evals\.jsonl, line 1: the record has none of the "
                                         r"fields \['text'\]"):
        run(config(tmp_path / "a", {"paths": [str(tmp_path / "evals.jsonl")]}))
    with pytest.raises(FileNotFoundError, match="params.paths: no file matches"):
        run(config(tmp_path / "b", {"paths": [str(tmp_path / "missing*.jsonl")]}))
    with pytest.raises(ConfigError, match="params.paths"):
        run(config(tmp_path / "c", {"paths": []}))


def test_an_upstream_with_no_documents_completes_empty(tmp_path):
    evals = write_evals(tmp_path)
    cfg = config(tmp_path, eval_params(evals))
    cfg["stages"]["none"] = {"kind": "filter", "inputs": ["ingest"], "params": {"min_words": 10**6}}
    cfg["stages"]["decontam"]["inputs"] = ["none"]
    outcome = {o.name: o for o in run(cfg)}["decontam"]
    assert outcome.status == "ran" and (outcome.counts.n_in, outcome.counts.kept) == (0, 0)
