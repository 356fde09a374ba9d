"""The four MinHash stages end to end: planted near-duplicates, chains, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import run
from pipeline.runner import StageFailed
from tests.conftest import shard_bytes
from tests.stages.dedup.conftest import config, planted_corpus, read_all, true_jaccard, write_corpus


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("planted")
    texts, groups = planted_corpus()
    write_corpus(tmp_path / "corpus", texts)
    run(config(tmp_path), executor="local")
    return tmp_path, texts, groups


def cluster_of(run_dir: Path) -> dict[int, str]:
    """Corpus index -> dup_cluster, over kept and rejected documents."""
    rows = read_all(run_dir / "dedup", "shards") + read_all(run_dir / "dedup", "rejected")
    return {int(r["id"].removeprefix("doc")): r["dup_cluster"] for r in rows}


def test_planted_near_duplicates_above_found_below_not(planted_run):
    tmp_path, texts, groups = planted_run
    cluster = cluster_of(tmp_path / "run")
    assert len(cluster) == len(texts)
    for i, j in groups["above"]:
        assert true_jaccard(texts[i], texts[j]) >= 0.9
        assert cluster[i] == cluster[j]
    for i, j in groups["below"]:
        assert true_jaccard(texts[i], texts[j]) <= 0.5
        assert cluster[i] != cluster[j]
    # Nothing else is clustered: the unique documents are their own cluster.
    planted = {i for g in groups.values() for pair in g for i in pair}
    for index, name in cluster.items():
        if index not in planted:
            assert name == f"doc{index:04d}"


def test_chain_lands_in_one_cluster_and_exact_copies_go(planted_run):
    tmp_path, texts, groups = planted_run
    a, b, c = groups["chain"][0]
    assert true_jaccard(texts[a], texts[b]) > 0.8 and true_jaccard(texts[b], texts[c]) > 0.8
    assert true_jaccard(texts[a], texts[c]) < 0.8
    cluster = cluster_of(tmp_path / "run")
    assert cluster[a] == cluster[b] == cluster[c] == f"doc{min(a, b, c):04d}"
    rejected = {int(r["id"].removeprefix("doc")): r for r in read_all(tmp_path / "run" / "dedup", "rejected")}
    for i, j in groups["copies"]:
        second = max(i, j)
        assert rejected[second]["reason"] == "minhash:duplicate"
        assert rejected[second]["dup_cluster"] == f"doc{min(i, j):04d}"
        assert rejected[second]["dup_cluster_size"] == 2


def test_kept_member_is_first_in_corpus_order_and_funnel_balances(planted_run):
    tmp_path, texts, groups = planted_run
    run_dir = tmp_path / "run"
    kept = {int(r["id"].removeprefix("doc")): r for r in read_all(run_dir / "dedup", "shards")}
    rejected = read_all(run_dir / "dedup", "rejected")
    for row in rejected:
        index = int(row["id"].removeprefix("doc"))
        twin = int(row["dup_cluster"].removeprefix("doc"))
        assert twin < index and twin in kept
        assert kept[twin]["dup_cluster"] == row["dup_cluster"]
        assert kept[twin]["dup_cluster_size"] == row["dup_cluster_size"]
    expected_removed = len(groups["above"]) + len(groups["copies"]) + 2
    assert len(rejected) == expected_removed
    stats = json.loads((run_dir / "dedup" / "stats.json").read_text())
    assert stats["in"] == len(texts)
    assert stats["kept"] == len(texts) - expected_removed
    assert stats["dropped"] == {"minhash:duplicate": expected_removed}
    # Output shards keep the input shard names.
    assert sorted(p.name for p in (run_dir / "dedup" / "shards").glob("*.parquet")) == sorted(
        p.name for p in (run_dir / "ingest" / "shards").glob("*.parquet"))


def test_verification_drops_false_candidates(tmp_path):
    texts, groups = planted_corpus(seed=1)
    write_corpus(tmp_path / "corpus", texts)
    # One row per band: any shared shingle minimum makes a candidate, true Jaccard 0.3 too.
    loose = {"bands": 40, "rows": 1, "keep_signatures": True}
    below = groups["below"]
    outcomes = {}
    for verify in ("off", "exact", "estimated"):
        run(config(tmp_path, buckets={"verify": verify}, signatures=loose), executor="local")
        cluster = cluster_of(tmp_path / "run")
        outcomes[verify] = sum(cluster[i] == cluster[j] for i, j in below)
        above = groups["above"]
        assert all(cluster[i] == cluster[j] for i, j in above), verify
    assert outcomes["off"] == len(below)
    assert outcomes["exact"] == 0
    assert outcomes["estimated"] == 0
    info = json.loads((tmp_path / "run" / "buckets" / "manifest.json").read_text())["tasks"]
    assert sum(t["info"].get("rejected_by_verification", 0) for t in info.values()) > 0


def test_local_and_dask_byte_identical_and_reruns_deterministic(tmp_path):
    texts, _ = planted_corpus(seed=2)
    write_corpus(tmp_path / "corpus", texts)
    cfg = config(tmp_path)
    stages = ["signatures", "buckets", "clusters", "dedup"]

    def outputs() -> dict[str, bytes]:
        found = {}
        for stage in stages:
            stage_dir = tmp_path / "run" / stage
            for path in sorted(stage_dir.rglob("*")):
                if path.is_file() and path.parent != stage_dir:
                    found[path.relative_to(tmp_path).as_posix()] = path.read_bytes()
        return found

    run(cfg, executor="local")
    local = outputs()
    assert shard_bytes(tmp_path / "run" / "dedup")
    run(cfg, executor="local", force=["signatures"])
    assert outputs() == local
    run(cfg, executor="dask", workers=2, force=["signatures"])
    assert outputs() == local


def test_clusters_do_not_depend_on_the_pair_batch_size(tmp_path, monkeypatch):
    from stages.dedup import minhash_clusters

    texts, _ = planted_corpus(seed=2)
    write_corpus(tmp_path / "corpus", texts)
    # Loose bands and no verification: many pairs, repeated across partitions.
    cfg = config(tmp_path, buckets={"verify": "off"}, signatures={"bands": 40, "rows": 1})
    run(cfg, executor="local")
    clusters = tmp_path / "run" / "clusters" / "clusters" / "clusters.parquet"
    whole = clusters.read_bytes()
    assert pq.read_table(clusters).num_rows > 20
    monkeypatch.setattr(minhash_clusters, "PAIR_BATCH", 3)
    run(cfg, executor="local", force=["clusters"])
    assert clusters.read_bytes() == whole


def test_filter_refuses_a_doc_input_other_than_the_signed_one(tmp_path):
    texts, _ = planted_corpus(seed=3)
    write_corpus(tmp_path / "corpus", texts)
    cfg = config(tmp_path)
    cfg["stages"]["other"] = {"kind": "filter", "inputs": ["ingest"], "params": {"min_words": 1}}
    cfg["stages"]["dedup"]["inputs"] = ["clusters", "other"]
    with pytest.raises((StageFailed, ValueError), match="signatures were computed on"):
        run(cfg, executor="local")


def test_params_are_checked_before_anything_runs(tmp_path):
    from pipeline.config import ConfigError

    cfg = config(tmp_path, signatures={"bands": 20, "rows": 8})
    with pytest.raises(ConfigError, match="exceeds num_perm"):
        run(cfg, executor="local")
    cfg = config(tmp_path, signatures={"bands": 20})
    with pytest.raises(ConfigError, match="both bands and rows"):
        run(cfg, executor="local")


def test_verify_needs_the_files_it_reads(tmp_path):
    texts, _ = planted_corpus(seed=4)
    write_corpus(tmp_path / "corpus", texts)
    cfg = config(tmp_path, signatures={"keep_shingles": False})
    with pytest.raises(ValueError, match="keep_shingles: true"):
        run(cfg, executor="local")
