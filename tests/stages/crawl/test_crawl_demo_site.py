"""The demo site: built deterministically, crawled end to end (crawl -> ingest_warc -> extract)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from demo.site import build_site, serve
from pipeline import run


def test_site_build_is_deterministic(tmp_path):
    a, b = build_site(tmp_path / "a"), build_site(tmp_path / "b")
    files_a = {p.relative_to(a): p.read_bytes() for p in sorted(a.rglob("*")) if p.is_file()}
    files_b = {p.relative_to(b): p.read_bytes() for p in sorted(b.rglob("*")) if p.is_file()}
    assert files_a == files_b
    assert (a / "robots.txt").read_text() == "User-agent: *\nDisallow: /private/\n"
    assert len(list((a / "articles").glob("*.html"))) == 104  # 98 chapters + 6 Verdict parts
    assert (a / "intl" / "ru.html").read_bytes().decode("cp1251").count("Русский") >= 1


def test_demo_site_crawl_funnel(tmp_path):
    site = build_site(tmp_path / "site")
    html_pages = [p for p in site.rglob("*.html") if "private" not in p.parts]
    server = serve(site, 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        run({"name": "demo-site", "run_dir": str(tmp_path / "run"), "stages": {
            "crawl": {"kind": "crawl", "params": {
                "seeds": [base + "/"], "contact_url": "https://example.org/crawler",
                "allow_private": True, "delay_seconds": 0.0, "max_depth": 6, "workers": 2}},
            "pages": {"kind": "ingest_warc", "inputs": ["crawl"]},
            "text": {"kind": "extract", "inputs": ["pages"], "params": {"engine": "resiliparse"}},
        }})
    finally:
        server.shutdown()
        server.server_close()
    crawl = json.loads((tmp_path / "run" / "crawl" / "stats.json").read_text())
    assert crawl["kept"] == len(html_pages)
    assert crawl["dropped"] == {"redirect": 2, "robots_disallowed": 1, "http_404": 1,
                                "content_type": 1}
    rows = [r for f in sorted((tmp_path / "run" / "text" / "shards").glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()]
    by_path = {r["url"][len(base):]: r for r in rows}
    assert set(by_path) == {"/" + p.relative_to(site).as_posix() for p in html_pages}
    ru, ja = (json.loads(by_path[f"/intl/{c}.html"]["metadata"]) for c in ("ru", "ja"))
    assert (ru["charset"], ru["charset_source"]) == ("cp1251", "header")
    assert (ja["charset"], ja["charset_source"]) == ("shift_jis", "meta")
    assert "Д о б р о" in by_path["/intl/ru.html"]["text"]
    assert "In the beginning God created" in by_path["/articles/genesis-01.html"]["text"]


def test_web_site_for_the_ablation(tmp_path):
    """The web-like site: deterministic, every page kind, junk sized as asked, all linked."""
    import re
    from collections import Counter

    from demo.site import _articles
    from demo.site.web import JUNK_SHARES, build_web_site, page_kind

    articles = _articles()
    foreign = {"de": (Path(__file__).parents[3] / "demo/site/texts/tutor.de.txt").read_text()}
    a = build_web_site(tmp_path / "a", articles, foreign, junk_ratio=1.0)
    b = build_web_site(tmp_path / "b", articles, foreign, junk_ratio=1.0)
    pages = {p.relative_to(a).as_posix(): p.read_bytes() for p in sorted(a.rglob("*.html"))}
    assert pages == {p.relative_to(b).as_posix(): p.read_bytes() for p in sorted(b.rglob("*.html"))}

    kinds = Counter(page_kind(f"http://h/{path}") for path in pages)
    assert kinds["articles"] == len(articles)
    assert set(JUNK_SHARES) - {"duplicates"} <= set(kinds)
    assert {"print", "amp", "syndicated"} & set(kinds)

    # Each junk kind's text is about its share of the clean text (a page of overshoot at most).
    def text_bytes(kind: str) -> int:
        return sum(len(re.sub(r"<main>|</main>", "", re.search(r"<main>.*</main>", page.decode(), re.S)
                              .group(0)).encode()) for path, page in pages.items()
                   if page_kind(f"http://h/{path}") == kind)
    clean = sum(len(p.encode()) for art in articles for p in art["paragraphs"])
    for kind in ("spam", "forum", "salad"):
        assert 0.8 * JUNK_SHARES[kind] * clean < text_bytes(kind) < 2.5 * JUNK_SHARES[kind] * clean + 20_000

    # Every page is reachable from the home page within 3 links (the crawl's max_depth is 4).
    links = {path: set(re.findall(r'href="/([^"#]+\.html)"', page.decode())) for path, page in pages.items()}
    seen, frontier = {"index.html"}, {"index.html"}
    for _ in range(3):
        frontier = {t for path in frontier for t in links[path] if t in pages} - seen
        seen |= frontier
    assert seen == set(pages)
