"""`exact_dedup`: normalized-text (and URL) duplicates, first copy kept, twin id recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from pipeline import run
from tests.conftest import shard_bytes

# (file, id, url, text); corpus order is file order, then line order.
RECORDS = [
    ("a", "a0", "http://x/1", "The same text, once."),
    ("a", "a1", "http://x/2", "A unique text about cats."),
    ("a", "a2", "http://x/3", "the SAME text once"),          # copy of a0 after normalization
    ("b", "b0", "http://x/1", "The same   text -- once!"),     # copy of a0, same URL as a0
    ("b", "b1", "http://x/5", "A unique text about dogs."),    # near, not exact: kept
    ("b", "b2", "http://x/6", "a unique text about cats"),     # copy of a1
    ("c", "c0", "http://x/7", ""),
    ("c", "c1", "http://x/8", "..."),                           # no words, like c0
]


def write_corpus(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in sorted({r[0] for r in RECORDS}):
        with open(directory / f"{name}.jsonl", "w") as f:
            for _, doc_id, url, text in (r for r in RECORDS if r[0] == name):
                f.write(json.dumps({"id": doc_id, "url": url, "text": text}) + "\n")


def config(tmp_path: Path, **params) -> dict:
    return {
        "name": "exact",
        "run_dir": str(tmp_path / "run"),
        "stages": {
            "ingest": {"kind": "ingest", "params": {
                "paths": [str(tmp_path / "corpus" / "*.jsonl")], "id_field": "id", "url_field": "url"}},
            "exact": {"kind": "exact_dedup", "inputs": ["ingest"], "params": params},
        },
    }


def rows(stage_dir: Path, sub: str) -> dict[str, dict]:
    found = {}
    for path in sorted((stage_dir / sub).glob("*.parquet")):
        found.update({r["id"]: r for r in pq.read_table(path).to_pylist()})
    return found


def test_first_copy_kept_later_copies_rejected_with_twin_id(tmp_path):
    write_corpus(tmp_path / "corpus")
    run(config(tmp_path), executor="local")
    stage = tmp_path / "run" / "exact"
    kept, rejected = rows(stage, "shards"), rows(stage, "rejected")
    assert sorted(kept) == ["a0", "a1", "b1", "c0"]
    assert {k: (r["exact_dup_of"], r["exact_dup_count"], r["reason"]) for k, r in rejected.items()} == {
        "a2": ("a0", 3, "exact_dedup:duplicate"),
        "b0": ("a0", 3, "exact_dedup:duplicate"),
        "b2": ("a1", 2, "exact_dedup:duplicate"),
        "c1": ("c0", 2, "exact_dedup:duplicate"),
    }
    assert {k: (r["exact_dup_of"], r["exact_dup_count"]) for k, r in kept.items()} == {
        "a0": (None, 3), "a1": (None, 2), "b1": (None, 1), "c0": (None, 2)}
    # Texts are kept verbatim (normalization only decides), shard names follow the input.
    assert kept["a0"]["text"] == "The same text, once."
    assert sorted(p.name for p in (stage / "shards").iterdir()) == sorted(
        p.name for p in (tmp_path / "run" / "ingest" / "shards").iterdir())
    stats = json.loads((stage / "stats.json").read_text())
    assert (stats["in"], stats["kept"], stats["dropped"]) == (8, 4, {"exact_dedup:duplicate": 4})


def test_include_url_keeps_the_same_text_under_another_url(tmp_path):
    write_corpus(tmp_path / "corpus")
    run(config(tmp_path, include_url=True), executor="local")
    rejected = rows(tmp_path / "run" / "exact", "rejected")
    assert {k: r["exact_dup_of"] for k, r in rejected.items()} == {"b0": "a0"}


def test_local_and_dask_byte_identical(tmp_path):
    write_corpus(tmp_path / "corpus")
    run(config(tmp_path), executor="local")
    local = shard_bytes(tmp_path / "run" / "exact")
    run(config(tmp_path), executor="dask", workers=2, force=["exact"])
    assert shard_bytes(tmp_path / "run" / "exact") == local
