"""The engine end to end on the local executor: cache, force/until, accounting, errors."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

import pipeline
from pipeline.cli import main
from pipeline.config import ConfigError
from pipeline.runner import StageFailed
from tests.conftest import shard_bytes
from tests.pipeline.conftest import write_corpus, write_malformed


def two_stage(tmp_path, min_words=10, **ingest):
    corpus = tmp_path / "corpus"
    if not corpus.exists():  # rewriting would change the files' mtimes, hence ingest's key
        write_corpus(corpus)
    return {
        "name": "t",
        "run_dir": str(tmp_path / "run"),
        "stages": {
            "ingest": {"kind": "ingest",
                       "params": {"paths": [str(corpus / "*.jsonl")], "id_field": "id",
                                  "shard_size": 30, **ingest}},
            "clean": {"kind": "filter", "inputs": ["ingest"], "params": {"min_words": min_words}},
        },
    }


def statuses(outcomes):
    return {o.name: o.status for o in outcomes}


def test_outputs_and_manifest(tmp_path):
    config = two_stage(tmp_path)
    pipeline.run(config)
    run = tmp_path / "run"
    manifest = json.loads((run / "ingest" / "manifest.json").read_text())
    assert manifest["complete"]
    files = [f for t in manifest["tasks"].values() for f in t["files"]]
    # 4 files x 50 docs, rotated every 30 docs -> two kept shards per file
    assert sorted(f["path"] for f in files if f["path"].startswith("shards/")) == [
        f"shards/{i:05d}-{k:05d}.parquet" for i in range(4) for k in range(2)
    ]
    for f in files:
        path = run / "ingest" / f["path"]
        assert path.stat().st_size == f["bytes"]
        assert pq.read_metadata(path).num_rows == f["docs"]
    table = pq.read_table(run / "clean" / "shards")
    assert table.column_names[:5] == ["id", "text", "url", "source", "metadata"]
    assert all(len(t.split()) >= 10 for t in table.column("text").to_pylist())
    rejected = pq.read_table(run / "clean" / "rejected")
    assert set(rejected.column("reason").to_pylist()) == {"filter:min_words"}
    assert set(rejected.column("stage").to_pylist()) == {"clean"}
    assert table.num_rows + rejected.num_rows == 200
    stats = json.loads((run / "clean" / "stats.json").read_text())
    assert stats["in"] == 200 and stats["kept"] == table.num_rows


def test_rerun_is_a_noop(tmp_path):
    config = two_stage(tmp_path)
    assert statuses(pipeline.run(config)) == {"ingest": "ran", "clean": "ran"}
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert statuses(pipeline.run(config)) == {"ingest": "skipped", "clean": "skipped"}
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*") if p.is_file()}
    before.pop(tmp_path / "run" / "run.json")
    after.pop(tmp_path / "run" / "run.json")
    assert before == after


def test_changing_downstream_params_leaves_upstream_untouched(tmp_path):
    pipeline.run(two_stage(tmp_path, min_words=10))
    ingest_dir = tmp_path / "run" / "ingest"
    upstream = {p: p.stat().st_mtime_ns for p in ingest_dir.rglob("*") if p.is_file()}
    kept_before = pq.read_table(tmp_path / "run" / "clean" / "shards").num_rows
    outcomes = pipeline.run(two_stage(tmp_path, min_words=30))
    assert statuses(outcomes) == {"ingest": "skipped", "clean": "ran"}
    assert {p: p.stat().st_mtime_ns for p in ingest_dir.rglob("*") if p.is_file()} == upstream
    assert pq.read_table(tmp_path / "run" / "clean" / "shards").num_rows < kept_before


def test_touching_an_input_file_reruns_ingest(tmp_path):
    pipeline.run(two_stage(tmp_path))
    (tmp_path / "corpus" / "part-000.jsonl").write_text('{"text": "changed"}\n')
    assert statuses(pipeline.run(two_stage(tmp_path))) == {"ingest": "ran", "clean": "ran"}


def test_changing_upstream_params_reruns_descendants(tmp_path):
    pipeline.run(two_stage(tmp_path))
    outcomes = pipeline.run(two_stage(tmp_path, shard_size=1000))
    assert statuses(outcomes) == {"ingest": "ran", "clean": "ran"}
    assert len(list((tmp_path / "run" / "ingest" / "shards").glob("*.parquet"))) == 4


def test_force_and_until(tmp_path):
    config = two_stage(tmp_path)
    assert statuses(pipeline.run(config, until="ingest")) == {"ingest": "ran"}
    assert not (tmp_path / "run" / "clean").exists()
    assert statuses(pipeline.run(config)) == {"ingest": "skipped", "clean": "ran"}
    first = shard_bytes(tmp_path / "run" / "clean")
    assert statuses(pipeline.run(config, force=["ingest"])) == {"ingest": "ran", "clean": "ran"}
    assert shard_bytes(tmp_path / "run" / "clean") == first
    with pytest.raises(ConfigError, match="no stage named 'nope'"):
        pipeline.run(config, force=["nope"])


def test_accounting_over_malformed_input(tmp_path):
    expected = write_malformed(tmp_path / "bad")
    config = {
        "name": "bad",
        "run_dir": str(tmp_path / "run"),
        "stages": {"ingest": {"kind": "ingest", "max_error_fraction": 1.0, "params": {
            "paths": [str(tmp_path / "bad" / "*")], "txt_split": "paragraph"}}},
    }
    [outcome] = pipeline.run(config)
    counts = outcome.counts
    assert dict(counts.errors) == expected
    manifest = json.loads((tmp_path / "run" / "ingest" / "manifest.json").read_text())
    for name, task in manifest["tasks"].items():
        c = task["counts"]
        assert c["in"] == c["kept"] + sum(c["dropped"].values()) + sum(c["errors"].values()), name
    rejected = pq.read_table(tmp_path / "run" / "ingest" / "rejected").to_pylist()
    assert len(rejected) == sum(expected.values())
    reasons = {r["reason"] for r in rejected}
    assert reasons == set(expected)
    assert all(r["outcome"] == "error" and r["error"] for r in rejected)
    cut = next(r for r in rejected if r["reason"] == "invalid_json")
    assert cut["text"] == '{"text": "cut off'
    kept = pq.read_table(tmp_path / "run" / "ingest" / "shards").column("text").to_pylist()
    # good lines around the bad ones survive, and the truncated gzip's readable head too
    assert kept.count("a perfectly good document") == 2
    assert "second paragraph" in kept
    assert len(kept) > 2 + 2 + 100  # most of the truncated gzip's lines were read


def test_error_budget_fails_the_stage_naming_shard_and_errors(tmp_path):
    write_malformed(tmp_path / "bad")
    config = {
        "name": "bad",
        "run_dir": str(tmp_path / "run"),
        "stages": {"ingest": {"kind": "ingest", "params": {"paths": [str(tmp_path / "bad" / "*.jsonl")]}}},
    }
    with pytest.raises(StageFailed) as info:
        pipeline.run(config)
    message = str(info.value)
    assert "stage 'ingest'" in message and "max_error_fraction 0.05" in message
    assert "shards with errors: 00000, 00001" in message
    assert "mixed.jsonl#1: invalid_json" in message


def test_document_exception_is_counted_and_stage_goes_on(tmp_path, monkeypatch):
    from stages.filters.filter import Filter

    original = Filter.apply

    def flaky(self, doc):
        if doc.id.endswith("-7"):
            raise KeyError("boom")
        return original(self, doc)

    monkeypatch.setattr(Filter, "apply", flaky)
    [_, clean] = pipeline.run(two_stage(tmp_path))
    assert clean.counts.errors == {"error:KeyError": 4}
    rejected = pq.read_table(tmp_path / "run" / "clean" / "rejected").to_pylist()
    failed = [r for r in rejected if r["outcome"] == "error"]
    assert sorted(r["id"] for r in failed) == [f"f{i}-7" for i in range(4)]
    assert "KeyError: 'boom'" in failed[0]["error"]


def test_status_table_and_json(tmp_path, capsys):
    pipeline.run(two_stage(tmp_path))
    assert main(["status", str(tmp_path / "run"), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["schema_version"] == 3
    clean = status["stages"][1]
    assert [s["stage"] for s in status["stages"]] == ["ingest", "clean"]
    assert clean["in"] == 200 and clean["kept"] + clean["dropped"]["filter:min_words"] == 200
    assert main(["status", str(tmp_path / "run")]) == 0
    table = capsys.readouterr().out
    assert "clean" in table and "filter:min_words" in table
