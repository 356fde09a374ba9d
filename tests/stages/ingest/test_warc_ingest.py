"""ingest_warc on real WARC/ARC files, on damaged ones, on WET, and on legacy charsets."""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import run
from pipeline.documents import Rejected
from stages.ingest.warc import decode_html, read_records, to_document
from tests.stages.ingest.conftest import html_response, pages, warc_bytes

DATA = Path(__file__).resolve().parents[2] / "data"
WARC = DATA / "warc"
LEGACY = DATA / "multilingual"


def outcomes(path_or_bytes, source="t"):
    """(kept docs, Counter of reject reasons, rejected items) for one file."""
    from collections import Counter

    f = BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else open(path_or_bytes, "rb")
    kept, reasons, rejected = [], Counter(), []
    with f:
        for i, record in enumerate(read_records(f, 10**8)):
            item = to_document(record, source, i)
            if isinstance(item, Rejected):
                reasons[item.reason] += 1
                rejected.append(item)
            else:
                kept.append(item)
    return kept, reasons, rejected


def test_real_warc_one_page_and_every_record_counted():
    kept, reasons, _ = outcomes(WARC / "example.warc.gz")
    assert [d.url for d in kept] == ["http://example.com?example=1"]
    assert "Example Domain" in kept[0].text
    assert kept[0].metadata["format"] == "html"
    assert kept[0].metadata["charset"] == "utf-8"
    assert kept[0].id == "t#1"
    assert reasons == {"warc_type:warcinfo": 1, "warc_type:request": 2, "revisit": 1,
                       "http_302": 1}


def test_real_iana_crawl():
    kept, reasons, _ = outcomes(WARC / "iana.warc.gz")
    # 48 responses: 16 HTML pages with status 200, 4 redirects, 28 scripts/images/css.
    assert len(kept) == 16
    assert all(d.url.startswith(("http://www.iana.org/", "https://www.iana.org/")) for d in kept)
    assert "http://www.iana.org/domains/root/db" in {d.url for d in kept}
    assert all("<html" in d.text.lower() for d in kept)
    assert reasons == {"warc_type:warcinfo": 1, "warc_type:request": 171, "revisit": 123,
                       "not_html": 28, "http_302": 4}
    assert len({d.id for d in kept}) == 16


def test_single_gzip_stream_warc_reads_fully():
    # The data README's "malformed" WARC is one gzip stream over all records, which
    # warcio refuses ("non-chunked gzip file"); it holds the same records as example.warc.gz.
    kept, reasons, _ = outcomes(WARC / "example-bad.warc.gz.bad")
    assert [d.url for d in kept] == ["http://example.com?example=1"]
    assert sum(reasons.values()) == 5


def test_bad_http_status_line_is_an_error_and_reading_goes_on():
    kept, reasons, rejected = outcomes(WARC / "example-extra.warc")
    assert reasons["malformed_http"] == 1
    bad = next(r for r in rejected if r.reason == "malformed_http")
    assert "HTTPX/1.1" in bad.error and bad.error is not None
    assert len(kept) == 1 and reasons["revisit"] == 2


@pytest.mark.parametrize("name", ["example.arc", "example.arc.gz"])
def test_arc_files(name):
    kept, reasons, _ = outcomes(WARC / name)
    assert [d.url for d in kept] == ["http://example.com/"]
    assert "Example Domain" in kept[0].text
    assert reasons == {"arc_header": 1}


def test_bad_arc_lines_are_counted():
    kept, reasons, rejected = outcomes(WARC / "bad.arc")
    assert kept == []
    assert reasons["malformed_record"] >= 2  # length -1 and length "abc"
    assert all(r.error for r in rejected if r.reason == "malformed_record")


def test_garbage_between_plain_records_is_skipped_once():
    data, offsets = warc_bytes(pages(3), gzip_members=False)
    junk = b"this is not a WARC record\r\n" * 10
    damaged = data[:offsets[1]] + junk + data[offsets[1]:]
    kept, reasons, rejected = outcomes(damaged)
    assert [d.url for d in kept] == [f"http://site.test/p{i}" for i in range(3)]
    assert reasons == {"garbage": 1}
    assert rejected[0].doc.text.startswith("this is not a WARC record")


def test_record_without_content_length_is_malformed_and_next_record_read():
    data, offsets = warc_bytes(pages(3), gzip_members=False)
    second = data[offsets[1]:offsets[2]]
    broken = second.replace(b"Content-Length:", b"Content-Lnegth:", 1)
    kept, reasons, _ = outcomes(data[:offsets[1]] + broken + data[offsets[2]:])
    assert [d.url for d in kept] == ["http://site.test/p0", "http://site.test/p2"]
    # The broken record's body is then read as garbage up to the next record.
    assert reasons == {"malformed_record": 1, "garbage": 1}


def test_corrupt_gzip_member_skips_to_the_next_member():
    data, offsets = warc_bytes(pages(4))
    middle = bytearray(data)
    for i in range(offsets[1] + 30, offsets[1] + 60):
        middle[i] ^= 0x5A
    kept, reasons, _ = outcomes(bytes(middle))
    assert [d.url for d in kept] == ["http://site.test/p0", "http://site.test/p2",
                                     "http://site.test/p3"]
    assert reasons == {"corrupt:gz": 1}


def test_garbage_between_gzip_members():
    data, offsets = warc_bytes(pages(3))
    kept, reasons, _ = outcomes(data[:offsets[2]] + b"\x00JUNK" * 100 + data[offsets[2]:])
    assert len(kept) == 3
    assert reasons == {"corrupt:gz": 1}


