"""`crawl`: a polite web crawler from seed URLs into WARC files.

One task crawls the whole frontier: politeness is per host, so splitting a site across
tasks would break it. Inside the task a small thread pool fetches from several hosts at
once while each host gets at most `max_per_host` requests in flight, and a request to a
host starts at least `delay_seconds` (or the robots.txt Crawl-delay, up to
`max_crawl_delay`) after the previous one to that host started and after it finished.

A 429 or 503 answer is retried, at most `max_retries` times per URL (counted in the stage
info as `retries`): the host's delay is raised to the wait (its `Retry-After`, seconds or
HTTP-date, or else a backoff of 1, 2, 4 ... x max(1 s, `delay_seconds`)), both capped at
`max_crawl_delay`, and the host is not contacted again before the wait is over. A retry
does not count against `max_pages`. Every request (connect, headers and body) ends within
`request_deadline_seconds` (default 3 x `timeout_seconds`) however slowly the server
sends, and the loop wakes for each checkpoint while pages are in flight, so checkpoints
keep their `checkpoint_seconds` schedule.

Every URL the crawler meets is normalized (`stages.crawl.net.normalize_url`) and enters the
seen-set once; each ends with exactly one outcome, counted in the task's funnel:
- kept: `fetched` (a 2xx answer of an allowed content type, written to WARC);
- dropped: `out_of_scope`, `too_deep`, `max_pages`, `refused:<kind>` (the SSRF guard:
  scheme, loopback, private, link_local, multicast, reserved), `robots_disallowed`,
  `robots_unavailable` (robots.txt answered 5xx or was unreachable: RFC 9309 says disallow
  all), `redirect` (a 3xx; its target is queued like a link, at the same depth, and is
  checked again from scratch), `too_many_redirects`, `content_type`, `oversize:body`
  (the body passed `max_bytes_per_page` after decompression; reading stopped there),
  `http_<status>` (4xx/5xx answers, written to WARC), `retries_exhausted:http_<status>`
  (429/503 still after `max_retries` retries; every answer is written to WARC), `bad_url`;
- errors: `fetch_error:<kind>` (dns, connection, timeout, tls, protocol, content_encoding,
  deadline: the request passed `request_deadline_seconds`, reading stopped there).

WARC: request and response records (WARC-Target-URI, WARC-Date, WARC-IP-Address, block
and payload digests) written with warcio, plus one warcinfo record per file, rotated
every `warc_max_bytes`. Like Common Crawl, the body is stored content-decoded, with the
original `Content-Encoding`, `Transfer-Encoding` and `Content-Length` headers renamed
`X-Crawler-*` and a true `Content-Length` added, so any WARC reader sees the real page.
robots.txt exchanges are archived too; one cut at its 500 KiB cap carries
`WARC-Truncated: length`.

Resume: a WARC file is committed (fsync + rename) when it is full, every
`checkpoint_seconds`, and at the end; right after each commit `frontier.json` is replaced
atomically at the top of the stage directory with the committed WARC files, the seen-set,
the URLs whose outcome is committed and the counts. A killed crawl restarts from that
file: committed pages are never fetched again; URLs seen but not committed are queued
again (robots.txt is fetched again too: rules may have changed). The WARC files also
live at the top of the stage directory, because the engine
deletes unlisted files in stage subdirectories on resume (see the report to the lead).

The web is not deterministic: WARC files carry fetch times and differ between runs. Only
the set of outcomes is reproducible against a static site.

Memory: at most `workers` pages in flight, each read into at most `max_bytes_per_page`
(decompressed, capped while it streams: see `stages.crawl.net`; an endless chunked body
stops at the cap) plus the lxml tree its links are read from; a robots.txt chain holds at
most 6 answers of 500 KiB. The frontier lives in memory: about 0.2 KB per distinct URL seen,
and about 0.7 KB per URL while `frontier.json` is written; a page adds at most
`max_links_per_page` distinct links (those past it are counted in the stage info as
`links_over_cap`), so the frontier holds at most seeds + `max_pages` x
`max_links_per_page` URLs: about 0.7 GB at the defaults in the worst case, far less on
real sites. A crawl bigger than that is several crawl stages, or a disk-backed frontier.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from pydantic import Field, model_validator

from pipeline.artifacts import FileEntry, commit_artifact, tmp_path_for, write_json_atomic
from stages.crawl.net import (
    AddressPolicy,
    BadURL,
    Fetcher,
    FetchError,
    Refused,
    Response,
    TooLarge,
    WrongType,
    host_key,
    normalize_url,
    robots_rules,
    retry_after_seconds,
    robots_url,
    ROBOTS_MAX_BYTES,
    ROBOTS_MAX_REDIRECTS,
)
from pipeline.stage import Counts, Params, Stage, StageInput, Task, TaskResult

FRONTIER = "frontier.json"
FRONTIER_VERSION = 1
SOFTWARE = "lmforge-crawl/1"
RETRY_STATUSES = (429, 503)  # "slow down" and "try later": retried after a wait
HOUR = 3600.0


def _seconds(default: float | None, *, positive: bool = False, highest: float = HOUR) -> Any:
    """A finite number of seconds, at most `highest`: YAML `.inf` or `.nan` is a config
    error, not a crawl that waits forever."""
    lowest = {"gt": 0.0} if positive else {"ge": 0.0}
    return Field(default=default, le=highest, allow_inf_nan=False, **lowest)


class CrawlParams(Params):
    seeds: list[str] = []
    seeds_file: str | None = None  # one URL per line; '#' starts a comment
    # Hosts (and their subdomains) in scope; empty: the hosts of the seeds.
    allowed_domains: list[str] = []
    include: list[str] = []  # regexes: a URL must match one (if any are given)
    exclude: list[str] = []  # regexes: a URL matching one is out of scope
    max_depth: int = Field(default=3, ge=0)
    max_pages: int = Field(default=1000, ge=1)  # page requests; robots.txt, retries not counted
    max_bytes_per_page: int = Field(default=5_000_000, ge=1)  # after decompression
    max_links_per_page: int = Field(default=1000, ge=0)  # distinct links taken from one page
    user_agent: str = "lmforge-crawler"  # product token, matched against robots.txt groups
    contact_url: str = Field(pattern=r"^https?://")  # who to reach about the crawler
    delay_seconds: float = _seconds(1.0)
    max_per_host: int = Field(default=1, ge=1)
    workers: int = Field(default=4, ge=1)
    respect_crawl_delay: bool = True
    max_crawl_delay: float = _seconds(30.0)  # also caps a Retry-After wait and the backoff
    max_retries: int = Field(default=3, ge=0, le=20)  # per URL, for 429 and 503 answers
    max_redirects: int = Field(default=5, ge=0)
    content_types: list[str] = ["text/html", "application/xhtml+xml"]
    timeout_seconds: float = _seconds(20.0, positive=True)  # the connect, and each read
    # connect + headers + body of one request; None: 3 x timeout_seconds
    request_deadline_seconds: float | None = _seconds(None, positive=True)
    allow_private: bool = False  # lifts the SSRF guard entirely (demo, tests)
    allowed_networks: list[str] = []  # CIDRs allowed although not global, e.g. an intranet
    follow_nofollow: bool = False
    warc_max_bytes: int = Field(default=100_000_000, ge=1)
    warc_prefix: str = Field(default="crawl", pattern=r"^[A-Za-z0-9_.-]+$")
    checkpoint_seconds: float = _seconds(60.0, positive=True, highest=24 * HOUR)

    @model_validator(mode="after")
    def _has_seeds(self):
        if not self.seeds and not self.seeds_file:
            raise ValueError("give seeds or seeds_file")
        for pattern in (*self.include, *self.exclude):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"bad regex {pattern!r}: {exc}") from None
        return self

    @property
    def request_deadline(self) -> float:
        if self.request_deadline_seconds is not None:
            return self.request_deadline_seconds
        return 3 * self.timeout_seconds


@dataclass
class _Host:
    """Politeness state of one `scheme://host:port`."""

    queue: deque = field(default_factory=deque)  # (url, depth, hops)
    retries: deque = field(default_factory=deque)  # (url, depth, hops) after a 429/503; go first
    robots: Any = None  # Protego once known
    robots_status: str | None = None  # None (pending), "ok", "unavailable", or a refusal
    robots_detail: str | None = None  # why robots.txt could not be had (the fetch error)
    robots_busy: bool = False
    next_time: float = 0.0
    active: int = 0
    delay: float = 0.0


@dataclass
class _Outcome:
    url: str
    kept: bool = False
    reason: str | None = None
    error: str | None = None
    links: list[str] = field(default_factory=list)
    links_over_cap: int = 0  # distinct links past max_links_per_page, never queued
    exchanges: list[Response] = field(default_factory=list)
    retry_after: float | None = None  # a 429/503: its Retry-After in seconds, if readable


class Crawl(Stage):
    kind = "crawl"
    version = 1
    units = "URLs -> pages"  # `in` counts URLs met, `kept` counts pages fetched
    Params = CrawlParams

    def fingerprint(self) -> Any:
        return self._seed_list()

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        return [Task(name="crawl")]

    def run_task(self, task: Task) -> TaskResult:
        crawler = _Crawler(self.params, self.stage_dir, self._seed_list())
        try:
            crawler.run()
        finally:
            crawler.close()
        if crawler.counts.kept == 0 and crawler.seed_outcomes \
                and len(crawler.seed_outcomes) == len(crawler.seed_urls()):
            failed = "; ".join(f"{u} ({why})" for u, why in sorted(crawler.seed_outcomes.items())[:5])
            raise CrawlFailed(
                f"no page could be crawled: every seed failed: {failed}. "
                "Is the site up and reachable from here? (configs/demo.yaml needs the demo "
                "site: `make demo` serves it while it runs)")
        return TaskResult(files=crawler.files, counts=crawler.counts,
                          first_errors=crawler.first_errors, info=crawler.info())

    def _seed_list(self) -> list[str]:
        seeds = list(self.params.seeds)
        if self.params.seeds_file:
            path = Path(self.params.seeds_file)
            try:
                lines = path.read_text().splitlines()
            except OSError as exc:
                raise FileNotFoundError(
                    f"stage '{self.name}': params.seeds_file: cannot read {path}: {exc.strerror}"
                ) from None
            seeds += [s.split("#")[0].strip() for s in lines if s.split("#")[0].strip()]
        return seeds


class CrawlFailed(RuntimeError):
    """Every seed was lost to a transport error (connection refused, DNS, TLS, timeout,
    on the page or its robots.txt) and nothing was fetched: later stages would run on
    nothing with misleading errors. (A site that answers, even with 5xx or disallow-all
    rules, is a crawl result, counted as usual.)"""


class _Crawler:
    """The crawl loop of one task: frontier, politeness, fetch jobs, WARC, checkpoints."""

    def __init__(self, params: CrawlParams, stage_dir: Path, seeds: list[str]):
        self.p = params
        self.stage_dir = stage_dir
        self.seeds = seeds
        self.user_agent = f"{params.user_agent}/1.0 (+{params.contact_url})"
        self.fetcher = Fetcher(
            AddressPolicy(params.allow_private, tuple(params.allowed_networks)),
            self.user_agent, params.timeout_seconds, params.max_bytes_per_page,
            params.request_deadline,
        )
        self.include = [re.compile(x) for x in params.include]
        self.exclude = [re.compile(x) for x in params.exclude]
        # Scope: the allowed domains, or else the hosts of the seeds.
        self.allowed = [d.lower().strip(".") for d in params.allowed_domains] or _hosts(seeds)
        self.counts = Counts()
        self.first_errors: list[str] = []
        self.files: list[FileEntry] = []
        self.seen: dict[str, tuple[int, int]] = {}  # url -> (depth, redirect hops)
        self.done: set[str] = set()  # outcome committed with a WARC file
        self.pending: list[tuple[str, str, int]] = []  # (url, outcome, body bytes) since the last commit
        self.incoming: deque = deque()  # (url, depth, hops) waiting for triage
        self.hosts: dict[str, _Host] = {}
        self.pages_started = 0
        self.robots_fetches = 0
        self.links_over_cap = 0
        self.retry_counts: dict[str, int] = {}  # url -> retries so far (429/503 answers)
        self.retries_started = 0
        self.seed_outcomes: dict[str, str] = {}  # seed -> the transport error that lost it
        self.warc = _WarcFile(stage_dir, params.warc_prefix, self.user_agent)
        self.last_commit = time.monotonic()
        self._lock = threading.Lock()

    # --- state -------------------------------------------------------------------------

    def run(self) -> None:
        self._restore()
        if not self.seen:
            for seed in self.seeds:
                self._discover(seed, None, depth=0, hops=0)
        else:
            for url, (depth, hops) in self.seen.items():
                if url not in self.done:
                    self.incoming.append((url, depth, hops))
        self._loop()
        self._commit(final=True)

    def _restore(self) -> None:
        path = self.stage_dir / FRONTIER
        listed: set[str] = set()
        if path.exists():
            state = json.loads(path.read_text())
            if state.get("version") == FRONTIER_VERSION:
                self.files = [FileEntry(**f) for f in state["warcs"]]
                self.counts = Counts.from_dict(state["counts"])
                self.seen = {u: tuple(v) for u, v in state["seen"].items()}
                self.done = set(state["done"])
                self.pages_started = state["pages"]
                self.warc.index = state["next_warc"]
                self.first_errors = state.get("first_errors", [])
                listed = {f.path for f in self.files}
        # A WARC committed after the last frontier write is an orphan: its pages are queued
        # again, so the file must go (or the next run would hold them twice).
        for warc in self.stage_dir.glob(f"{self.p.warc_prefix}-*.warc.gz"):
            if warc.name not in listed:
                warc.unlink()

    def _save(self) -> None:
        write_json_atomic(self.stage_dir / FRONTIER, {
            "version": FRONTIER_VERSION,
            "warcs": [vars(f) for f in self.files],
            "counts": self.counts.to_dict(),
            "seen": {u: list(v) for u, v in self.seen.items()},
            "done": sorted(self.done),
            "pages": self.pages_started,
            "next_warc": self.warc.index,
            "first_errors": self.first_errors,
        })

    def _commit(self, final: bool = False) -> None:
        self.last_commit = time.monotonic()
        entry = self.warc.commit()
        if entry is None and not final and not self.pending:
            return
        if entry is not None:
            self.files.append(entry)
        for url, key, size in self.pending:
            self._count(key, size)
            self.done.add(url)
        self.pending = []
        self._save()

    def _count(self, key: str, size: int) -> None:
        kind, _, reason = key.partition(":")
        self.counts.n_in += 1
        self.counts.bytes_in += size
        if kind == "kept":
            self.counts.kept += 1
            self.counts.bytes_out += size
        elif kind == "error":
            self.counts.errors[reason] += 1
        else:
            self.counts.dropped[reason] += 1

    def _finish(self, url: str, key: str, detail: str | None = None, size: int = 0) -> None:
        self.pending.append((url, key, size))
        unreachable = key.startswith("error:fetch_error:") or key == "dropped:robots_unavailable"
        if detail and unreachable and self.seen.get(url, (1, 0)) == (0, 0):
            self.seed_outcomes[url] = f"{key.partition(':')[2]}: {detail}"
        if detail and key.startswith("error:") and len(self.first_errors) < 5:
            self.first_errors.append(f"{url}: {detail}")

    def seed_urls(self) -> list[str]:
        return [u for u, (depth, hops) in self.seen.items() if depth == 0 and hops == 0]

    def info(self) -> dict[str, Any]:
        return {"pages_requested": self.pages_started, "robots_fetched": self.robots_fetches,
                "hosts": len(self.hosts), "warc_files": len(self.files),
                "links_over_cap": self.links_over_cap, "retries": self.retries_started}

    def close(self) -> None:
        self.warc.abort()
        self.fetcher.close()

    # --- the frontier --------------------------------------------------------------------

    def _discover(self, url: str, base: str | None, depth: int, hops: int) -> None:
        try:
            url = normalize_url(url, base)
        except BadURL:
            raw = url if base is None else f"{base} -> {url}"
            if raw not in self.seen:
                self.seen[raw] = (depth, hops)
                self._finish(raw, "dropped:bad_url")
            return
        if url in self.seen:
            return
        self.seen[url] = (depth, hops)
        self.incoming.append((url, depth, hops))

    def _triage(self, url: str, depth: int, hops: int) -> None:
        """The checks that need no network; a URL that passes waits in its host's queue."""
        if not url.startswith(("http://", "https://")):
            return self._finish(url, "dropped:refused:scheme")
        if not self._in_scope(url):
            return self._finish(url, "dropped:out_of_scope")
        if depth > self.p.max_depth:
            return self._finish(url, "dropped:too_deep")
        if hops > self.p.max_redirects:
            return self._finish(url, "dropped:too_many_redirects")
        if self.pages_started >= self.p.max_pages:
            return self._finish(url, "dropped:max_pages")
        host = self.hosts.setdefault(host_key(url), _Host(delay=self.p.delay_seconds))
        host.queue.append((url, depth, hops))

    def _in_scope(self, url: str) -> bool:
        hostname = urlsplit(url).hostname or ""
        if not any(hostname == d or hostname.endswith("." + d) for d in self.allowed):
            return False
        if self.include and not any(r.search(url) for r in self.include):
            return False
        return not any(r.search(url) for r in self.exclude)

    # --- the loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        futures: dict[Future, tuple[str, str]] = {}  # future -> (host key, "robots"|"page")
        with ThreadPoolExecutor(self.p.workers, thread_name_prefix="crawl") as pool:
            while True:
                while self.incoming:
                    self._triage(*self.incoming.popleft())
                if self.pages_started >= self.p.max_pages:
                    self._drain_max_pages()
                wait_for = self._schedule(pool, futures)
                if not futures and not self._queued():
                    break
                # Wake for the next checkpoint too: pages may be in flight for a while.
                checkpoint_in = self.p.checkpoint_seconds - (time.monotonic() - self.last_commit)
                wait_for = max(0.0, min(checkpoint_in, HOUR if wait_for is None else wait_for))
                done, _ = wait(list(futures), timeout=wait_for, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: futures[f]):
                    key, job = futures.pop(future)
                    host = self.hosts[key]
                    host.active -= 1
                    if job == "robots":
                        self._robots_done(host, future.result())
                    else:
                        self._page_done(host, future.result())
                if self.warc.size >= self.p.warc_max_bytes or \
                        time.monotonic() - self.last_commit >= self.p.checkpoint_seconds:
                    self._commit()

    def _queued(self) -> bool:
        return bool(self.incoming) or any(h.queue or h.retries for h in self.hosts.values())

    def _drain_max_pages(self) -> None:
        for host in self.hosts.values():
            while host.queue:
                url, _, _ = host.queue.popleft()
                self._finish(url, "dropped:max_pages")

    def _schedule(self, pool: ThreadPoolExecutor, futures: dict) -> float | None:
        """Start every job politeness allows now; return how long until the next may start."""
        now = time.monotonic()
        soonest = None
        for key in sorted(self.hosts):
            host = self.hosts[key]
            while (host.retries or host.queue) and len(futures) < self.p.workers:
                # A retry passed robots.txt already (its host's status is "ok").
                retry = bool(host.retries)
                if not retry and host.robots_status is None and host.robots_busy:
                    break
                if not retry and host.robots_status not in (None, "ok"):
                    self._settle_without_fetch(host)
                    break
                if not retry and host.robots_status == "ok" and not self._allowed_first(host):
                    continue
                if host.active >= self.p.max_per_host:
                    break
                if now < host.next_time:
                    soonest = host.next_time if soonest is None else min(soonest, host.next_time)
                    break
                if host.robots_status is None:
                    host.robots_busy = True
                    job = pool.submit(self._fetch_robots, key, host)
                    futures[job] = (key, "robots")
                    self.robots_fetches += 1
                elif retry:
                    url, depth, hops = host.retries.popleft()
                    self.retries_started += 1
                    job = pool.submit(self._fetch_page, url, depth, hops, host)
                    futures[job] = (key, "page")
                elif self.pages_started >= self.p.max_pages:
                    break
                else:
                    url, depth, hops = host.queue.popleft()
                    self.pages_started += 1
                    job = pool.submit(self._fetch_page, url, depth, hops, host)
                    futures[job] = (key, "page")
                host.active += 1
                host.next_time = now + host.delay
        return None if soonest is None else max(0.0, soonest - now)

    def _allowed_first(self, host: _Host) -> bool:
        """Settle the head of the queue if robots.txt forbids it; True if it may be fetched."""
        url = host.queue[0][0]
        if host.robots.can_fetch(url, self.p.user_agent):
            return True
        host.queue.popleft()
        self._finish(url, "dropped:robots_disallowed")
        return False

    def _settle_without_fetch(self, host: _Host) -> None:
        key = host.robots_status
        while host.queue:
            url, _, _ = host.queue.popleft()
            self._finish(url, key, host.robots_detail)

    # --- jobs (worker threads: they touch no crawler state but their host's timing) -------

    def _fetch_robots(self, key: str, host: _Host) -> tuple[str, Any, list[Response], str | None]:
        """robots.txt of one host, following up to 5 redirects (RFC 9309)."""
        try:
            return self._robots_chain(robots_url(key + "/"))
        finally:
            self._spaced(host)

    def _spaced(self, host: _Host) -> None:
        """The next request to `host` waits the delay after this one finished, too."""
        with self._lock:
            host.next_time = max(host.next_time, time.monotonic() + host.delay)

    def _robots_chain(self, url: str) -> tuple[str, Any, list[Response], str | None]:
        exchanges: list[Response] = []
        for _ in range(ROBOTS_MAX_REDIRECTS + 1):
            try:
                # Past the cap the prefix is parsed (RFC 9309 2.5), never "allow all".
                r = self.fetcher.fetch(url, max_bytes=ROBOTS_MAX_BYTES, truncate=True)
            except Refused as exc:
                return f"dropped:{exc.reason}", None, exchanges, str(exc)
            except FetchError as exc:  # unreachable (or too slow): disallow all
                return "dropped:robots_unavailable", robots_rules(None, b""), exchanges, str(exc)
            exchanges.append(r)
            location = r.header("location")
            if 300 <= r.status < 400 and location:
                try:
                    url = normalize_url(location, url)
                except BadURL:
                    break
                continue
            if r.status >= 500:
                return "dropped:robots_unavailable", None, exchanges, None
            return "ok", robots_rules(r.status, r.body, r.truncated), exchanges, None
        # Too many redirects: RFC 9309 treats this as "unavailable" -> allow all.
        return "ok", robots_rules(404, b""), exchanges, None

    def _robots_done(self, host: _Host, result: tuple) -> None:
        status, rules, exchanges, detail = result
        host.robots_busy = False
        host.robots_status = status
        host.robots_detail = detail
        host.robots = rules
        for r in exchanges:
            self.warc.write_exchange(r)
        if status == "ok" and self.p.respect_crawl_delay:
            crawl_delay = rules.crawl_delay(self.p.user_agent)
            if crawl_delay:
                host.delay = max(host.delay, min(float(crawl_delay), self.p.max_crawl_delay))

    def _fetch_page(self, url: str, depth: int, hops: int, host: _Host) -> _Outcome:
        outcome = _Outcome(url)
        try:
            r = self.fetcher.fetch(url, accept_types=tuple(self.p.content_types))
        except Refused as exc:
            outcome.reason = f"dropped:{exc.reason}"
            return outcome
        except WrongType:
            outcome.reason = "dropped:content_type"
            return outcome
        except TooLarge:
            outcome.reason = "dropped:oversize:body"
            return outcome
        except FetchError as exc:
            outcome.reason, outcome.error = f"error:fetch_error:{exc.kind}", str(exc)
            return outcome
        finally:
            self._spaced(host)
        outcome.exchanges.append(r)
        location = r.header("location")
        if 300 <= r.status < 400 and location:
            outcome.reason = "dropped:redirect"
            outcome.links = [location]
        elif r.status in RETRY_STATUSES:
            outcome.reason = f"dropped:http_{r.status}"
            outcome.retry_after = retry_after_seconds(r.header("retry-after"))
        elif 200 <= r.status < 300:
            outcome.kept = True
            links = _links(r.body, url, self.p.follow_nofollow)
            outcome.links = links[:self.p.max_links_per_page]
            outcome.links_over_cap = len(links) - len(outcome.links)
        else:
            outcome.reason = f"dropped:http_{r.status}"
        return outcome

    def _slow_down(self, host: _Host, retry_after: float | None, retries_before: int) -> None:
        """After a 429/503: wait its Retry-After (or back off), and keep the host slower."""
        if retry_after is None:
            retry_after = max(1.0, self.p.delay_seconds) * 2 ** retries_before
        wait_for = min(retry_after, self.p.max_crawl_delay)
        with self._lock:
            host.delay = max(host.delay, wait_for)
            host.next_time = max(host.next_time, time.monotonic() + wait_for)

    def _page_done(self, host: _Host, outcome: _Outcome) -> None:
        for r in outcome.exchanges:
            self.warc.write_exchange(r)
        self.links_over_cap += outcome.links_over_cap
        depth, hops = self.seen[outcome.url]
        status = outcome.exchanges[0].status if outcome.exchanges else None
        if status in RETRY_STATUSES:
            done = self.retry_counts.get(outcome.url, 0)
            if done < self.p.max_retries:
                self.retry_counts[outcome.url] = done + 1
                self._slow_down(host, outcome.retry_after, done)
                host.retries.append((outcome.url, depth, hops))
                return
            outcome.reason = f"dropped:retries_exhausted:http_{status}"
        if outcome.reason == "dropped:redirect":
            for link in outcome.links:
                self._discover(link, outcome.url, depth, hops + 1)
        else:
            for link in outcome.links:
                self._discover(link, outcome.url, depth + 1, 0)
        self._finish(outcome.url, "kept:fetched" if outcome.kept else outcome.reason,
                     outcome.error, sum(len(r.body) for r in outcome.exchanges))


