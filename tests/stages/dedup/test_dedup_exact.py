"""`exact_dedup`: normalized-text (and URL) duplicates, first copy kept, twin id recorded.

The composite's three phases (fingerprints -> duplicates -> filter) give the same bytes for
any partition count, and the same decisions as a plain-Python reference.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import run
from pipeline.runner import StageFailed
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


def write_corpus(directory: Path, records: list[tuple[str, str, str, str]] = RECORDS) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in sorted({r[0] for r in records}):
        with open(directory / f"{name}.jsonl", "w") as f:
            for _, doc_id, url, text in (r for r in records if r[0] == name):
                f.write(json.dumps({"id": doc_id, "url": url, "text": text}) + "\n")


def config(tmp_path: Path, run_dir: str = "run", shard_size: int = 1000, **params) -> dict:
    return {
        "name": "exact",
        "run_dir": str(tmp_path / run_dir),
        "stages": {
            "ingest": {"kind": "ingest", "params": {
                "paths": [str(tmp_path / "corpus" / "*.jsonl")], "id_field": "id",
                "url_field": "url", "shard_size": shard_size}},
            "exact": {"kind": "exact_dedup", "inputs": ["ingest"], "params": params},
        },
    }


def rows(stage_dir: Path, sub: str) -> dict[str, dict]:
    found = {}
    for path in sorted((stage_dir / sub).glob("*.parquet")):
        found.update({r["id"]: r for r in pq.read_table(path).to_pylist()})
    return found


def random_records(seed: int, n: int = 400) -> list[tuple[str, str, str, str]]:
    """ASCII texts, about a third of them copies (some re-cased and re-punctuated)."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(60)]
    texts: list[str] = []
    for _ in range(n):
        roll = rng.random()
        if texts and roll < 0.3:
            text = rng.choice(texts)
            text = text.upper().replace(" ", ",  ") if rng.random() < 0.5 else text
        elif roll < 0.33:
            text = rng.choice(["", "...", "?!"])
        else:
            text = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 6)))
        texts.append(text)
    return [(f"f{i % 3}", f"d{i:04d}", f"http://x/{i % 7}", t) for i, t in enumerate(texts)]


def reference(records: list[tuple[str, str, str, str]], include_url: bool) -> dict[str, tuple]:
    """id -> (exact_dup_of, exact_dup_count) in plain Python: first copy in corpus order kept."""
    order = sorted(records, key=lambda r: (r[0], records.index(r)))  # files, then lines
    key = {r[1]: (" ".join(re.findall(r"[a-z0-9]+", r[3].lower())), r[2] if include_url else "")
           for r in records}
    first: dict[tuple, str] = {}
    copies: dict[tuple, int] = {}
    for r in order:
        first.setdefault(key[r[1]], r[1])
        copies[key[r[1]]] = copies.get(key[r[1]], 0) + 1
    return {r[1]: (None if first[key[r[1]]] == r[1] else first[key[r[1]]], copies[key[r[1]]])
            for r in records}


def test_first_copy_kept_later_copies_rejected_with_twin_id(tmp_path):
    write_corpus(tmp_path / "corpus")
    outcomes = run(config(tmp_path), executor="local")
    assert [o.name for o in outcomes] == ["ingest", "exact.fingerprints", "exact.duplicates", "exact"]
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


@pytest.mark.parametrize("include_url", [False, True])
def test_any_partition_count_gives_the_same_bytes_and_the_reference_decisions(tmp_path, include_url):
    records = random_records(seed=int(include_url))
    write_corpus(tmp_path / "corpus", records)
    expected = reference(records, include_url)
    outputs = {}
    for partitions in (1, 2, 4):
        run_dir = f"run{partitions}"
        run(config(tmp_path, run_dir, shard_size=50, include_url=include_url, partitions=partitions),
            executor="local")
        stage = tmp_path / run_dir / "exact"
        outputs[partitions] = shard_bytes(stage)
        found = {k: (r["exact_dup_of"], r["exact_dup_count"])
                 for sub in ("shards", "rejected") for k, r in rows(stage, sub).items()}
        assert found == expected
        # Each duplicates task held one hash partition of the fingerprints, never all.
        manifest = json.loads((tmp_path / run_dir / "exact.duplicates" / "manifest.json").read_text())
        held = [t["counts"]["in"] for n, t in manifest["tasks"].items() if n != "shards"]
        assert len(held) == partitions and sum(held) == len(records)
        assert max(held) < len(records) or partitions == 1
    assert sum(v[0] is not None for v in expected.values()) > 40  # many copies to get right
    assert outputs[1] == outputs[2] == outputs[4]
    inputs = list((tmp_path / "run1" / "ingest" / "shards").glob("*.parquet"))
    assert len(outputs[1]) == 2 * len(inputs) > 2  # a kept and a rejected shard per input shard


