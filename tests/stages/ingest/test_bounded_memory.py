"""Hostile records cost bounded memory: caps enforced while streaming, oversize counted.

The end-to-end test runs ingest_warc + extract in a child process on a 2 MB WARC that
holds a 1 GiB gzip bomb, a 100 MiB chunked body and a gzip member that inflates to 1 GiB,
and reads the child's peak RSS as the child measures it at exit: the high-water mark of its
own memory (`VmHWM`, which starts at exec) and the peak of every child it waited for, so the
extraction sandbox counts too. (`ru_maxrss` of the child as the parent sees it would also
count the parent's pages at the fork, which is this test process's size, not the child's.)
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import subprocess
import sys
import zlib
from io import BytesIO
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline.documents import Rejected
from stages.ingest.warc import BLOCK, Oversize, _chunks, decode_payload, read_records, to_document
from tests.stages.ingest.conftest import (HTML_UNIT, gzip_member, html_response, http_head,
                                          warc_bytes, warc_head, write_hostile_warc)

REPO = Path(__file__).resolve().parents[3]
PEAK_RSS_LIMIT = 1 << 30


PEAK_REPORT = """
import atexit, resource, sys
def _report():
    own = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"PEAK_KB {max(own, children)}", file=sys.stderr)
atexit.register(_report)
"""


def peak_rss_of(code: str, *args: str) -> int:
    """Run `python -c code args` and return its peak RSS in bytes (it must succeed)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", PEAK_REPORT + code, *args], cwd=REPO, env=env,
                          stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 0, f"child exited with {proc.returncode}: {proc.stderr[-2000:]}"
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("PEAK_KB ")]
    return int(line.split()[1]) * 1024


def rows(stage_dir: Path, sub: str) -> list[dict]:
    return [r for f in sorted((stage_dir / sub).glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()]


def test_gzip_bomb_and_huge_chunked_body_in_bounded_memory(tmp_path):
    warc = tmp_path / "hostile.warc.gz"
    urls = write_hostile_warc(warc)
    assert warc.stat().st_size < 4 << 20  # what inflates past 2 GiB fits in a few MB
    config = {
        "name": "hostile", "run_dir": str(tmp_path / "run"),
        "stages": {
            "html": {"kind": "ingest_warc", "params": {"paths": [str(warc)]}},
            "extract": {"kind": "extract", "inputs": ["html"]},
        },
    }
    peak = peak_rss_of("import json, sys; from pipeline import run; run(json.loads(sys.argv[1]))",
                       json.dumps(config))
    html, extract = tmp_path / "run" / "html", tmp_path / "run" / "extract"
    stats = json.loads((html / "stats.json").read_text())
    assert stats["in"] == len(urls) == 6
    assert stats["dropped"] == {"oversize:decoded_body": 1, "oversize:record": 2}
    assert stats["errors"] == {}
    rejected = {r["url"].rsplit("/", 1)[1]: r for r in rows(html, "rejected")}
    assert {k: r["reason"] for k, r in rejected.items()} == {
        "bomb": "oversize:decoded_body", "chunked": "oversize:record",
        "warc-bomb": "oversize:record"}
    for row in rejected.values():  # a decoded prefix, never the body
        assert 1000 < len(row["text"]) <= 20_000
        assert row["text"].startswith("<html><body><div>bomb</div>") or \
            row["text"].startswith("<div>bomb</div>")
    ex_stats = json.loads((extract / "stats.json").read_text())
    assert ex_stats["in"] == 3 and ex_stats["dropped"] == {"oversize:html": 1}
    [huge] = rows(extract, "rejected")
    assert huge["url"].endswith("/huge") and len(huge["text"]) == 20_000
    kept = rows(extract, "shards")
    assert [r["url"].rsplit("/", 1)[1] for r in kept] == ["first", "last"]
    assert "perfectly ordinary paragraph" in kept[0]["text"]
    for stage in (html, extract):  # nothing big was stored anywhere
        assert sum(p.stat().st_size for p in stage.rglob("*.parquet")) < 1 << 20
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak / 2**20:.0f} MiB"


# ---------------------------------------------------------------------------------------
# The pieces, in process and small


def test_file_inflation_is_bounded_per_chunk():
    member = gzip_member(b"", HTML_UNIT, 64)  # 64 MiB in about 64 KB
    sizes = [len(c) for c in _chunks(BytesIO(member * 2))]
    assert max(sizes) <= BLOCK
    assert sum(sizes) == 2 * 64 * len(HTML_UNIT)