def _hosts(urls: list[str]) -> list[str]:
    hosts = []
    for url in urls:
        try:
            hosts.append(urlsplit(normalize_url(url)).hostname or "")
        except BadURL:
            continue
    return [h for h in hosts if h]


def _links(body: bytes, url: str, follow_nofollow: bool) -> list[str]:
    """Distinct absolute targets of <a href> and <area href> in page order, honouring
    meta robots nofollow."""
    import lxml.html
    from lxml.etree import ParserError

    try:
        doc = lxml.html.document_fromstring(body, base_url=url)
    except (ParserError, ValueError):
        return []
    if not follow_nofollow:
        for meta in doc.iter("meta"):
            if (meta.get("name") or "").lower() == "robots" and \
                    "nofollow" in (meta.get("content") or "").lower():
                return []
    base = next((b.get("href") for b in doc.iter("base") if b.get("href")), None)
    base = normalize_url(base, url) if base else url
    links = []
    for element in doc.iter("a", "area"):
        href = element.get("href")
        if not href or href.startswith(("#", "javascript:", "mailto:", "tel:", "data:")):
            continue
        if not follow_nofollow and "nofollow" in (element.get("rel") or "").lower().split():
            continue
        links.append(_join(base, href))
    return list(dict.fromkeys(links))


