"""Crawl test helpers: a local route server and a crawl config builder.

`RouteServer` serves a dict of routes on 127.0.0.1 and logs every request with its
arrival time, so tests assert on what the server saw. A route is `(status, headers,
body)` or a callable taking the request handler and returning one; a callable may also
write the whole answer itself and return None (a streamed or endless body).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def page(title: str, links: list[str] = (), body: str = "") -> tuple[int, dict, bytes]:
    anchors = "".join(f'<a href="{href}">{href}</a> ' for href in links)
    html = f"<html><head><title>{title}</title></head><body><h1>{title}</h1>" \
           f"<p>{body or title}</p>{anchors}</body></html>"
    return 200, {"Content-Type": "text/html; charset=utf-8"}, html.encode()


def redirect(location: str, status: int = 301) -> tuple[int, dict, bytes]:
    return status, {"Location": location, "Content-Type": "text/html"}, b"moved"


class RouteServer:
    """routes: path -> (status, headers, body); unknown paths answer 404."""

    def __init__(self, routes: dict):
        self.routes = routes
        self.log: list[tuple[str, float]] = []
        self.user_agents: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                server.log.append((self.path, time.monotonic()))
                server.user_agents.add(self.headers.get("User-Agent", ""))
                route = server.routes.get(self.path)
                if callable(route):
                    route = route(self)
                    if route is None:  # the route wrote its own answer
                        return
                status, headers, body = route or (404, {"Content-Type": "text/html"}, b"nope")
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def paths(self) -> list[str]:
        return [p for p, _ in self.log]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def crawl_config(tmp_path: Path, seeds: list[str], **params) -> dict:
    base = dict(seeds=seeds, contact_url="https://example.org/lmforge-crawler",
                delay_seconds=0.0, allow_private=True, max_depth=5)
    base.update(params)
    return {"name": "crawltest", "run_dir": str(tmp_path / "run"),
            "stages": {"crawl": {"kind": "crawl", "max_error_fraction": 1.0, "params": base}}}


def crawl_stats(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "run" / "crawl" / "stats.json").read_text())
