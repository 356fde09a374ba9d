"""ingest: formats, fields, ids, and fsspec URLs."""

from __future__ import annotations

import gzip
import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

import pipeline


def ingest(tmp_path, paths, **params):
    config = {"name": "i", "run_dir": str(tmp_path / "run"),
              "stages": {"ingest": {"kind": "ingest", "params": {"paths": paths, **params}}}}
    pipeline.run(config)
    return pq.read_table(tmp_path / "run" / "ingest" / "shards").to_pylist()


def test_formats_fields_and_stable_ids(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    records = [{"text": f"doc {i}", "link": f"https://x.org/{i}", "lang": "en"} for i in range(3)]
    (data / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
        "".join(json.dumps(r) + "\n" for r in records).encode()))
    (data / "sub" / "b.jsonl.gz").write_bytes(gzip.compress(json.dumps(records[0]).encode()))
    pq.write_table(pa.Table.from_pylist([{"text": "from parquet", "n": 7}]), data / "c.parquet")
    (data / "d.txt").write_text("line one\nline two\n")
    rows = ingest(tmp_path, [str(data / "**" / "*.*")], url_field="link")
    by_id = {r["id"]: r for r in rows}
    assert sorted(by_id) == ["a.jsonl.zst#0", "a.jsonl.zst#1", "a.jsonl.zst#2", "c.parquet#0",
                             "d.txt#0", "sub/b.jsonl.gz#0"]
    assert by_id["a.jsonl.zst#1"]["url"] == "https://x.org/1"
    assert json.loads(by_id["a.jsonl.zst#1"]["metadata"]) == {"lang": "en"}
    assert json.loads(by_id["c.parquet#0"]["metadata"]) == {"n": 7}
    assert by_id["d.txt#0"]["text"] == "line one\nline two\n"
    assert by_id["sub/b.jsonl.gz#0"]["source"] == "sub/b.jsonl.gz"


def test_fsspec_urls(tmp_path):
    fs = fsspec.filesystem("memory")
    with fs.open("/bucket/corpus/x.jsonl", "w") as f:
        f.write(json.dumps({"text": "held in memory", "id": "m1"}) + "\n")
    rows = ingest(tmp_path, ["memory://bucket/corpus/*.jsonl"], id_field="id")
    assert [(r["id"], r["text"], r["source"]) for r in rows] == [
        ("m1", "held in memory", "memory:///bucket/corpus/x.jsonl")]


def test_glob_matching_nothing_is_a_clear_error(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match=r"params.paths: no file matches .*nothing"):
        ingest(tmp_path, [str(tmp_path / "nothing*.jsonl")])