def test_gzip_bomb_stops_at_the_cap():
    bomb = gzip_member(b"<html>", HTML_UNIT, 64)
    with pytest.raises(Oversize) as caught:
        decode_payload(memoryview(bomb), {"content-encoding": "gzip"}, 3 << 20)
    assert len(caught.value.head) == 3 << 20
    assert caught.value.head.startswith(b"<html><div>bomb</div>")
    small = gzip.compress(b"<p>fine</p>")
    assert decode_payload(memoryview(small), {"content-encoding": "gzip"}, 100) == b"<p>fine</p>"


def chunked(*parts: bytes, end: bytes = b"0\r\n\r\n") -> bytes:
    return b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in parts) + end


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate", "br", ""])
def test_chunked_and_compressed_bodies_decode_within_the_cap(encoding):
    page = b"<html><body>" + b"<p>chunked and compressed</p>" * 2000 + b"</body></html>"
    if encoding == "gzip":
        body = gzip.compress(page)
    elif encoding == "deflate":
        body = zlib.compress(page)
    elif encoding == "raw-deflate":
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        body, encoding = c.compress(page) + c.flush(), "deflate"
    elif encoding == "br":
        brotli = pytest.importorskip("brotli")
        body = brotli.compress(page)
    else:
        body = page
    wire = chunked(*(body[i:i + 1000] for i in range(0, len(body), 1000)))
    headers = {"content-encoding": encoding, "transfer-encoding": "chunked"}
    assert decode_payload(memoryview(wire), headers, len(page)) == page
    with pytest.raises(Oversize) as caught:
        decode_payload(memoryview(wire), headers, len(page) - 1)
    assert bytes(caught.value.head) == page[:-1]


def test_brotli_bomb_stops_at_the_cap():
    brotli = pytest.importorskip("brotli")
    bomb = brotli.compress(HTML_UNIT * 16, quality=1)
    with pytest.raises(Oversize) as caught:
        decode_payload(memoryview(bomb), {"content-encoding": "br"}, 2 << 20)
    assert len(caught.value.head) == 2 << 20


def test_chunk_framing_edge_cases():
    te = {"transfer-encoding": "chunked"}
    # a chunk that claims more than is there (a truncated record): what is there
    assert decode_payload(memoryview(b"ffffffff\r\nabc"), te, 100) == b"abc"
    # no chunk framing at all: the bytes as stored
    assert decode_payload(memoryview(b"<html>x</html>"), te, 100) == b"<html>x</html>"
    with pytest.raises(ValueError, match="bad chunk size line"):
        decode_payload(memoryview(b"3\r\nabc\r\nzz\r\nmore"), te, 100)
    # an endless run of chunks stops at the cap
    with pytest.raises(Oversize):
        decode_payload(memoryview(chunked(*[b"x" * 1000] * 1000, end=b"")), te, 50_000)


def one(record_bytes: bytes, **caps) -> Rejected:
    [record] = list(read_records(BytesIO(record_bytes), caps.pop("max_record_bytes", 10**8),
                                 caps.pop("prefix_bytes", 1000)))
    return to_document(record, "t", 0, prefix_bytes=1000, **caps)


def test_oversize_record_keeps_a_decoded_prefix_and_skips_the_rest():
    head = http_head("Content-Type: text/html", "Content-Encoding: gzip")
    body = gzip_member(b"<html>", HTML_UNIT, 8)
    record = warc_head("http://site.test/big", len(head) + len(body), 0) + head + body + \
        b"\r\n\r\n"
    item = one(record, max_record_bytes=len(body) - 1)
    assert isinstance(item, Rejected) and item.reason == "oversize:record"
    assert item.doc.text.startswith("<html><div>bomb</div>") and len(item.doc.text) <= 1000
    item = one(record, max_body_bytes=5 << 20)
    assert item.reason == "oversize:decoded_body" and len(item.doc.text) == 1000


def test_big_image_is_not_html_and_never_decoded():
    head = http_head("Content-Type: image/png", "Content-Encoding: gzip")
    body = b"not gzip at all"  # decoding would fail: it is never tried
    record = warc_head("http://site.test/i.png", len(head) + len(body), 0) + head + body + \
        b"\r\n\r\n"
    assert one(record, max_body_bytes=5).reason == "not_html"


