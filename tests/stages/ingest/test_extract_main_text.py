"""extract: main text kept, boilerplate dropped, limits counted, both engines, both executors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import run
from pipeline.documents import Document
from stages.ingest.extract import _Sandbox, _Timeout, page_title_and_date, utf8_size_over
from tests.conftest import shard_bytes
from tests.stages.ingest.conftest import html_response

ARTICLE = [
    "I had always thought Jack Gisburn rather a cheap genius, though a good fellow enough, "
    "so it was no great surprise to me to hear that, in the height of his glory, he had "
    "dropped his painting, married a rich widow, and established himself in a villa on the "
    "Riviera.",
    "The height of his glory, that was what the women called it. I can hear Mrs. Gideon "
    "Thwing, his last Chicago sitter, deploring his unaccountable abdication, and the "
    "tears she shed over the loss of so original a talent.",
    "Poor Jack Gisburn! The women had made him, it was fitting that they should mourn him. "
    "Among his own sex fewer regrets were heard, and in his own trade hardly a murmur.",
    "Well, it was just because it was not easy to find out that I went to see him at his "
    "villa, and he received me with the unaffected pleasure of a man who has put behind him "
    "all the old ambitions.",
]
# In <nav>, <aside> and <footer>: both engines must drop these.
BOILERPLATE = ["Copyright 2024 Example Media Group", "Privacy policy",
               "Most popular stories this week", "Popular story number 3"]
HEADER_CTA = "Subscribe to our newsletter"  # a bare <div> in <header>


def slow_page() -> str:
    """30,000 short paragraphs: about 6 CPU seconds of trafilatura here."""
    return "<html><body>" + "".join(f"<p>sentence number {i} with some words in it.</p>"
                                    for i in range(30_000)) + "</body></html>"


def article_page(title: str = "The Verdict") -> str:
    nav = "".join(f'<li><a href="/s{i}">Section {i}</a></li>' for i in range(12))
    popular = "".join(f'<li><a href="/p{i}">Popular story number {i}</a></li>' for i in range(8))
    paragraphs = "".join(f"<p>{p}</p>" for p in ARTICLE)
    return f"""<!DOCTYPE html><html><head><title>{title} | Example Media</title>
