"""The crawler against a local server: robots.txt cases, spacing, body cap, redirects."""

from __future__ import annotations

import gzip
import random
import zlib

from pipeline import run
from tests.stages.crawl.conftest import RouteServer, crawl_config, crawl_stats, page, redirect


def test_robots_disallow_is_obeyed_and_counted(tmp_path):
    routes = {
        "/robots.txt": (200, {"Content-Type": "text/plain"},
                        b"User-agent: *\nDisallow: /private/\nAllow: /private/open\n"),
        "/": page("home", ["/a", "/private/secret", "/private/open"]),
        "/a": page("a"),
        "/private/secret": page("secret"),
        "/private/open": page("open"),
    }
    with RouteServer(routes) as srv:
        run(crawl_config(tmp_path, [srv.base + "/"]))
    assert "/private/secret" not in srv.paths()
    assert srv.paths().count("/robots.txt") == 1  # cached per host
    assert sorted(srv.paths()) == ["/", "/a", "/private/open", "/robots.txt"]
    stats = crawl_stats(tmp_path)
    assert stats["kept"] == 3
    assert stats["dropped"] == {"robots_disallowed": 1}
    assert all("lmforge-crawler/1.0 (+https://example.org/lmforge-crawler)" == ua
               for ua in srv.user_agents)


def test_robots_404_allows_everything(tmp_path):
    routes = {"/": page("home", ["/x"]), "/x": page("x")}
    with RouteServer(routes) as srv:
        run(crawl_config(tmp_path, [srv.base + "/"]))
    assert sorted(srv.paths()) == ["/", "/robots.txt", "/x"]
    assert crawl_stats(tmp_path)["kept"] == 2


def test_robots_500_disallows_everything(tmp_path):
    routes = {"/robots.txt": (503, {"Content-Type": "text/plain"}, b"down"),
              "/": page("home", ["/x"])}
    with RouteServer(routes) as srv:
        run(crawl_config(tmp_path, [srv.base + "/", srv.base + "/x"]))
    assert srv.paths() == ["/robots.txt"]
    stats = crawl_stats(tmp_path)
    assert stats["kept"] == 0
    assert stats["dropped"] == {"robots_unavailable": 2}


def test_robots_redirect_chain_is_followed(tmp_path):
    routes = {
        "/robots.txt": redirect("/r1"),
        "/r1": redirect("/r2", 302),
        "/r2": redirect("/real-robots.txt", 307),
        "/real-robots.txt": (200, {"Content-Type": "text/plain"}, b"User-agent: *\nDisallow: /no\n"),
        "/": page("home", ["/no", "/yes"]),
        "/yes": page("yes"),
        "/no": page("no"),
    }
    with RouteServer(routes) as srv:
        run(crawl_config(tmp_path, [srv.base + "/"]))
    assert "/no" not in srv.paths()
    assert "/yes" in srv.paths()
    assert crawl_stats(tmp_path)["dropped"] == {"robots_disallowed": 1}


def test_per_host_spacing_is_at_least_the_delay(tmp_path):
    n = 6
    routes = {"/": page("home", [f"/p{i}" for i in range(n)])}
    routes.update({f"/p{i}": page(f"p{i}") for i in range(n)})
    delay = 0.25
    with RouteServer(routes) as srv:
        run(crawl_config(tmp_path, [srv.base + "/"], delay_seconds=delay, workers=4))
    times = [t for _, t in srv.log]
    assert len(times) == n + 2  # robots, home, pages
    gaps = [b - a for a, b in zip(times, times[1:])]
    # Server-side arrival times; 5 ms covers the scheduling jitter of the measurement.
    assert min(gaps) >= delay - 0.005, gaps


def test_crawl_delay_from_robots_raises_the_spacing(tmp_path):
    routes = {"/robots.txt": (200, {}, b"User-agent: *\nCrawl-delay: 0.3\n"),
              "/": page("home", ["/a", "/b"]), "/a": page("a"), "/b": page("b")}
    with RouteServer(routes) as srv:
        run(crawl_config(tmp_path, [srv.base + "/"], delay_seconds=0.0))
    times = [t for _, t in srv.log]
    assert min(b - a for a, b in zip(times[1:], times[2:])) >= 0.3 - 0.005


