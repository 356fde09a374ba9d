"""Web helpers for the crawler: URL normalization, the SSRF guard, robots.txt, one HTTP fetch.

Choices that matter:
- `normalize_url` makes equal URLs compare equal for the seen-set: lower-case scheme and
  host, IDNA host, numeric IPv4 forms (`2130706433`, `0x7f.1`) rewritten dotted (so the
  SSRF guard sees what a resolver would), default port dropped, dot segments removed,
  percent-escapes upper-cased and unreserved ones decoded, fragment dropped. The query is
  kept as is: reordering it changes what some servers return.
- `AddressPolicy.check` resolves the host and refuses any scheme but http/https and any
  address that is not global unicast: loopback, private, link-local (cloud metadata at
  169.254.169.254), multicast, reserved, unspecified, and IPv4-mapped IPv6 judged by the
  IPv4 address inside. `Fetcher` then connects to the address it checked (never resolving
  again), so DNS rebinding cannot slip a private address in between check and connect.
- robots.txt follows RFC 9309 section 2.3.1: a 4xx answer means "allow all", a 5xx answer
  or an unreachable host means "disallow all"; the crawler follows up to 5 redirects for it.
  Rules are parsed by Protego (longest-match precedence, wildcards, `$`). A robots.txt is
  read up to `ROBOTS_MAX_BYTES` (500 KiB, the least RFC 9309 2.5 allows) and a longer one
  is cut there, at its last whole line, and parsed: the rules in that prefix are obeyed
  (never "allow all" because the file is big).
- `Fetcher.fetch` does one request and never follows redirects itself (the crawler queues
  the target so every hop passes scope, robots, politeness and the guard again). It asks
  for gzip/deflate only and inflates with a bounded `zlib` output size, so a gzip bomb
  costs at most `max_bytes` of memory.
- Time: `timeout` bounds the connect and each socket read, and `deadline` bounds the whole
  request (connect, headers and body; not the DNS lookup of the guard). A per-read timeout
  alone never fires on a server that trickles a byte a second, so a timer shuts the
  request's socket down at the deadline; that wakes the blocked read, and the fetch raises
  `FetchError("deadline")`. The connection subclass that hands its socket to the timer is
  the only hook into urllib3.
- `retry_after_seconds` reads a `Retry-After` header (delay-seconds or an HTTP-date).

Memory of one fetch: the body is read 64 KiB at a time (urllib3 undoes chunked framing;
its chunk-size lines are capped at 64 KiB, http.client caps header lines and counts) and
kept up to `max_bytes` after decompression: a declared Content-Length over the cap is
refused before reading, and a body that grows past it (an endless chunked answer, a
gzip bomb) raises `TooLarge` at the cap, closing the connection (or, with `truncate`, the
prefix up to the cap is returned, marked `truncated`). About 2 x `max_bytes` per fetch in
flight (the buffer and the body returned), plus one timer thread until it ends.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit, urlunsplit

ALLOWED_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
ROBOTS_MAX_REDIRECTS = 5  # RFC 9309 2.3.1.2: "at least five consecutive redirects"
ROBOTS_MAX_BYTES = 500 * 1024  # RFC 9309 2.5: parse at least 500 KiB

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$")
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE = _PATH_SAFE + "?"


class BadURL(ValueError):
    """A URL that cannot be normalized (no host, bad port, undecodable host)."""


class Refused(Exception):
    """The SSRF guard refused a URL; `reason` is the counted reason (`refused:loopback`)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


class FetchError(Exception):
    """A fetch failed in transport; `kind` names it (`timeout`, `connection`, `dns`, ...)."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


class TooLarge(Exception):
    """The body (after decompression) is larger than the cap."""


# ---------------------------------------------------------------------------------------
# URL normalization


def normalize_url(url: str, base: str | None = None) -> str:
    """The canonical form of `url` (resolved against `base`), for the seen-set and scope."""
    url = url.strip()
    if base is not None:
        url = urljoin(base, url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadURL(f"{url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        # Not ours to canonicalize; the guard refuses it by scheme.
        return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    host = _normalize_host(parts.hostname or "", url)
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    path = _normalize_escapes(_remove_dot_segments(parts.path or "/"), _PATH_SAFE)
    query = _normalize_escapes(parts.query, _QUERY_SAFE)
    return urlunsplit((scheme, netloc, path, query, ""))


def _normalize_host(host: str, url: str) -> str:
    host = host.rstrip(".").lower()
    if not host:
        raise BadURL(f"{url!r}: no host")
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.split("%")[0]).compressed
        except ValueError:
            raise BadURL(f"{url!r}: bad IPv6 host") from None
    if _NUMERIC_HOST.match(host):
        try:  # inet_aton reads the same decimal/octal/hex forms a resolver accepts
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            raise BadURL(f"{url!r}: bad numeric host {host!r}") from None
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise BadURL(f"{url!r}: host {host!r} is not a valid domain name") from None


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4, keeping a trailing slash."""
    out: list[str] = []
    segments = path.split("/")
    for i, seg in enumerate(segments):
        if seg == ".":
            if i == len(segments) - 1:
                out.append("")
            continue
        if seg == "..":
            if len(out) > 1:
                out.pop()
            if i == len(segments) - 1:
                out.append("")
            continue
        out.append(seg)
    result = "/".join(out)
    return result if result.startswith("/") else "/" + result