def test_fingerprints_are_split_by_hash_and_duplicates_by_source_shard(tmp_path):
    records = random_records(seed=5, n=200)
    write_corpus(tmp_path / "corpus", records)
    run(config(tmp_path, shard_size=50, partitions=3), executor="local")
    fingerprints = tmp_path / "run" / "exact.fingerprints"
    names = sorted(p.stem for p in (tmp_path / "run" / "ingest" / "shards").glob("*.parquet"))
    seen = []
    for index, name in enumerate(names):
        for p in range(3):
            table = pq.read_table(fingerprints / "fingerprints" / f"{name}-p{p:05d}.parquet")
            assert (table.column("hi").to_numpy() % 3 == p).all()
            assert all(d >> 32 == index for d in table.column("doc").to_pylist())
            seen += table.column("id").to_pylist()
    assert sorted(seen) == sorted(r[1] for r in records)
    duplicates = tmp_path / "run" / "exact.duplicates" / "duplicates"
    rejected = rows(tmp_path / "run" / "exact", "rejected")
    listed = 0
    for path in duplicates.glob("*/p*.parquet"):
        assert path.parent.name in names
        table = pq.read_table(path)
        row = table.column("row").to_pylist()
        assert row == sorted(row)
        listed += table.num_rows - sum(table.column("kept").to_pylist())
    assert listed == len(rejected) > 0


def test_a_killed_run_redoes_only_the_missing_partition_with_identical_output(tmp_path):
    write_corpus(tmp_path / "corpus", random_records(seed=6, n=150))
    cfg = config(tmp_path, shard_size=40, partitions=3)
    run(cfg, executor="local")
    run_dir = tmp_path / "run"
    before = {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in run_dir.rglob("*.parquet")}
    # Simulate a kill in the duplicates phase: one partition never recorded, its files orphaned.
    manifest_path = run_dir / "exact.duplicates" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["complete"] = False
    del manifest["tasks"]["p00001"]
    manifest_path.write_text(json.dumps(manifest))
    outcomes = {o.name: o.status for o in run(cfg, executor="local")}
    assert outcomes == {"ingest": "skipped", "exact.fingerprints": "skipped",
                        "exact.duplicates": "resumed", "exact": "skipped"}
    after = {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in run_dir.rglob("*.parquet")}
    assert after == before
    assert sorted(json.loads(manifest_path.read_text())["tasks"]) == [
        "p00000", "p00001", "p00002", "shards"]


def test_filter_refuses_doc_inputs_other_than_the_fingerprinted_ones(tmp_path):
    write_corpus(tmp_path / "corpus")
    cfg = config(tmp_path)
    cfg["stages"] = {
        "ingest": cfg["stages"]["ingest"],
        "other": {"kind": "filter", "inputs": ["ingest"], "params": {"min_words": 1}},
        "fp": {"kind": "exact_fingerprints", "inputs": ["ingest"]},
        "dups": {"kind": "exact_duplicates", "inputs": ["fp"]},
        "exact": {"kind": "exact_filter", "inputs": ["other", "dups"]},
    }
    with pytest.raises((StageFailed, ValueError), match="fingerprints were computed on"):
        run(cfg, executor="local")


def test_local_and_dask_byte_identical(tmp_path):
    write_corpus(tmp_path / "corpus", random_records(seed=7, n=150))
    cfg = config(tmp_path, shard_size=40, partitions=2)
    run(cfg, executor="local")
    local = shard_bytes(tmp_path / "run" / "exact")
    run(cfg, executor="dask", workers=2, force=["exact.fingerprints"])
    assert shard_bytes(tmp_path / "run" / "exact") == local