def test_long_garbage_is_skipped_in_one_record_with_a_prefix():
    data, offsets = warc_bytes([html_response(f"http://site.test/p{i}", b"<html>%d</html>" % i)
                                for i in range(2)], gzip_members=False)
    junk = b"junk line that is not a record\n" * 200_000  # 6 MB
    items = [to_document(r, "t", i, prefix_bytes=1000)
             for i, r in enumerate(read_records(BytesIO(data[:offsets[1]] + junk +
                                                        data[offsets[1]:]), 10**8, 1000))]
    assert [getattr(i, "reason", "kept") for i in items] == ["kept", "garbage", "kept"]
    assert len(items[1].doc.text) == 1000 and str(len(junk)) in items[1].error


# ---------------------------------------------------------------------------------------
# `ingest` (jsonl, txt, parquet): one record at a time, never past max_record_bytes


def ingest(tmp_path: Path, name: str, **params) -> tuple[list[dict], list[dict], dict]:
    from pipeline import run

    config = {"name": "i", "run_dir": str(tmp_path / "run"), "stages": {"ingest": {
        "kind": "ingest", "max_error_fraction": 1.0,
        "params": {"paths": [str(tmp_path / name)], "rejected_prefix_bytes": 100, **params}}}}
    run(config, force=["ingest"])
    stage = tmp_path / "run" / "ingest"
    return (rows(stage, "shards"), rows(stage, "rejected"),
            json.loads((stage / "stats.json").read_text()))


def test_jsonl_line_over_the_cap_is_skipped_with_a_prefix(tmp_path):
    big = json.dumps({"text": "x" * 50_000}) + "\n"
    lines = [json.dumps({"text": f"doc {i}"}) + "\n" for i in range(3)]
    with gzip.open(tmp_path / "in.jsonl.gz", "wt") as f:
        f.write(lines[0] + big + lines[1] + big.rstrip("\n") + " \r\n" + lines[2] + big.rstrip())
    kept, rejected, stats = ingest(tmp_path, "in.jsonl.gz", max_record_bytes=1000)
    assert [(r["id"], r["text"]) for r in kept] == [
        ("in.jsonl.gz#0", "doc 0"), ("in.jsonl.gz#2", "doc 1"), ("in.jsonl.gz#4", "doc 2")]
    assert [r["id"] for r in rejected] == ["in.jsonl.gz#1", "in.jsonl.gz#3", "in.jsonl.gz#5"]
    assert all(r["reason"] == "oversize:record" and r["text"] == big[:100] for r in rejected)
    assert [json.loads(r["metadata"])["record_bytes"] for r in rejected] == \
        [len(big), len(big) + 2, len(big) - 1]
    assert stats["dropped"] == {"oversize:record": 3} and stats["errors"] == {}


COMPRESS = {"gz": lambda b: gzip.compress(b, mtime=0), "bz2": bz2.compress, "xz": lzma.compress,
            "zst": lambda b: zstandard.ZstdCompressor(write_checksum=True).compress(b)}


def write_line_bomb(path: Path, codec: str, head: bytes, tail: bytes, mib: int) -> None:
    """`head + b"a" * mib MiB + tail`, compressed, built in a few ms and a few hundred KB.

    Every format can hold several streams one after another (gzip members, bz2 and xz
    streams, zstd frames) and reads them as one: the 1 MiB unit is compressed once and
    repeated. gzip is one member (conftest.gzip_member), as most real files are.
    """
    unit = b"a" * (1 << 20)
    with open(path, "wb") as f:
        if codec == "gz":
            f.write(gzip_member(head, unit, mib, tail))
            return
        compress = COMPRESS[codec]
        f.write(compress(head))
        blob = compress(unit)
        for _ in range(mib):
            f.write(blob)
        f.write(compress(tail))


# 1 GiB for gzip; 256 MiB where inflating is slower (bz2, xz) or the case is covered: enough,
# since the peak must stay under the line's size, which holding the line would pass.
@pytest.mark.parametrize("codec,fmt,mib", [("gz", "jsonl", 1024), ("bz2", "jsonl", 256),
                                           ("xz", "jsonl", 256), ("zst", "jsonl", 1024),
                                           ("zst", "txt", 256)])
