"""ingest: formats, fields, ids, and fsspec URLs."""

from __future__ import annotations

import gzip
import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
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
    with pytest.raises(FileNotFoundError, match=r"params.paths: no file matches .*nothing"):
        ingest(tmp_path, [str(tmp_path / "nothing*.jsonl")])


# ---------------------------------------------------------------------------------------
# Damaged, odd and special inputs: counted with a reason, never a crash


def ingest_counted(tmp_path, paths, **params):
    """Run ingest with every error allowed: (kept rows, rejected rows, manifest tasks)."""
    config = {"name": "i", "run_dir": str(tmp_path / "run"), "stages": {"ingest": {
        "kind": "ingest", "max_error_fraction": 1.0, "params": {"paths": paths, **params}}}}
    pipeline.run(config, force=["ingest"])
    stage = tmp_path / "run" / "ingest"
    tasks = json.loads((stage / "manifest.json").read_text())["tasks"]
    return (pq.read_table(stage / "shards").to_pylist(),
            pq.read_table(stage / "rejected").to_pylist(), tasks)


COMPRESS = {
    "gz": lambda b: gzip.compress(b, mtime=0),
    "bz2": lambda b: __import__("bz2").compress(b),
    "xz": lambda b: __import__("lzma").compress(b),
    "zst": lambda b: zstandard.ZstdCompressor(write_checksum=True).compress(b),
}


def three_streams(codec: str) -> tuple[bytes, bytes, list[str]]:
    """Two complete streams of 20 lines and a third: (first two, third, texts of the first 40)."""
    texts = [f"document number {i} " + "filler " * (i % 7) for i in range(60)]
    streams = [COMPRESS[codec]("".join(json.dumps({"text": t}) + "\n"
                                       for t in texts[i:i + 20]).encode()) for i in (0, 20, 40)]
    return streams[0] + streams[1], streams[2], texts[:40]


@pytest.mark.parametrize("codec", ["gz", "bz2", "xz", "zst"])
def test_truncated_and_corrupt_files_in_every_compression(tmp_path, codec):
    head, last, texts = three_streams(codec)
    data = tmp_path / "data"
    data.mkdir()
    (data / f"cut.jsonl.{codec}").write_bytes(head + last[:len(last) // 2])
    flipped = bytearray(last)
    for i in range(len(last) // 3, len(last) // 3 + 8):
        flipped[i] ^= 0xFF
    (data / f"flip.jsonl.{codec}").write_bytes(head + bytes(flipped))
    (data / f"notcompressed.jsonl.{codec}").write_bytes(b'{"text": "plain, not compressed"}\n')
    (data / f"empty.jsonl.{codec}").write_bytes(b"")
    kept, rejected, tasks = ingest_counted(tmp_path, [str(data / "*")])
    files = ["cut", "empty", "flip", "notcompressed"]
    errors = {f: tasks[f"{i:05d}"]["counts"]["errors"] for i, f in enumerate(files)}
    assert errors == {"cut": {f"truncated:{codec}": 1}, "empty": {"empty_file": 1},
                      "flip": {f"corrupt:{codec}": 1}, "notcompressed": {f"corrupt:{codec}": 1}}
    for name in ("cut", "flip"):  # what came before the damage is kept, in order
        source = f"{name}.jsonl.{codec}"
        got = [r["text"] for r in kept if r["source"] == source]
        assert got[:40] == texts, name
        [bad] = [r for r in rejected if r["source"] == source]
        assert bad["id"] == f"{source}#file@{len(got)}" and bad["outcome"] == "error"
    cut = tasks["00000"]
    assert cut["first_errors"] == [
        f"cut.jsonl.{codec}#file@{cut['counts']['kept']}: truncated:{codec}: the file ends inside "
        f"a {codec} stream (after {cut['counts']['kept']} records)"]
    assert f"flip.jsonl.{codec}" in tasks["00002"]["first_errors"][0]


def test_lone_surrogate_record_is_an_error_and_paired_escapes_are_text(tmp_path):
    lines = ['{"text": "broken \\ud83d"}', '{"text": "emoji \\ud83d\\ude00 fine"}',
             '{"text": "ok", "meta": {"k": "\\udc00"}}', '{"text": "ok", "id": "\\ud800"}',
             "[" * 100_000]
    (tmp_path / "s.jsonl").write_text("\n".join(lines) + "\n")
    kept, rejected, tasks = ingest_counted(tmp_path, [str(tmp_path / "s.jsonl")], id_field="id")
    assert kept == []  # with id_field set, the one good line has no id
    reasons = {r["id"]: r["reason"] for r in rejected}
    assert reasons == {"s.jsonl#0": "lone_surrogate", "s.jsonl#1": "missing_id_field",
                       "s.jsonl#2": "lone_surrogate", "s.jsonl#3": "lone_surrogate",
                       "s.jsonl#4": "invalid_json"}
    assert rejected[0]["text"] == lines[0]  # the line as read: JSON escapes, valid UTF-8
    assert tasks["00000"]["first_errors"][0] == \
        "s.jsonl#0: lone_surrogate: a string holds U+D83D without its pair"
    kept, _, _ = ingest_counted(tmp_path, [str(tmp_path / "s.jsonl")])
    assert [r["text"] for r in kept] == ["emoji \U0001F600 fine"]


def test_file_name_that_is_not_utf8_is_read_under_an_escaped_name(tmp_path):
    import os

    root = os.fsencode(tmp_path / "data")
    os.mkdir(root)
    with open(root + b"/caf\xe9.jsonl", "wb") as f:
        f.write(b'{"text": "from a latin-1 name"}\n')
    with open(root + b"/na\xefve.jsonl.gz", "wb") as f:
        f.write(b"not gzip")
    kept, rejected, tasks = ingest_counted(tmp_path, [str(tmp_path / "data" / "*")])
    assert [(r["id"], r["text"]) for r in kept] == [("caf\\xe9.jsonl#0", "from a latin-1 name")]
    assert [(r["source"], r["reason"]) for r in rejected] == [("na\\xefve.jsonl.gz", "corrupt:gz")]
    assert tasks["00001"]["first_errors"][0].startswith("na\\xefve.jsonl.gz#file@0: corrupt:gz:")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["ingest", "ingest_warc"])
def test_fifo_matched_by_a_glob_is_skipped_not_opened(tmp_path, kind):
    import os

    data = tmp_path / "data"
    data.mkdir()
    if kind == "ingest":
        (data / "a.jsonl").write_text('{"text": "a regular file"}\n')
        os.mkfifo(data / "b.jsonl")  # opening it would wait for a writer forever
    else:
        from tests.stages.ingest.conftest import pages, warc_bytes

        (data / "a.warc.gz").write_bytes(warc_bytes(pages(1))[0])
        os.mkfifo(data / "b.warc.gz")
    config = {"name": "i", "run_dir": str(tmp_path / "run"), "stages": {"s": {
        "kind": kind, "max_error_fraction": 1.0, "params": {"paths": [str(data / "*")]}}}}
    pipeline.run(config)
    stage = tmp_path / "run" / "s"
    stats = json.loads((stage / "stats.json").read_text())
    assert (stats["in"], stats["kept"], stats["errors"]) == (2, 1, {"not_a_regular_file": 1})
    [skipped] = pq.read_table(stage / "rejected").to_pylist()
    assert skipped["id"] == f"{'b.jsonl' if kind == 'ingest' else 'b.warc.gz'}#file"
    assert skipped["error"].endswith("is a FIFO: not read")