def _join(base: str, href: str) -> str:
    return urljoin(base, href.strip())


class _WarcFile:
    """The WARC file being written: opened on the first record, committed when rotated."""

    def __init__(self, stage_dir: Path, prefix: str, user_agent: str):
        self.stage_dir = stage_dir
        self.prefix = prefix
        self.user_agent = user_agent
        self.index = 0
        self._file = None
        self._writer = None
        self._tmp: Path | None = None
        self._records = 0

    @property
    def final(self) -> Path:
        return self.stage_dir / f"{self.prefix}-{self.index:05d}.warc.gz"

    @property
    def size(self) -> int:
        return self._file.tell() if self._file is not None else 0

    def _open(self) -> None:
        from warcio.warcwriter import WARCWriter

        self.stage_dir.mkdir(parents=True, exist_ok=True)
        self._tmp = tmp_path_for(self.final)
        self._file = open(self._tmp, "wb")
        self._writer = WARCWriter(self._file, gzip=True, warc_version="WARC/1.1")
        info = self._writer.create_warcinfo_record(self.final.name, {
            "software": SOFTWARE,
            "format": "WARC File Format 1.1",
            "http-header-user-agent": self.user_agent,
            "robots": "obey",
        })
        self._writer.write_record(info)
        self._records = 0

    def write_exchange(self, r: Response) -> None:
        from warcio.statusandheaders import StatusAndHeaders

        if self._writer is None:
            self._open()
        date = datetime.fromtimestamp(r.started, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        headers = []
        for name, value in r.headers:
            lower = name.lower()
            if lower in ("content-encoding", "transfer-encoding", "content-length"):
                headers.append((f"X-Crawler-{name}", value))
            else:
                headers.append((name, value))
        headers.append(("Content-Length", str(len(r.body))))
        http = StatusAndHeaders(f"{r.status} {r.reason}".strip(), headers,
                                protocol=r.http_version)
        response = self._writer.create_warc_record(
            r.url, "response", payload=BytesIO(r.body), http_headers=http,
            warc_headers_dict={"WARC-Date": date, "WARC-IP-Address": r.address,
                               **({"WARC-Truncated": "length"} if r.truncated else {})},
        )
        request_http = StatusAndHeaders(r.request_line, r.request_headers, is_http_request=True)
        request = self._writer.create_warc_record(
            r.url, "request", payload=BytesIO(b""), http_headers=request_http,
            warc_headers_dict={
                "WARC-Date": date,
                "WARC-Concurrent-To": response.rec_headers.get_header("WARC-Record-ID"),
            },
        )
        self._writer.write_record(response)
        self._writer.write_record(request)
        self._records += 2

    def commit(self) -> FileEntry | None:
        if self._writer is None:
            return None
        self._file.close()
        entry = commit_artifact(self.stage_dir, self._tmp, self.final, docs=self._records)
        self._file = self._writer = self._tmp = None
        self.index += 1
        return entry

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._tmp.unlink(missing_ok=True)
            self._file = self._writer = self._tmp = None
