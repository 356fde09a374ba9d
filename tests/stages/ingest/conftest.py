"""Ingest test helpers: WARC records and files built in memory with warcio."""

from __future__ import annotations

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
