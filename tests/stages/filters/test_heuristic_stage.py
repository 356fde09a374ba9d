"""heuristic_filter through the engine: accounting, rejected/ reasons, score columns, cache."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from pipeline import run
from pipeline.config import ConfigError
from tests.conftest import shard_bytes

GOOD = """The harbour town woke slowly under a grey November sky.
Fishermen hauled their nets onto the quay while gulls argued over scraps.
A baker on the corner had been up since four, and the smell of bread drifted down the lane.
Children walked to school in pairs, their coats buttoned against the wind.
At the library, the new librarian sorted a box of donated books by hand.
Most of them were old atlases, with borders that no longer exist.
She set aside a worn copy of a sailing manual for the harbour master.
By noon the rain had cleared and the market stalls filled the square.
Farmers sold apples, cheese and late potatoes from the hills above the town.
In the evening the lighthouse keeper climbed the spiral stair to light the lamp.
He wrote the weather in his log, as his father had done before him.
Nothing remarkable happened that day, and that was how the town liked it."""
DOCS = {
    "good": GOOD,
    "short": "Too short to be a page.",
    "repeated": GOOD + "\n" + "\n".join(GOOD.splitlines()[:6]),
    "no_sentences": GOOD.replace(".", ""),
    "curly": GOOD + "\nThe config is { a: 1 } as shown.",
    "badword": GOOD + "\nThis page is full of porn and nothing more.",
}


def write_corpus(tmp_path, n_copies: int = 1):
    path = tmp_path / "docs.jsonl"
    with path.open("w") as f:
        for i in range(n_copies):
            for name, text in DOCS.items():
                f.write(json.dumps({"id": f"{name}-{i}", "text": text}) + "\n")
    return path


def config(tmp_path, path, params=None, shard_size=4):
    return {
        "name": "heuristics",
        "run_dir": str(tmp_path / "run"),
        "stages": {
            "ingest": {"kind": "ingest", "params": {"paths": [str(path)], "id_field": "id",
                                                     "shard_size": shard_size}},
            "clean": {"kind": "heuristic_filter", "inputs": ["ingest"], "params": params or {}},
        },
    }


def rejected_reasons(stage_dir) -> dict[str, str]:
    reasons = {}
    for shard in sorted((stage_dir / "rejected").glob("*.parquet")):
        for row in pq.read_table(shard).to_pylist():
            reasons[row["id"]] = row["reason"]
    return reasons


def test_accounting_reasons_and_columns(tmp_path):
    path = write_corpus(tmp_path)
    outcomes = run(config(tmp_path, path))
    counts = {o.name: o.counts for o in outcomes}["clean"]
    assert counts.n_in == 6
    assert counts.n_in == counts.kept + sum(counts.dropped.values()) + sum(counts.errors.values())
    stage_dir = tmp_path / "run" / "clean"
    reasons = rejected_reasons(stage_dir)
    assert reasons == {
        "short-0": "gopher_repetition:top_2_gram",  # one 2-gram is 40% of a tiny page
        "repeated-0": "gopher_repetition:dup_line_frac",
        "no_sentences-0": "c4:too_few_sentences",
        "curly-0": "c4:curly_bracket",
        "badword-0": "c4:badwords",
    }
    assert dict(counts.dropped) == Counter(reasons.values())
    kept = [row for s in sorted((stage_dir / "shards").glob("*.parquet"))
            for row in pq.read_table(s).to_pylist()]
    assert [row["id"] for row in kept] == ["good-0"]
    # every rule set's scores are columns of a kept document
    for column in ("gopher_quality_words", "gopher_repetition_dup_10_gram_char_frac",
                   "c4_sentences", "fineweb_quality_newline_word_ratio"):
        assert kept[0][column] is not None
    assert kept[0]["gopher_quality_stop_words"] >= 2
    stats = json.loads((stage_dir / "stats.json").read_text())
    assert stats["dropped"]["c4:badwords"] == 1


def test_rule_set_order_and_thresholds_come_from_config(tmp_path):
    path = write_corpus(tmp_path)
    params = {"rule_sets": ["gopher_quality"],
              "gopher_quality": {"min_doc_words": 1, "min_avg_word_length": 2.5}}
    outcomes = run(config(tmp_path, path, params))
    counts = {o.name: o.counts for o in outcomes}["clean"]
    # only Gopher quality runs; the short page (6 words of 2.8 characters on average, "to"
    # and "be" its two stop words) passes the lowered thresholds
    assert counts.kept == 6 and not counts.dropped


def test_unknown_rule_set_is_a_config_error(tmp_path):
    path = write_corpus(tmp_path)
    with pytest.raises((ConfigError, ValueError), match="gopher_qualty"):
        run(config(tmp_path, path, {"rule_sets": ["gopher_qualty"]}))
    with pytest.raises((ConfigError, ValueError), match="min_doc_wrds"):
        run(config(tmp_path, path, {"gopher_quality": {"min_doc_wrds": 3}}))


@pytest.mark.slow
def test_local_and_dask_outputs_are_identical(tmp_path):
    path = write_corpus(tmp_path, n_copies=5)
    run(config(tmp_path / "a", path), executor="local")
    run(config(tmp_path / "b", path), executor="dask", workers=2)
    local = shard_bytes(tmp_path / "a" / "run" / "clean")
    distributed = shard_bytes(tmp_path / "b" / "run" / "clean")
    assert local and local == distributed
