"""Servers that misbehave: an oversize robots.txt, a trickled answer, 429/503, and config
values that would make the crawler wait forever."""

from __future__ import annotations

import json
import time
from email.utils import formatdate

import pytest

from pipeline import run
from pipeline.config import ConfigError
from stages.crawl.net import ROBOTS_MAX_BYTES, retry_after_seconds, robots_rules
from tests.stages.crawl.conftest import RouteServer, crawl_config, crawl_stats, page


def hung_up_on(status: int, headers: dict, body: bytes):
    """A route that sends `body` and takes it calmly when the crawler hangs up mid-way."""

    def route(handler):
        handler.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            handler.send_header(k, v)
        handler.end_headers()
        try:
            handler.wfile.write(body)
        except OSError:
            pass
        handler.close_connection = True

    return route


def test_oversize_robots_txt_is_parsed_up_to_the_cap_and_obeyed(tmp_path):
    head = b"User-agent: *\nDisallow: /private/\n"
    cut_line = b"Allow: /private/open\n"  # the cap falls after "Allow: /private/"
    filler_size = ROBOTS_MAX_BYTES - len(head) - len(b"Allow: /private/")
    filler = b"".join(b"# filler %06d\n" % i for i in range(filler_size // 16 + 1))
    body = head + filler[:filler_size - 1] + b"\n" + cut_line
    assert body.index(cut_line) + len(b"Allow: /private/") == ROBOTS_MAX_BYTES
    body += b"Disallow: /late/\n" + filler * 4  # past the cap: never read, never obeyed
    assert len(body) > 4 * ROBOTS_MAX_BYTES
    routes = {
        "/robots.txt": hung_up_on(200, {"Content-Type": "text/plain"}, body),
        "/": page("home", ["/private/secret", "/private/open", "/late/page", "/ok"]),
        "/late/page": page("late"), "/ok": page("ok"),
    }
    with RouteServer(routes) as srv:
        run(crawl_config(tmp_path, [srv.base + "/"]))
    # The half-read line would have allowed all of /private/: it was dropped, not parsed.
    assert not any(p.startswith("/private/") for p in srv.paths())
    assert sorted(srv.paths()) == ["/", "/late/page", "/ok", "/robots.txt"]
    stats = crawl_stats(tmp_path)
    assert stats["kept"] == 3
    assert stats["dropped"] == {"robots_disallowed": 2}

    from warcio.archiveiterator import ArchiveIterator

    robots = []
    for warc in (tmp_path / "run" / "crawl").glob("*.warc.gz"):
        with open(warc, "rb") as f:
            robots += [(r.rec_headers.get_header("WARC-Truncated"), len(r.content_stream().read()))
                       for r in ArchiveIterator(f) if r.rec_type == "response"
                       and r.rec_headers.get_header("WARC-Target-URI").endswith("/robots.txt")]
    assert robots == [("length", ROBOTS_MAX_BYTES)]


def test_a_cut_robots_txt_without_one_whole_line_disallows_all():
    rules = robots_rules(200, b"User-agent: *" + b"x" * ROBOTS_MAX_BYTES, truncated=True)
    assert not rules.can_fetch("http://h/anything", "lmforge-crawler")


def trickle(ended: dict, name: str, headers_too: bool, on_the_way=None):
    """A route that sends one byte every 0.1 s (a minute's worth): of its status line and
    headers, or of its body. It notes in `ended[name]` how long it sent before the crawler
    hung up; `on_the_way` runs once, 1.5 s in."""

    def route(handler):
        start = time.monotonic()
        if headers_too:
            data = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Pad: " + b"x" * 600 + b"\r\n\r\n"
        else:
            data = b"<p>" + b"x" * 597
            handler.send_response(200)
            handler.send_header("Content-Type", "text/html")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
        try:
            for i in range(len(data)):
                handler.wfile.write(data[i:i + 1])
                time.sleep(0.1)
                if on_the_way and i == 15:
                    on_the_way()
        except OSError:  # the crawler hung up
            pass
        ended[name] = time.monotonic() - start
        handler.close_connection = True

    return route


def test_trickled_answers_are_dropped_at_the_deadline_and_checkpoints_go_on(tmp_path):
    deadline = 2.0
    ended: dict[str, float] = {}
    frontier_meanwhile: list[dict] = []
    frontier = tmp_path / "run" / "crawl" / "frontier.json"

    def read_frontier():
        if frontier.exists():
            frontier_meanwhile.append(json.loads(frontier.read_text()))

    routes = {
        "/": page("home", ["/slow-body", "/slow-headers", "/a"]),
        "/slow-body": trickle(ended, "body", headers_too=False, on_the_way=read_frontier),
        "/slow-headers": trickle(ended, "headers", headers_too=True),
        "/a": page("a", ["/b"]), "/b": page("b"),
    }
    with RouteServer(routes) as srv:
        started = time.monotonic()
        run(crawl_config(tmp_path, [srv.base + "/"], timeout_seconds=1.0,
                         request_deadline_seconds=deadline, checkpoint_seconds=0.5,
                         max_per_host=3, workers=4))
        took = time.monotonic() - started
        base = srv.base
    # Each route notes the hang-up on its next write or two, in its own thread, which can
    # come after the crawl returned (on a loaded machine, CI once saw neither noted yet).
    give_up = time.monotonic() + 5
    while len(ended) < 2 and time.monotonic() < give_up:
        time.sleep(0.05)
    stats = crawl_stats(tmp_path)
    assert stats["kept"] == 3  # /, /a and /b: the crawl went on around the slow pages
    assert stats["errors"] == {"fetch_error:deadline": 2}
    # Each trickle would have lasted a minute; the crawler hung up at its deadline (the
    # server notices on its next write or two). Generous bounds: the CPUs are shared.
    assert set(ended) == {"body", "headers"}
    assert all(deadline - 0.2 < t < deadline + 3 for t in ended.values()), ended
    assert took < 5 * deadline, took
    # While the slow pages were in flight, a checkpoint recorded the pages already done.
    assert frontier_meanwhile and {base + "/", base + "/a"} <= set(frontier_meanwhile[0]["done"])


def test_429_with_retry_after_is_fetched_on_retry_after_the_wait(tmp_path):
    answers = iter([(429, {"Retry-After": "1", "Content-Type": "text/html"}, b"slow down")])
    routes = {
        "/": page("home", ["/limited", "/next"]),
        "/limited": lambda handler: next(answers, page("limited")),
        "/next": page("next"),
    }
    with RouteServer(routes) as srv:
        run(crawl_config(tmp_path, [srv.base + "/"], delay_seconds=0.0))
    times = [t for p, t in srv.log if p in ("/limited", "/next")]
    assert [p for p in srv.paths() if p in ("/limited", "/next")] == ["/limited", "/limited", "/next"]
    assert times[1] - times[0] >= 1.0  # the Retry-After wait was honoured
    assert times[2] - times[1] >= 1.0  # and the host stays that slow
    stats = crawl_stats(tmp_path)
    assert stats["kept"] == 3 and stats["dropped"] == {} and stats["errors"] == {}
    assert stats["info"]["crawl"]["retries"] == 1
    assert stats["info"]["crawl"]["pages_requested"] == 3  # a retry is not a new page


def test_endless_503_and_429_give_up_after_the_bounded_retries(tmp_path):
    routes = {
        "/": page("home", ["/down", "/busy"]),
        "/down": (503, {"Content-Type": "text/html"}, b"down"),  # no Retry-After: backoff
        "/busy": (429, {"Content-Type": "text/html", "Retry-After": "3600"}, b"busy"),
    }
    with RouteServer(routes) as srv:
        started = time.monotonic()
        run(crawl_config(tmp_path, [srv.base + "/"], max_retries=2, max_crawl_delay=0.3))
        took = time.monotonic() - started
    assert srv.paths().count("/down") == 3 and srv.paths().count("/busy") == 3
    busy = [t for p, t in srv.log if p == "/busy"]
    assert min(b - a for a, b in zip(busy, busy[1:])) >= 0.3  # waits capped at max_crawl_delay
    assert took < 10, took  # not the hour the server asked for
    stats = crawl_stats(tmp_path)
    assert stats["kept"] == 1
    assert stats["dropped"] == {"retries_exhausted:http_503": 1, "retries_exhausted:http_429": 1}
    assert stats["info"]["crawl"]["retries"] == 4


def test_retry_after_reads_seconds_and_http_dates():
    now = 1_700_000_000.0
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds(formatdate(now + 90, usegmt=True), now) == 90.0
    assert retry_after_seconds(formatdate(now - 90, usegmt=True), now) == 0.0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


@pytest.mark.parametrize("key,value", [
    ("delay_seconds", ".inf"), ("timeout_seconds", ".inf"), ("max_crawl_delay", ".inf"),
    ("request_deadline_seconds", ".nan"), ("checkpoint_seconds", ".inf"),
    ("timeout_seconds", "86400.0"),
])
def test_unbounded_waits_are_config_errors_naming_the_key(tmp_path, key, value):
    config = tmp_path / "crawl.yaml"
    config.write_text(f"""\
name: crawltest
run_dir: {tmp_path / 'run'}
stages:
  crawl:
    kind: crawl
    params:
      seeds: [http://example.org/]
      contact_url: https://example.org/lmforge-crawler
      {key}: {value}
""")
    with pytest.raises(ConfigError, match=rf"stage 'crawl': params\.{key}: "):
        run(config)
    assert not (tmp_path / "run").exists()
