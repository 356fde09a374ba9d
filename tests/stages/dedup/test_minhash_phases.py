"""Each MinHash phase alone: the files it hands on, and resuming after a killed run."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq

from pipeline import run
from tests.stages.dedup.conftest import config, planted_corpus, write_corpus


def test_signature_files_partition_band_keys_and_hold_shingle_sets(tmp_path):
    texts, _ = planted_corpus(seed=5)
    texts[3] = "?!"  # no words: no band keys, an empty shingle set
    write_corpus(tmp_path / "corpus", texts)
    run(config(tmp_path), executor="local", until="signatures")
    stage = tmp_path / "run" / "signatures"
    metas = sorted((json.loads(p.read_text()) for p in (stage / "meta").glob("*.json")),
                   key=lambda m: m["shard_index"])
    assert [m["shard_index"] for m in metas] == list(range(len(metas)))
    assert sum(m["rows"] for m in metas) == len(texts)
    assert sum(m["docs_without_words"] for m in metas) == 1
    bands, partitions = metas[0]["bands"], metas[0]["partitions"]
    assert (bands, metas[0]["rows_per_band"]) == (16, 8)  # recall-weighted optimum for 0.8
    rows_per_doc: dict[int, int] = {}
    for meta in metas:
        for p in range(partitions):
            table = pq.read_table(stage / "buckets" / f"{meta['name']}-p{p:05d}.parquet")
            keys = table.column("key").to_numpy()
            assert (keys % partitions == p).all()
            for doc in table.column("doc").to_numpy().tolist():
                assert doc >> 32 == meta["shard_index"]
                rows_per_doc[doc] = rows_per_doc.get(doc, 0) + 1
        offsets = np.load(stage / meta["shingle_offsets"])
        values = np.load(stage / meta["shingles"])
        assert len(offsets) == meta["rows"] + 1 and offsets[-1] == len(values)
        for row in range(meta["rows"]):  # sorted, distinct within each document
            one = values[offsets[row]: offsets[row + 1]]
            assert (np.diff(one.astype(np.int64)) > 0).all()
    # Every document with words has exactly one key per band.
    assert len(rows_per_doc) == len(texts) - 1
    assert set(rows_per_doc.values()) == {bands}


def test_a_killed_run_redoes_only_missing_tasks_with_identical_output(tmp_path):
    texts, _ = planted_corpus(seed=6)
    write_corpus(tmp_path / "corpus", texts)
    cfg = config(tmp_path)
    run(cfg, executor="local")
    run_dir = tmp_path / "run"
    before = {p.relative_to(run_dir).as_posix(): p.read_bytes()
              for p in run_dir.rglob("*.parquet")}
    # Simulate a kill in the buckets phase: one partition never recorded, its file orphaned.
    manifest_path = run_dir / "buckets" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["complete"] = False
    del manifest["tasks"]["p00001"]
    manifest_path.write_text(json.dumps(manifest))
    outcomes = {o.name: o.status for o in run(cfg, executor="local")}
    assert outcomes["signatures"] == "skipped"
    assert outcomes["buckets"] == "resumed"
    after = {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in run_dir.rglob("*.parquet")}
    assert after == before
    tasks = json.loads(manifest_path.read_text())["tasks"]
    assert sorted(tasks) == ["p00000", "p00001", "p00002", "shards"]
