"""The demo website: a small realistic site built from texts the project ships, served locally.

`build_site(out)` writes a static site (deterministic: same files, same bytes, every time):
- `index.html`, `about.html`, `privacy.html`: pages that are mostly navigation;
- `articles/*.html`: one article per chapter of the bundled King James Bible books and per
  part of Edith Wharton's "The Verdict" (public domain, `demo/corpus/`), each wrapped in
  the boilerplate a real site has: header navigation, breadcrumbs, a related-articles
  sidebar, tag links, a newsletter box and a footer;
- `tags/*.html`: tag listing pages (links only);
- `spam/*.html`: keyword-stuffed SEO pages linked from a "sponsored" footer box;
- `mirror/*.html`: near-duplicate copies of some articles under other boilerplate;
- `intl/*.html`: pages in German, French, Spanish, Russian (windows-1251, charset given
  only in the HTTP header) and Japanese (Shift_JIS, charset given only in a <meta> tag),
  from the vim tutorial (`demo/site/texts/`, Vim license);
- `private/*.html`: a members section that robots.txt disallows (linked from the index);
- `feed.xml` (not HTML), a redirect (`/old-index.html`) and one broken link, so the crawl
  funnel shows every kind of outcome.

`serve(directory, port)` serves it on 127.0.0.1 with the per-path headers and redirects
the build wrote to `_headers.json` / `_redirects.json` (files starting with `_` are not
served). `python -m demo.site serve --port 8765 -- CMD...` builds, serves while CMD runs,
then stops: that is how `make demo` crawls it with no internet.
"""

from __future__ import annotations

import gzip
import html
import json
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
TEXTS = Path(__file__).resolve().parent / "texts"
SITE_NAME = "The Commonplace Review"
SECTIONS = [("Home", "/index.html"), ("Scripture", "/tags/scripture.html"),
            ("Fiction", "/tags/fiction.html"), ("International", "/intl/index.html"),
            ("About", "/about.html")]
INTL = [("de", "Deutsch", "tutor.de.txt", "utf-8", "header"),
        ("fr", "Français", "tutor.fr.txt", "utf-8", "header"),
        ("es", "Español", "tutor.es.txt", "utf-8", "header"),
        ("ru", "Русский", "tutor.ru.cp1251", "windows-1251", "header"),
        ("ja", "日本語", "tutor.ja.sjis", "shift_jis", "meta")]
SPAM_WORDS = ["cheap", "watches", "replica", "best price", "casino", "bonus", "free spins",
              "loans", "fast cash", "buy now", "discount", "pills"]


