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
  Rules are parsed by Protego (longest-match precedence, wildcards, `$`).
- `Fetcher.fetch` does one request and never follows redirects itself (the crawler queues
  the target so every hop passes scope, robots, politeness and the guard again). It asks
  for gzip/deflate only and inflates with a bounded `zlib` output size, so a gzip bomb
  costs at most `max_bytes` of memory.

Memory of one fetch: the body is read 64 KiB at a time (urllib3 undoes chunked framing;
its chunk-size lines are capped at 64 KiB, http.client caps header lines and counts) and
kept up to `max_bytes` after decompression: a declared Content-Length over the cap is
refused before reading, and a body that grows past it (an endless chunked answer, a
gzip bomb) raises `TooLarge` at the cap, closing the connection. About 2 x `max_bytes`
per fetch in flight (the buffer and the body returned).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
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


def robots_rules(status: int | None, body: bytes):
    """A Protego parser for a robots.txt answer (status None: unreachable), per RFC 9309."""
    from protego import Protego

    if status is None or status >= 500:
        return Protego.parse("User-agent: *\nDisallow: /\n")
    if status >= 400:
        return Protego.parse("")
    return Protego.parse(body[:ROBOTS_MAX_BYTES].decode("utf-8", "replace"))


def robots_url(url: str) -> str:
    return f"{host_key(url)}/robots.txt"


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

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def mime(self) -> str:
        return (self.header("content-type") or "").split(";")[0].strip().lower()


class Fetcher:
    """GET one URL through the guard, with a body cap; connection pools kept per address."""

    def __init__(self, policy: AddressPolicy, user_agent: str, timeout: float, max_bytes: int):
        self.policy = policy
        self.user_agent = user_agent
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._pools: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def fetch(self, url: str, accept_types: tuple[str, ...] | None = None,
              max_bytes: int | None = None) -> Response:
        """One GET. Raises Refused, FetchError, TooLarge, or `WrongType` via accept_types."""
        import urllib3

        limit = self.max_bytes if max_bytes is None else max_bytes
        host, port, address = self.policy.check(url)
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
            raise FetchError(_transport_kind(exc), f"{url}: {exc}") from None
        complete = False
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
                    and int(declared) > limit:
                raise TooLarge(f"{url}: Content-Length {declared} > {limit}")
            response.body = _read_body(r, response.content_encoding, limit, url)
            complete = True
            return response
        except urllib3.exceptions.HTTPError as exc:
            raise FetchError(_transport_kind(exc), f"{url}: {exc}") from None
        finally:
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
                timeout = urllib3.Timeout(connect=self.timeout, read=self.timeout)
                if scheme == "https":
                    pool = urllib3.HTTPSConnectionPool(
                        address, port, timeout=timeout, maxsize=4, block=False,
                        server_hostname=host, assert_hostname=host)
                else:
                    pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout,
                                                      maxsize=4, block=False)
                self._pools[key] = pool
            return pool

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()


class WrongType(Exception):
    """A 2xx answer whose content type is not in the allow list."""


def _read_body(r, encoding: str | None, limit: int, url: str) -> bytes:
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
            if inflate.unconsumed_tail and len(out) > limit:
                raise TooLarge(f"{url}: body inflates past {limit} bytes")
        if len(out) > limit:
            raise TooLarge(f"{url}: body larger than {limit} bytes")
    if inflate is not None:
        out += inflate.flush()
        if len(out) > limit:
            raise TooLarge(f"{url}: body larger than {limit} bytes")
    return bytes(out)


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