<meta property="article:published_time" content="1908-06-01T00:00:00Z"></head><body>
<header><nav><ul>{nav}</ul></nav><div class="cta">{HEADER_CTA}</div></header>
<div class="layout"><main><article><h1>{title}</h1>{paragraphs}</article></main>
<aside class="sidebar"><h3>{BOILERPLATE[2]}</h3><ul>{popular}</ul></aside></div>
<footer><p>{BOILERPLATE[0]}. All rights reserved.</p><a href="/privacy">{BOILERPLATE[1]}</a>
</footer></body></html>"""


def write_warc(path: Path, docs: list[Document]) -> None:
    """HTML docs as response records; docs with metadata format=text as WET conversions."""
    from io import BytesIO

    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for doc in docs:
            if doc.metadata.get("format") == "text":
                record = writer.create_warc_record(doc.url, "conversion", warc_content_type=
                                                   "text/plain", payload=BytesIO(doc.text.encode()))
            else:
                record = html_response(doc.url, doc.text.encode())
            writer.write_record(record)


def run_extract(tmp_path: Path, docs: list[Document], executor="local", **params) -> Path:
    warc = tmp_path / "in.warc.gz"
    if not warc.exists():
        write_warc(warc, docs)
    config = {
        "name": "x", "run_dir": str(tmp_path / f"run-{executor}"),
        "stages": {
            "html": {"kind": "ingest_warc", "params": {"paths": [str(warc)], "shard_size": 3}},
            "extract": {"kind": "extract", "inputs": ["html"], "max_error_fraction": 1.0,
                        "params": params},
        },
    }
    run(config, executor=executor, workers=2)
    return tmp_path / f"run-{executor}" / "extract"


def by_url(rows: list[dict]) -> dict[str, dict]:
    return {r["url"].rsplit("/", 1)[1]: r for r in rows}


def read(stage_dir: Path, sub: str) -> list[dict]:
    return [r for f in sorted((stage_dir / sub).glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()]


@pytest.mark.parametrize("engine", ["trafilatura", "resiliparse"])
def test_main_text_kept_and_boilerplate_dropped(tmp_path, engine):
    doc = Document(id="a", text=article_page(), url="http://site.test/verdict")
    stage = run_extract(tmp_path, [doc], engine=engine)
    [out] = read(stage, "shards")
    for paragraph in ARTICLE:
        assert " ".join(paragraph.split()) in " ".join(out["text"].split())
    for junk in BOILERPLATE:
        assert junk not in out["text"]
    assert "Section 3" not in out["text"]
    if engine == "trafilatura":  # precision-oriented; resiliparse keeps a bare header <div>
        assert HEADER_CTA not in out["text"]
    meta = json.loads(out["metadata"])
    assert meta["title"] == "The Verdict | Example Media"
    assert meta["date"] == "1908-06-01T00:00:00Z"
    assert meta["engine"] == engine
    assert out["url"] == "http://site.test/verdict"


def test_limits_and_reasons(tmp_path):
    docs = [
        Document(id="", url="http://s.test/ok", text=article_page()),
        Document(id="", url="http://s.test/big",
                 text="<html><body>" + "<p>x</p>" * 50_000 + "</body></html>"),
        Document(id="", url="http://s.test/empty",
                 text="<html><head><title>t</title></head><body></body></html>"),
        Document(id="", url="http://s.test/wet", text="Already plain text.",
                 metadata={"format": "text"}),
    ]
    stage = run_extract(tmp_path, docs, engine="resiliparse", max_html_bytes=100_000)
    kept = by_url(read(stage, "shards"))
    rejected = by_url(read(stage, "rejected"))
    assert set(kept) == {"ok", "wet"}
    assert kept["wet"]["text"] == "Already plain text."
    assert rejected["big"]["reason"] == "oversize:html"
    assert rejected["big"]["text"] == docs[1].text[:20_000]  # only a prefix is kept
    assert rejected["empty"]["reason"] == "empty"
    assert rejected["empty"]["text"].startswith("<html>")  # the input is kept for inspection
    stats = json.loads((stage / "stats.json").read_text())
    assert stats["dropped"] == {"empty": 1, "oversize:html": 1}


def test_html_size_is_counted_in_utf8_bytes():
    assert not utf8_size_over("a" * 10, 10) and utf8_size_over("a" * 11, 10)
    assert not utf8_size_over("é" * 5, 10) and utf8_size_over("é" * 6, 11)
    assert not utf8_size_over("\U0001F600" * 3, 12) and utf8_size_over("\U0001F600" * 3, 11)


def test_sandbox_kills_a_slow_page_and_recovers():
    options = dict(engine="trafilatura", timeout_seconds=0.05, favor_precision=True,
                   include_tables=True, deduplicate=False)
    sandbox = _Sandbox(options)
    try:
        [text] = sandbox.extract_many([article_page()])  # warm start
        assert "Jack Gisburn" in text
        first = sandbox.proc.pid
        [outcome] = sandbox.extract_many([slow_page()])
        assert isinstance(outcome, _Timeout)
        assert sandbox.proc is None  # killed
        sandbox.options = dict(options, timeout_seconds=30)
        [text] = sandbox.extract_many([article_page()])
        assert "Jack Gisburn" in text
        assert sandbox.proc.pid != first
    finally:
        sandbox.stop()


def test_timeout_is_counted_through_the_stage(tmp_path):
    slow = slow_page()
    docs = [Document(id="", url="http://s.test/slow", text=slow),
            Document(id="", url="http://s.test/ok", text=article_page())]
    stage = run_extract(tmp_path, docs, engine="trafilatura", timeout_seconds=0.5,
                        max_html_bytes=10_000_000)
    assert {k: r["reason"] for k, r in by_url(read(stage, "rejected")).items()} == \
        {"slow": "timeout"}
    assert list(by_url(read(stage, "shards"))) == ["ok"]


def test_title_and_date_from_head():
    assert page_title_and_date("<title> A &amp; B </title>") == ("A & B", None)
    html = '<head><meta content="2020-02-02" name="date"><meta property="og:title" content="T">'
    assert page_title_and_date(html) == ("T", "2020-02-02")
    assert page_title_and_date('<p><time datetime="2021-03-04">x</time>')[1] == "2021-03-04"


def test_local_and_dask_outputs_are_identical(tmp_path):
    docs = [Document(id=f"d{i}", text=article_page(f"Title {i}"), url=f"http://s.test/{i}")
            for i in range(6)] + [Document(id="", url="http://s.test/e", text="<html></html>")]
    local = run_extract(tmp_path, docs, "local", engine="trafilatura")
    dask = run_extract(tmp_path, docs, "dask", engine="trafilatura")
    assert shard_bytes(local) == shard_bytes(dask)
    assert len(read(local, "shards")) == 6