def _articles() -> list[dict]:
    """Article records: slug, title, tags, paragraphs, date (all from the bundled corpus)."""
    articles = []
    with gzip.open(CORPUS / "kjv-chapters.jsonl.gz", "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            record = json.loads(line)
            _, book, chapter = record["id"].split("/")
            verses = re.split(r"(?<=[.;:?!])\s+(?=[A-Z])", record["text"])
            paragraphs = [" ".join(verses[j:j + 4]) for j in range(0, len(verses), 4)]
            articles.append({
                "slug": f"{book.lower()}-{int(chapter):02d}",
                "title": f"{book}, chapter {chapter}",
                "tags": ["scripture", book.lower()],
                "paragraphs": paragraphs,
                "date": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}",
            })
    verdict = []
    for line in (CORPUS / "verdict.jsonl").read_bytes().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the corpus carries deliberately malformed lines
        if str(record.get("id", "")).startswith("verdict/"):
            verdict.append(record["text"])
    parts = 6
    size = -(-len(verdict) // parts)
    for p in range(parts):
        articles.append({
            "slug": f"the-verdict-part-{p + 1}",
            "title": f"The Verdict, part {p + 1}",
            "tags": ["fiction", "wharton"],
            "paragraphs": verdict[p * size:(p + 1) * size],
            "date": f"1908-06-{p + 1:02d}",
        })
    return articles


def _layout(title: str, body: str, sidebar: str = "", charset_meta: str | None = "utf-8",
            lang: str = "en", extra_head: str = "") -> str:
    nav = "".join(f'<li><a href="{href}">{name}</a></li>' for name, href in SECTIONS)
    meta = f'<meta charset="{charset_meta}">' if charset_meta else ""
    return f"""<!DOCTYPE html>
<html lang="{lang}"><head>{meta}<title>{html.escape(title)} | {SITE_NAME}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">{extra_head}
<link rel="alternate" type="application/rss+xml" href="/feed.xml"></head>
<body><header class="site-header"><a class="logo" href="/index.html">{SITE_NAME}</a>
<nav class="main-nav"><ul>{nav}</ul></nav>
<form class="search" action="/search"><input name="q" placeholder="Search"></form></header>
<div class="layout"><main>{body}</main>
<aside class="sidebar">{sidebar}
<div class="newsletter"><h3>Newsletter</h3><p>Get the best of {SITE_NAME} every week.</p>
<a href="/about.html#subscribe">Subscribe</a></div></aside></div>
<footer class="site-footer"><div class="sponsored"><h4>Sponsored</h4><ul>
<li><a href="/spam/1.html">Cheap watches today</a></li><li><a href="/spam/4.html">Casino bonus</a></li>
</ul></div><p>&copy; 2024 {SITE_NAME}. All rights reserved.
<a href="/privacy.html">Privacy policy</a> &middot; <a href="/about.html">About us</a> &middot;
<a href="/old-index.html">Old home page</a> &middot; <a href="/feed.xml">RSS</a></p></footer></body></html>
"""


def _article_page(a: dict, related: list[dict], mirror_of: str | None = None) -> str:
    tags = " ".join(f'<a class="tag" href="/tags/{t}.html">#{t}</a>' for t in a["tags"])
    # A newline inside a paragraph is a line break (verse).
    paragraphs = "\n".join("<p>" + html.escape(p).replace("\n", "<br>\n") + "</p>"
                           for p in a["paragraphs"])
    crumbs = f'<nav class="breadcrumb"><a href="/index.html">Home</a> &rsaquo; ' \
             f'<a href="/tags/{a["tags"][0]}.html">{a["tags"][0].title()}</a></nav>'
    note = f'<p class="mirror-note">Mirrored from <a href="/articles/{mirror_of}.html">' \
           f"the original</a>.</p>" if mirror_of else ""
    body = f"""{crumbs}<article><h1>{html.escape(a["title"])}</h1>
<p class="byline">Published <time datetime="{a["date"]}">{a["date"]}</time></p>
{note}{paragraphs}
<p class="tags">{tags}</p></article>"""
    side = "<h3>Related articles</h3><ul>" + "".join(
        f'<li><a href="/articles/{r["slug"]}.html">{html.escape(r["title"])}</a></li>'
        for r in related) + "</ul>"
    head = f'<meta property="article:published_time" content="{a["date"]}">'
    return _layout(a["title"], body, side, extra_head=head)


def _spam_page(n: int) -> str:
    words = [SPAM_WORDS[(n * 7 + i * 3) % len(SPAM_WORDS)] for i in range(400)]
    stuffed = " ".join(w.upper() if i % 9 == 0 else w for i, w in enumerate(words))
    links = "".join(f'<a href="/spam/{1 + (n + k) % 6}.html">{SPAM_WORDS[k]}</a> '
                    for k in range(6))
    body = f"<h1>BEST {SPAM_WORDS[n % len(SPAM_WORDS)].upper()} DEALS!!! CLICK HERE</h1>" \
           f"<p>{stuffed}</p><p>{links}</p><p>Click here click here click here!!!</p>"
    return _layout(f"Best {SPAM_WORDS[n % len(SPAM_WORDS)]} {n}", body)


def build_site(out: Path) -> Path:
    """Write the demo site under `out`; return `out`."""
    articles = _articles()
    headers: dict[str, dict[str, str]] = {}
    files: dict[str, bytes] = {}

    def put(path: str, text: str | bytes) -> None:
        files[path] = text.encode("utf-8") if isinstance(text, str) else text

    for i, a in enumerate(articles):
        related = [articles[(i + k) % len(articles)] for k in (1, 2, 3)]
        put(f"articles/{a['slug']}.html", _article_page(a, related))
    for i, a in enumerate(articles[::12]):  # near-duplicates: same text, other chrome, one edit
        copy = dict(a, paragraphs=list(a["paragraphs"]))
        copy["paragraphs"][0] = copy["paragraphs"][0].replace(" the ", " this ", 1)
        put(f"mirror/{a['slug']}.html", _article_page(copy, [], mirror_of=a["slug"]))

    by_tag: dict[str, list[dict]] = {}
    for a in articles:
        for t in a["tags"]:
            by_tag.setdefault(t, []).append(a)
    for tag, items in sorted(by_tag.items()):
        listing = "".join(f'<li><a href="/articles/{a["slug"]}.html">{html.escape(a["title"])}</a>'
                          f" <small>{a['date']}</small></li>" for a in items)
        put(f"tags/{tag}.html", _layout(f"#{tag}", f"<h1>Tagged #{tag}</h1><ul>{listing}</ul>"))

    for n in range(1, 7):
        put(f"spam/{n}.html", _spam_page(n))

    intl_links = []
    for code, name, file, charset, where in INTL:
        text = (TEXTS / file).read_bytes().decode("utf-8" if charset == "utf-8" else charset)
        body = f"<article><h1>{name}</h1><pre>{html.escape(text)}</pre></article>"
        page = _layout(name, body, charset_meta=charset if where == "meta" else None, lang=code)
        put(f"intl/{code}.html", page.encode(charset))
        headers[f"/intl/{code}.html"] = {
            "Content-Type": f"text/html; charset={charset}" if where == "header" else "text/html"}
        intl_links.append(f'<li><a href="/intl/{code}.html">{name}</a></li>')
    put("intl/index.html", _layout("International", "<h1>International</h1><ul>"
                                   + "".join(intl_links) + "</ul>"))

    for n in range(1, 4):
        put(f"private/{n}.html", _layout(f"Members only {n}", "<h1>Members only</h1>"
                                         "<p>Subscriber content.</p>"))
    latest = "".join(f'<li><a href="/articles/{a["slug"]}.html">{html.escape(a["title"])}</a></li>'
                     for a in articles[::7])
    put("index.html", _layout("Home", f"<h1>{SITE_NAME}</h1><h2>Latest</h2><ul>{latest}</ul>"
                              '<p><a href="/private/1.html">Members area</a> &middot; '
                              '<a href="/articles/missing.html">Archive</a></p>'
                              + "".join(f'<a href="/mirror/{a["slug"]}.html">Mirror</a> '
                                        for a in articles[::12])))
    put("about.html", _layout("About", "<h1>About us</h1><p id=subscribe>We publish old texts."
                              " Contact us by letter.</p>"))
    put("privacy.html", _layout("Privacy", "<h1>Privacy policy</h1><p>We keep no data.</p>"))
    put("feed.xml", "<?xml version='1.0'?><rss version='2.0'><channel><title>"
                    f"{SITE_NAME}</title></channel></rss>\n")
    headers["/feed.xml"] = {"Content-Type": "application/rss+xml"}
    put("robots.txt", "User-agent: *\nDisallow: /private/\n")
    headers["/robots.txt"] = {"Content-Type": "text/plain"}

    return write_site(out, files, headers)


def write_site(out: Path, files: dict[str, bytes], headers: dict[str, dict[str, str]]) -> Path:
    """Write the files, the per-path headers and the redirects that `serve` reads."""
    out = Path(out)
    for path, data in files.items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (out / "_headers.json").write_text(json.dumps(headers, indent=1, sort_keys=True))
    (out / "_redirects.json").write_text(json.dumps({"/old-index.html": "/index.html",
                                                     "/": "/index.html"}, indent=1))
    return out


class _Handler(SimpleHTTPRequestHandler):
    headers_by_path: dict = {}
    redirects: dict = {}

    def do_GET(self):
        path = self.path.split("?")[0]
        if path in self.redirects:
            self.send_response(301)
            self.send_header("Location", self.redirects[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if any(part.startswith("_") for part in path.split("/")):
            self.send_error(404)
            return
        super().do_GET()

    def guess_type(self, path):
        rel = "/" + Path(path).relative_to(self.directory).as_posix()
        custom = self.headers_by_path.get(rel, {}).get("Content-Type")
        return custom or super().guess_type(path)

    def log_message(self, *args):
        pass


def serve(directory: Path, port: int) -> ThreadingHTTPServer:
    """Serve a built site on 127.0.0.1:port in a background thread; call .shutdown() to stop."""
    directory = Path(directory).resolve()
    handler = type("SiteHandler", (_Handler,), {
        "headers_by_path": json.loads((directory / "_headers.json").read_text()),
        "redirects": json.loads((directory / "_redirects.json").read_text()),
    })
    server = ThreadingHTTPServer(("127.0.0.1", port),
                                 lambda *a: handler(*a, directory=str(directory)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