def endless_chunked(sent: list[int], gzipped: bool = False, limit: int = 1 << 30):
    """A route that streams 64 KiB chunks of HTML until the client hangs up (or `limit`)."""

    def route(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Transfer-Encoding", "chunked")
        if gzipped:
            handler.send_header("Content-Encoding", "gzip")
        handler.end_headers()
        deflate = zlib.compressobj(6, zlib.DEFLATED, 31)
        # Hex noise compresses 2:1 only, so socket buffers cannot hide a runaway server.
        block = b"<p>" + random.Random(7).randbytes(32768).hex().encode()
        try:
            while sent[0] < limit:
                data = deflate.compress(block) + deflate.flush(zlib.Z_SYNC_FLUSH) \
                    if gzipped else block
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                sent[0] += len(block)
        except OSError:  # the crawler closed the connection at its cap
            pass
        handler.close_connection = True

    return route


def test_body_cap_gzip_bomb_and_endless_chunked_bodies(tmp_path):
    bomb = gzip.compress(b"\0" * 20_000_000)  # 20 MB of zeros in ~20 KB
    plain, zipped = [0], [0]  # decoded bytes each endless route produced
    routes = {
        "/": page("home", ["/big", "/bomb", "/declared", "/ok", "/endless", "/endless-gz"]),
        "/big": (200, {"Content-Type": "text/html"}, b"<p>" + b"x" * 300_000),
        "/bomb": (200, {"Content-Type": "text/html", "Content-Encoding": "gzip"}, bomb),
        "/declared": (200, {"Content-Type": "text/html", "Content-Length": "999999999"}, b""),
        "/ok": (200, {"Content-Type": "text/html", "Content-Encoding": "gzip"},
                gzip.compress(page("ok")[2])),
        "/endless": endless_chunked(plain),
        "/endless-gz": endless_chunked(zipped, gzipped=True),
    }
    with RouteServer(routes) as srv:
        run(crawl_config(tmp_path, [srv.base + "/"], max_bytes_per_page=100_000))
    stats = crawl_stats(tmp_path)
    assert stats["kept"] == 2  # home and the gzipped /ok
    assert stats["dropped"] == {"oversize:body": 5}
    # The crawler hung up at its cap: the servers stopped far short of their gigabyte
    # (what is left is socket buffers).
    assert 100_000 < plain[0] < 64 << 20 and 100_000 < zipped[0] < 64 << 20


def test_links_per_page_are_capped_and_counted(tmp_path):
    links = [f"/p{i}" for i in range(30)]
    routes = {"/": page("home", links + links)}  # duplicates count once
    routes.update({f"/p{i}": page(f"p{i}") for i in range(30)})
    with RouteServer(routes) as srv:
        run(crawl_config(tmp_path, [srv.base + "/"], max_links_per_page=10, max_depth=1))
    stats = crawl_stats(tmp_path)
    assert stats["kept"] == 11 and stats["in"] == 11  # home and its first ten links
    assert stats["info"]["crawl"]["links_over_cap"] == 20
    assert sorted(p for p in srv.paths() if p.startswith("/p")) == sorted(links[:10])


def test_redirect_limit_and_content_types(tmp_path):
    routes = {f"/hop{i}": redirect(f"/hop{i + 1}") for i in range(10)}
    routes["/"] = page("home", ["/hop0", "/image.png"])
    routes["/image.png"] = (200, {"Content-Type": "image/png"}, b"\x89PNG....")
    with RouteServer(routes) as srv:
        run(crawl_config(tmp_path, [srv.base + "/"], max_redirects=3))
    requested = srv.paths()
    assert [p for p in requested if p.startswith("/hop")] == ["/hop0", "/hop1", "/hop2", "/hop3"]
    stats = crawl_stats(tmp_path)
    assert stats["dropped"] == {"redirect": 4, "too_many_redirects": 1, "content_type": 1}
    assert stats["kept"] == 1


def test_scope_depth_and_max_pages(tmp_path):
    routes = {
        "/": page("home", ["/d1", "http://other.invalid/x", "/skip/me", "ftp://h/f"]),
        "/d1": page("d1", ["/d2"]),
        "/d2": page("d2", ["/d3"]),
        "/d3": page("d3"),
    }
    with RouteServer(routes) as srv:
        run(crawl_config(tmp_path, [srv.base + "/"], max_depth=2, exclude=["/skip/"]))
    assert "/d3" not in srv.paths()
    stats = crawl_stats(tmp_path)
    assert stats["kept"] == 3
    assert stats["dropped"] == {"out_of_scope": 2, "refused:scheme": 1, "too_deep": 1}
    assert stats["in"] == 7

    with RouteServer(routes) as srv:
        run(crawl_config(tmp_path / "b", [srv.base + "/"], max_pages=2))
    stats = crawl_stats(tmp_path / "b")
    assert stats["kept"] == 2  # / and /d1; then /skip/me and /d2 are never requested
    assert stats["dropped"] == {"max_pages": 2, "out_of_scope": 1, "refused:scheme": 1}