def _normalize_escapes(text: str, safe: str) -> str:
    from urllib.parse import quote

    def fix(m: re.Match) -> str:
        char = chr(int(m.group(1), 16))
        return char if char in _UNRESERVED else f"%{m.group(1).upper()}"

    return quote(_ESCAPE.sub(fix, text), safe=safe)


def host_key(url: str) -> str:
    """`scheme://host[:port]`: the unit of politeness and of robots.txt."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# ---------------------------------------------------------------------------------------
# The SSRF guard


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses the crawler may connect to."""

    allow_private: bool = False
    allowed_networks: tuple[str, ...] = ()  # CIDRs allowed even though not global
    resolver: object = field(default=socket.getaddrinfo, compare=False, repr=False)

    def check(self, url: str) -> tuple[str, int, str]:
        """(host, port, address to connect to) for `url`, or raise Refused / FetchError."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise Refused("refused:scheme", f"{url}: scheme {scheme or '(none)'!r} is not http/https")
        host = parts.hostname or ""
        port = parts.port or DEFAULT_PORTS[scheme]
        try:
            infos = self.resolver(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise FetchError("dns", f"{host}: {exc}") from None
        addresses = sorted({info[4][0] for info in infos})
        if not addresses:
            raise FetchError("dns", f"{host}: no address")
        for address in addresses:  # every address: a resolver may rotate between them
            reason = self.refusal(address)
            if reason:
                raise Refused(reason, f"{url}: {host} resolves to {address} ({reason})")
        return host, port, addresses[0]

    def refusal(self, address: str) -> str | None:
        """The refusal reason for one address, or None when it may be contacted."""
        if self.allow_private:
            return None
        ip = ipaddress.ip_address(address.split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in ipaddress.ip_network(n, strict=False) for n in self.allowed_networks):
            return None
        if ip.is_loopback:
            return "refused:loopback"
        if ip.is_link_local:
            return "refused:link_local"
        if ip.is_multicast:
            return "refused:multicast"
        if ip.is_unspecified or ip.is_reserved:
            return "refused:reserved"
        if ip.is_private or not ip.is_global:
            return "refused:private"
        return None


# ---------------------------------------------------------------------------------------
# robots.txt


def robots_rules(status: int | None, body: bytes, truncated: bool = False):
    """A Protego parser for a robots.txt answer (status None: unreachable), per RFC 9309.
    A body longer than ROBOTS_MAX_BYTES, or `truncated` by the fetch, is parsed up to its
    last whole line within the cap: a rule cut in half could allow more than it says. One
    without a whole line in the cap is not a robots.txt that can be read: disallow all."""
    from protego import Protego

    disallow_all = "User-agent: *\nDisallow: /\n"
    if status is None or status >= 500:
        return Protego.parse(disallow_all)
    if status >= 400:
        return Protego.parse("")
    if truncated or len(body) > ROBOTS_MAX_BYTES:
        body = body[:ROBOTS_MAX_BYTES]
        body = body[:max(body.rfind(b"\n"), body.rfind(b"\r")) + 1]
        if not body:
            return Protego.parse(disallow_all)
    return Protego.parse(body.decode("utf-8", "replace"))


def robots_url(url: str) -> str:
    return f"{host_key(url)}/robots.txt"


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (RFC 9110 10.2.3: delay-seconds or an
    HTTP-date); None when absent or unreadable, 0 for a date in the past."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is GMT; parsedate leaves "-0000" naive
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# ---------------------------------------------------------------------------------------
# One HTTP request


@dataclass
class Response:
    """One HTTP exchange as the WARC writer needs it."""

    url: str
    address: str
    status: int
    reason: str
    http_version: str
    headers: list[tuple[str, str]]
    body: bytes  # content-decoded
    request_line: str
    request_headers: list[tuple[str, str]]
    content_encoding: str | None
    started: float  # time.time() when the request was sent
    truncated: bool = False  # the body is the first `max_bytes` of a longer one

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def mime(self) -> str:
        return (self.header("content-type") or "").split(";")[0].strip().lower()


class Fetcher:
    """GET one URL through the guard, with a body cap and a deadline; connection pools kept
    per address. `timeout` bounds the connect and each read, `deadline` the whole request
    (default: 3 x `timeout`)."""

    def __init__(self, policy: AddressPolicy, user_agent: str, timeout: float, max_bytes: int,
                 deadline: float | None = None):
        self.policy = policy
        self.user_agent = user_agent
        self.timeout = timeout
        self.deadline = 3 * timeout if deadline is None else deadline
        self.max_bytes = max_bytes
        self._pools: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def fetch(self, url: str, accept_types: tuple[str, ...] | None = None,
              max_bytes: int | None = None, truncate: bool = False) -> Response:
        """One GET. Raises Refused, FetchError, TooLarge, or `WrongType` via accept_types.
        With `truncate`, a body past the cap is not an error: its first `max_bytes` come
        back with `Response.truncated` set."""
        host, port, address = self.policy.check(url)
        deadline = _Deadline(self.deadline)
        _current.deadline = deadline
        try:
            return self._request(url, host, port, address, accept_types,
                                 self.max_bytes if max_bytes is None else max_bytes,
                                 truncate, deadline)
        finally:
            deadline.finish()
            _current.deadline = None

    def _request(self, url: str, host: str, port: int, address: str,
                 accept_types: tuple[str, ...] | None, limit: int, truncate: bool,
                 deadline: _Deadline) -> Response:
        import urllib3

        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = parts.netloc
        headers = [
            ("Host", netloc),
            ("User-Agent", self.user_agent),
            ("Accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.5"),
            ("Accept-Encoding", "gzip, deflate"),
        ]
        pool = self._pool(parts.scheme, host, port, address)
        started = time.time()
        try:
            r = pool.urlopen("GET", target, headers=dict(headers), redirect=False,
                             retries=False, preload_content=False, decode_content=False,
                             assert_same_host=False)
        except urllib3.exceptions.HTTPError as exc:
            raise deadline.error(url) or FetchError(_transport_kind(exc), f"{url}: {exc}") from None
        complete = False
        if deadline.expired:  # the headers ended at the shutdown's EOF: cut short
            r.close()
            raise deadline.error(url)
        try:
            response = Response(
                url=url, address=address, status=r.status, reason=r.reason or "",
                http_version="HTTP/1.0" if r.version == 10 else "HTTP/1.1",
                headers=list(r.headers.items()), body=b"",
                request_line=f"GET {target} HTTP/1.1", request_headers=headers,
                content_encoding=(r.headers.get("content-encoding") or "").strip().lower() or None,
                started=started,
            )
            if accept_types is not None and 200 <= r.status < 300:
                if response.mime not in accept_types:
                    raise WrongType(response.mime or "(none)")
            declared = r.headers.get("content-length")
            if declared and declared.isdigit() and response.content_encoding is None \
                    and int(declared) > limit and not truncate:
                raise TooLarge(f"{url}: Content-Length {declared} > {limit}")
            response.body, response.truncated = _read_body(
                r, response.content_encoding, limit, url, truncate)
            # Checked after the read too: a body without Content-Length or chunks ends at
            # the EOF the shutdown causes, and would pass for complete.
            deadline.finish()
            error = deadline.error(url)
            if error:
                raise error
            complete = not response.truncated
            return response
        except urllib3.exceptions.HTTPError as exc:
            raise deadline.error(url) or FetchError(_transport_kind(exc), f"{url}: {exc}") from None
        finally:
            # The timer is stopped before the connection can go back to the pool.
            deadline.finish()
            if complete:
                r.release_conn()
            else:  # an aborted body leaves the connection mid-stream: never reuse it
                r.close()

    def _pool(self, scheme: str, host: str, port: int, address: str):
        import urllib3

        key = (scheme, host, port, address)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                # The deadline timer can only shut a socket that exists: it bounds the
                # connect through the connect timeout.
                timeout = urllib3.Timeout(connect=min(self.timeout, self.deadline),
                                          read=self.timeout)
                if scheme == "https":
                    pool = urllib3.HTTPSConnectionPool(
                        address, port, timeout=timeout, maxsize=4, block=False,
                        server_hostname=host, assert_hostname=host)
                else:
                    pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout,
                                                      maxsize=4, block=False)
                pool.ConnectionCls = _deadline_connection(pool.ConnectionCls)
                self._pools[key] = pool
            return pool

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()


class WrongType(Exception):
    """A 2xx answer whose content type is not in the allow list."""


class _Deadline:
    """The total time of one request: when it passes, the socket the request uses is shut
    down, which wakes a read blocked on it. `finish` disarms it for good, so a connection
    that goes back to the pool is never shut afterwards."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._sock = None
        self._finished = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def attach(self, sock) -> None:
        with self._lock:
            self._sock = sock
            if self.expired:
                _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.expired = True
            if self._sock is not None:
                _shutdown(self._sock)

    def finish(self) -> None:
        with self._lock:
            self._finished = True
        self._timer.cancel()

    def error(self, url: str) -> FetchError | None:
        if not self.expired:
            return None
        return FetchError("deadline", f"{url}: not done within the deadline of {self.seconds:g} s")