def test_truncated_last_gzip_member_is_reported():
    data, offsets = warc_bytes(pages(3))
    cut = data[: offsets[2] + (len(data) - offsets[2]) // 2]
    kept, reasons, rejected = outcomes(cut)
    assert [d.url for d in kept] == ["http://site.test/p0", "http://site.test/p1"]
    assert reasons == {"truncated:gz": 1}
    assert "ends inside a gzip member" in rejected[0].error


def test_truncated_plain_record():
    data, offsets = warc_bytes(pages(2), gzip_members=False)
    kept, reasons, _ = outcomes(data[:-40])
    assert len(kept) == 1
    assert reasons == {"truncated_record": 1}


def test_wet_conversion_records_are_text_documents():
    from warcio.warcwriter import WARCWriter

    out = BytesIO()
    writer = WARCWriter(out, gzip=True)
    writer.write_record(writer.create_warcinfo_record("x.warc.wet.gz", {"software": "test"}))
    for i, text in enumerate(["Première page en français.", "Вторая страница."]):
        writer.write_record(writer.create_warc_record(
            f"http://site.test/{i}", "conversion", payload=BytesIO(text.encode()),
            warc_content_type="text/plain"))
    kept, reasons, _ = outcomes(out.getvalue())
    assert [d.text for d in kept] == ["Première page en français.", "Вторая страница."]
    assert all(d.metadata["format"] == "text" for d in kept)
    assert reasons == {"warc_type:warcinfo": 1}


@pytest.mark.parametrize("name,codec", [("tutor.ru.cp1251", "cp1251"),
                                        ("tutor.ja.sjis", "shift_jis"),
                                        ("tutor.cs.cp1250", "cp1250")])
def test_legacy_charsets_from_header_meta_and_detection(name, codec):
    raw = (LEGACY / name).read_bytes()
    expected = raw.decode(codec)
    body = b"<html><head><title>t</title></head><body><pre>" + raw + b"</pre></body></html>"
    meta = f'<html><head><meta charset="{codec}"></head><body><pre>'.encode() + raw + \
        b"</pre></body></html>"
    records = [
        html_response("http://site.test/header", body, f"text/html; charset={codec}"),
        html_response("http://site.test/meta", meta, "text/html"),
        html_response("http://site.test/detect", body, "text/html"),
        html_response("http://site.test/lying", body, "text/html; charset=utf-8"),
    ]
    kept, reasons, _ = outcomes(warc_bytes(records)[0])
    assert not reasons
    sources = [d.metadata["charset_source"] for d in kept]
    assert sources == ["header", "meta", "detected", "detected"]
    for doc in kept:
        assert expected in doc.text


def test_undecodable_payload_is_counted_not_raised():
    import random

    rng = random.Random(1)
    noise = bytes(rng.getrandbits(8) for _ in range(20_000))
    records = [html_response("http://site.test/noise", b"<html>" + noise, "text/html"),
               pages(1)[0]]
    kept, reasons, rejected = outcomes(warc_bytes(records)[0])
    assert len(kept) == 1 and reasons == {"undecodable": 1}
    assert rejected[0].error


def test_decode_html_prefers_header_then_meta():
    body = '<meta charset="windows-1251"><p>привет</p>'.encode("cp1251")
    assert decode_html(body, None)[1:] == ("cp1251", "meta")
    assert decode_html(body, "koi8-r")[1:] == ("koi8-r", "header")  # header wins if it decodes
    assert decode_html("<p>é</p>".encode("cp1252"), "iso-8859-1")[1] == "cp1252"


def test_stage_accounting_and_rejected_shards(tmp_path):
    config = {
        "name": "w", "run_dir": str(tmp_path / "run"),
        "stages": {"warc": {"kind": "ingest_warc", "max_error_fraction": 1.0, "params": {
            "paths": [str(WARC / "example*.warc*"), str(WARC / "*.arc*")], "shard_size": 2}}},
    }
    run(config)
    stage = tmp_path / "run" / "warc"
    stats = json.loads((stage / "stats.json").read_text())
    for shard in stats["shards"].values():
        assert shard["in"] == shard["kept"] + sum(shard["dropped"].values()) + \
            sum(shard["errors"].values())
    kept = [r for f in sorted((stage / "shards").glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()]
    rejected = [r for f in sorted((stage / "rejected").glob("*.parquet"))
                for r in pq.read_table(f).to_pylist()]
    assert stats["kept"] == len(kept) == 6  # example x2 (gz, single-stream), extra, wget, arc x2
    assert len(rejected) == stats["in"] - stats["kept"]
    assert {r["reason"] for r in rejected} >= {"malformed_http", "malformed_record", "revisit"}
    assert {k["source"] for k in kept} == {"example.warc.gz", "example-bad.warc.gz.bad",
                                          "example-extra.warc", "example-wget-1-14.warc.gz",
                                          "example.arc", "example.arc.gz"}


@pytest.mark.parametrize("label", ["base64", "unicode_escape", "idna", "undefined", "utf-7"])
def test_charset_label_naming_no_web_charset_is_ignored(label):
    body = f'<html><head><meta charset="{label}"></head><body>caf\\ud83d é</body></html>'
    kept, reasons, _ = outcomes(warc_bytes([html_response("http://site.test/x", body.encode(),
                                                          f"text/html; charset={label}")])[0])
    assert not reasons and kept[0].metadata["charset"] == "utf-8"
    assert "caf\\ud83d é" in kept[0].text  # as written, never turned into a lone surrogate
