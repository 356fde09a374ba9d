"""Ingest test helpers: WARC records and files built in memory with warcio."""

from __future__ import annotations

import struct
import zlib
from io import BytesIO


def html_response(url: str, body: bytes, content_type: str = "text/html; charset=utf-8",
                  status: str = "200 OK"):
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    headers = StatusAndHeaders(status, [("Content-Type", content_type),
                                        ("Content-Length", str(len(body)))], protocol="HTTP/1.1")
    writer = WARCWriter(BytesIO(), gzip=False)
    return writer.create_warc_record(url, "response", payload=BytesIO(body), http_headers=headers)


def warc_bytes(records, gzip_members: bool = True) -> tuple[bytes, list[int]]:
    """A WARC file and the offset where each record starts."""
    from warcio.warcwriter import WARCWriter

    out = BytesIO()
    writer = WARCWriter(out, gzip=gzip_members)
    offsets = []
    for record in records:
        offsets.append(out.tell())
        writer.write_record(record)
    return out.getvalue(), offsets


def pages(n: int):
    return [html_response(f"http://site.test/p{i}",
                          f"<html><body><p>page number {i}</p></body></html>".encode())
            for i in range(n)]


# ---------------------------------------------------------------------------------------
# Hostile WARC files, built small: a gigabyte of output costs about a megabyte here.

HTML_UNIT = b"<div>bomb</div>\n" * (1 << 16)  # 1 MiB of HTML, a whole number of periods


def gzip_member(head: bytes, unit: bytes, repeats: int, tail: bytes = b"") -> bytes:
    """One gzip member of `head + unit * repeats + tail`, compressed without building it.

    A full flush after each `unit` resets the compressor, so every unit after the first
    compresses to the same bytes: they are computed once and repeated. Only the CRC walks
    the whole (never stored) input.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    blocks = [c.compress(unit) + c.flush(zlib.Z_FULL_FLUSH) for _ in range(min(repeats, 3))]
    if repeats >= 3:
        assert blocks[1] == blocks[2], "the compressor did not reach a periodic state"
    body = b"".join(blocks) + (blocks[-1] * (repeats - 3) if repeats > 3 else b"")
    end = c.compress(tail) + c.flush()
    crc = zlib.crc32(head)
    for _ in range(repeats):
        crc = zlib.crc32(unit, crc)
    crc = zlib.crc32(tail, crc)
    size = len(head) + len(unit) * repeats + len(tail)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + first + body + end + struct.pack("<II", crc, size & 0xFFFFFFFF)


def warc_head(url: str, length: int, index: int) -> bytes:
    return (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:00000000-0000-0000-"
            f"0000-{index:012d}>\r\nWARC-Date: 2024-01-01T00:00:00Z\r\nWARC-Target-URI: {url}"
            f"\r\nContent-Type: application/http; msgtype=response\r\nContent-Length: {length}"
            "\r\n\r\n").encode()


def http_head(*headers: str) -> bytes:
    return ("HTTP/1.1 200 OK\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


def write_hostile_warc(path, bomb_mib: int = 1024, chunked_mib: int = 100,
                       warc_bomb_mib: int = 1024, huge_page_mib: int = 5) -> list[str]:
    """A .warc.gz (one gzip member per record) of normal pages around hostile records.

    - `/bomb`: an HTTP body with Content-Encoding gzip that inflates to `bomb_mib` MiB;
    - `/chunked`: a Transfer-Encoding chunked body of `chunked_mib` 1 MiB chunks;
    - `/warc-bomb`: a record whose gzip member inflates to `warc_bomb_mib` MiB of HTML;
    - `/huge`: a plain `huge_page_mib` MiB HTML page (small enough to ingest, too big to
      extract).
    Returns the URLs in file order.
    """
    page = b"<html><head><title>Normal</title></head><body>" + b"".join(
        b"<p>A perfectly ordinary paragraph of prose number %d, long enough to keep.</p>" % i
        for i in range(20)) + b"</body></html>"
    members, urls = [], []

    def record(url: str, block_head: bytes, unit: bytes = b"", repeats: int = 0,
               tail: bytes = b"") -> None:
        length = len(block_head) + len(unit) * repeats + len(tail)
        members.append(gzip_member(warc_head(url, length, len(urls)) + block_head, unit,
                                   repeats, tail + b"\r\n\r\n"))
        urls.append(url)

    record("http://site.test/first", http_head("Content-Type: text/html") + page)
    bomb = gzip_member(b"<html><body>", HTML_UNIT, bomb_mib)
    record("http://site.test/bomb", http_head("Content-Type: text/html",
                                              "Content-Encoding: gzip") + bomb)
    chunk = b"%x\r\n" % len(HTML_UNIT) + HTML_UNIT + b"\r\n"
    record("http://site.test/chunked", http_head("Content-Type: text/html",
                                                 "Transfer-Encoding: chunked"),
           chunk, chunked_mib, b"0\r\n\r\n")
    record("http://site.test/warc-bomb", http_head("Content-Type: text/html"), HTML_UNIT,
           warc_bomb_mib)
    record("http://site.test/huge", http_head("Content-Type: text/html") + b"<html><body>",
           HTML_UNIT, huge_page_mib, b"</body></html>")
    record("http://site.test/last", http_head("Content-Type: text/html") + page)
    with open(path, "wb") as f:
        for member in members:
            f.write(member)
    return urls