_current = threading.local()  # .deadline: the _Deadline of the fetch on this thread


def _shutdown(sock) -> None:
    try:  # socket.socket's own shutdown: for TLS too, it only ends the TCP stream
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:  # already closed or never connected
        pass


def _attach_to_deadline(sock) -> None:
    deadline = getattr(_current, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.attach(sock)


@functools.cache
def _deadline_connection(base: type) -> type:
    """urllib3's connection class `base`, handing its socket to the deadline of the fetch
    running on this thread, when it connects and when it is reused for a request."""

    class DeadlineConnection(base):
        def connect(self):
            super().connect()
            _attach_to_deadline(self.sock)

        def request(self, *args, **kwargs):
            _attach_to_deadline(self.sock)
            return super().request(*args, **kwargs)

    DeadlineConnection.__name__ = DeadlineConnection.__qualname__ = f"Deadline{base.__name__}"
    return DeadlineConnection


def _read_body(r, encoding: str | None, limit: int, url: str,
               truncate: bool) -> tuple[bytes, bool]:
    """The content-decoded body and whether it was cut at `limit` (only with `truncate`;
    without it, passing the limit raises TooLarge)."""
    if encoding in (None, "identity"):
        inflate = None
    elif encoding in ("gzip", "x-gzip"):
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflate = _Deflate()
    else:
        raise FetchError("content_encoding", f"{url}: unsupported Content-Encoding {encoding!r}")
    out = bytearray()
    for chunk in r.stream(64 * 1024, decode_content=False):
        if inflate is None:
            out += chunk
        else:
            try:
                # max_length bounds what one chunk may inflate to: the bomb guard.
                out += inflate.decompress(chunk, limit + 1 - len(out))
            except zlib.error as exc:
                raise FetchError("content_encoding", f"{url}: {exc}") from None
        if len(out) > limit:
            return _over_limit(out, limit, url, truncate)
    if inflate is not None:
        out += inflate.flush()
        if len(out) > limit:
            return _over_limit(out, limit, url, truncate)
    return bytes(out), False


def _over_limit(out: bytearray, limit: int, url: str, truncate: bool) -> tuple[bytes, bool]:
    if not truncate:
        raise TooLarge(f"{url}: body larger than {limit} bytes (after decoding)")
    return bytes(out[:limit]), True


class _Deflate:
    """HTTP "deflate": zlib-wrapped by the spec, raw deflate from some servers."""

    def __init__(self):
        self._obj = None
        self.unconsumed_tail = b""

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._obj is None:
            raw = not data or (data[0] & 0x0F) != 8
            self._obj = zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
        out = self._obj.decompress(data, max(max_length, 1))
        self.unconsumed_tail = self._obj.unconsumed_tail
        return out

    def flush(self) -> bytes:
        return self._obj.flush() if self._obj is not None else b""


def _transport_kind(exc: Exception) -> str:
    import urllib3

    text = str(exc).lower()
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # subclasses a timeout error
        return "timeout" if "timed out" in text else "connection"
    if isinstance(exc, urllib3.exceptions.TimeoutError) or "timed out" in text:
        return "timeout"
    if isinstance(exc, urllib3.exceptions.SSLError):
        return "tls"
    if isinstance(exc, (urllib3.exceptions.ProtocolError,)) and "connection refused" not in text \
            and "reset" not in text:
        return "protocol"
    return "connection"