def test_single_line_bomb_in_any_compression_in_bounded_memory(tmp_path, codec, fmt, mib):
    """A line of GBs in a file of a few hundred KB: dropped as oversize at the default cap
    (20 MB), a prefix kept, the lines around it read, the whole run in less memory than the
    line (about 140 MB measured)."""
    name = f"bomb.{fmt}.{codec}"
    if fmt == "jsonl":
        head, tail = b'{"text": "before"}\n{"text": "', b'"}\n{"text": "after"}\n'
    else:  # txt_split: line
        head, tail = b"before\n", b"\nafter\n"
    write_line_bomb(tmp_path / name, codec, head, tail, mib)
    assert (tmp_path / name).stat().st_size < 2 << 20
    config = {"name": "bomb", "run_dir": str(tmp_path / "run"), "stages": {"ingest": {
        "kind": "ingest", "params": {"paths": [str(tmp_path / name)], "txt_split": "line"}}}}
    peak = peak_rss_of("import json, sys; from pipeline import run; run(json.loads(sys.argv[1]))",
                       json.dumps(config))
    stage = tmp_path / "run" / "ingest"
    stats = json.loads((stage / "stats.json").read_text())
    assert (stats["in"], stats["kept"], stats["dropped"], stats["errors"]) == \
        (3, 2, {"oversize:record": 1}, {})
    assert [r["text"] for r in rows(stage, "shards")] == ["before", "after"]
    [big] = rows(stage, "rejected")
    line = (head.split(b"\n")[-1] + b"a" * (mib << 20) + tail.split(b"\n")[0]).decode()
    assert big["reason"] == "oversize:record" and big["id"] == f"{name}#1"
    assert big["text"] == line[:20_000]
    assert json.loads(big["metadata"])["record_bytes"] == len(line) + 1  # with its newline
    print(f"{name}: peak RSS {peak / 2**20:.0f} MiB")
    assert peak < min(PEAK_RSS_LIMIT, mib << 20), f"peak RSS {peak / 2**20:.0f} MiB"


def old_split(text: str, mode: str) -> list[str]:
    """What txt_split did when it read the whole file (the streamed reader must agree)."""
    if mode == "paragraph":
        return [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("mode", ["paragraph", "line"])
def test_txt_streams_paragraphs_and_lines_as_the_whole_file_split_did(tmp_path, mode):
    text = ("first para\r\nstill first\r\n\r\n\n\nsecond\x0cwith form feed\n \n"
            "third after a space line\n\n\n\n  fourth  \nlast line without newline")
    (tmp_path / "t.txt").write_bytes(text.encode())
    kept, rejected, _ = ingest(tmp_path, "t.txt", txt_split=mode)
    assert [r["text"] for r in kept] == old_split(text, mode) and rejected == []
    assert [r["id"] for r in kept] == [f"t.txt#{i}" for i in range(len(kept))]


@pytest.mark.parametrize("mode", ["file", "paragraph", "line"])
def test_txt_record_over_the_cap(tmp_path, mode):
    long = "word " * 400  # 2000 bytes, one line
    (tmp_path / "t.txt").write_text(f"short one\n\n{long}\n{long}\n\nshort two\n")
    kept, rejected, stats = ingest(tmp_path, "t.txt", txt_split=mode, max_record_bytes=3000)
    expected_kept = {"file": [], "paragraph": ["short one", "short two"],
                     "line": ["short one", long, long, "short two"]}[mode]
    assert [r["text"] for r in kept] == expected_kept
    if mode == "line":
        assert rejected == []
    else:
        [big] = rejected
        assert big["reason"] == "oversize:record" and len(big["text"]) == 100
        size = {"file": 4024, "paragraph": 4002}[mode]
        assert json.loads(big["metadata"])["record_bytes"] == size
        assert stats["in"] == len(expected_kept) + 1


def test_parquet_oversize_rows_and_row_groups(tmp_path):
    import pyarrow as pa

    table = pa.table({"text": ["small", "y" * 5000, "small again", "z" * 5000, "tail"]})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=2)
    kept, rejected, stats = ingest(tmp_path, "in.parquet", max_record_bytes=1000)
    assert [r["text"] for r in kept] == ["small", "small again", "tail"]
    assert [(r["id"], r["reason"]) for r in rejected] == [("in.parquet#1", "oversize:record"),
                                                          ("in.parquet#3", "oversize:record")]
    assert rejected[0]["text"] == "y" * 100
    # a row group whose declared size is over the cap is never read
    meta = pq.ParquetFile(tmp_path / "in.parquet").metadata
    smaller = min(meta.row_group(i).total_byte_size for i in range(2))
    assert meta.row_group(2).total_byte_size < smaller
    kept, rejected, stats = ingest(tmp_path, "in.parquet", max_record_bytes=10_000,
                                   max_row_group_bytes=smaller - 1)
    assert [r["text"] for r in kept] == ["tail"]
    assert [(r["id"], r["reason"]) for r in rejected] == [
        ("in.parquet#0-1", "oversize:row_group"), ("in.parquet#2-3", "oversize:row_group")]
    assert stats["errors"] == {"oversize:row_group": 2}
