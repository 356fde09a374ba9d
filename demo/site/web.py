"""A web-like site for the data-quality ablation: clean articles among the junk a raw crawl has.

`build_web_site(out, articles, foreign)` writes a static site that `demo.site.serve` serves.
The clean text is what the caller gives (`articles`: slug, title, tags, paragraphs, date; a
newline inside a paragraph is a line break). Around it the generator puts the kinds of page
that make up most of a raw web crawl, each under its own first path segment so that a
funnel can be split by kind (`page_kind(url)`):

- `articles/`: the clean articles, in site chrome (navigation, sidebar, footer);
- `print/`, `amp/`: exact copies of a share of the articles under other chrome (printer
  views, AMP pages: the same text at another URL);
- `syndicated/`: near-duplicates: an article with a lead sentence added, a few words
  changed and its last paragraph cut, as a partner site republishes it;
- `spam/`: SEO pages, keyword-stuffed sentences from templates;
- `shop/`: product listings: names, prices, stock, ratings, "Add to cart";
- `forum/`: forum indexes: thread titles, reply and view counts, last posts;
- `salad/`: machine-made word salad: words drawn from the articles' own word frequencies,
  cut into sentences (it has stop words and plausible word lengths, so it is hard to catch);
- `lorem/`: unfinished template pages in Lorem ipsum;
- `data/`: pages that are mostly encoded data: hex dumps, keys, tracking tables;
- `intl/`: text in other languages (`foreign`: language code -> text), a page per section;
- `archive/`, `tags/`, `index.html`, `about.html`, `privacy.html`: listing and site pages.

Junk is sized against the clean text: each junk kind gets `junk_ratio * share` of the
articles' bytes (shares in `JUNK_SHARES`; the `intl` kind is capped by the foreign text
given). With the default `junk_ratio=1.0` about half of the crawl's text is junk, less than
in a Common Crawl snapshot, where RefinedWeb and FineWeb keep roughly a tenth to a fifth of
the English-language text they start from. Deterministic: the same arguments give the same
bytes.
"""

from __future__ import annotations

import html
import random
import re
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

from demo.site import _article_page, _layout, _spam_page, write_site

JUNK_SHARES = {"duplicates": 0.35, "spam": 0.12, "shop": 0.10, "forum": 0.10,
               "salad": 0.10, "lorem": 0.04, "data": 0.04, "intl": 0.15}
LINKS_PER_ARCHIVE_PAGE = 100
_TAGS = re.compile(r"<[^>]+>")
INTL_PAGE_CHARS = 6_000

_PRODUCTS = ["replica watches", "casino bonus", "payday loans", "diet pills", "cheap flights",
             "crypto signals", "essay writing service", "car insurance quotes", "weight loss tea",
             "free spins", "cheap hotels", "forex robot", "followers", "vpn deals"]
_ADJECTIVES = ["cheap", "best", "top rated", "discount", "premium", "official", "trusted",
               "fast", "free", "guaranteed", "legit", "exclusive"]
_SPAM_TEMPLATES = [
    "Looking for {p}? We have the {a} {p} at the lowest price.",
    "Buy {p} online today and save {n}%!",
    "{P} {P} {P} - {a} {p} deals {y}",
    "Why pay more for {p}? Our {p} are {a} and {a2}.",
    "Click here for {a} {p}.",
    "Top {n} {p} sites reviewed for {y}.",
    "{p} near me, {p} online, {p} reviews, {a} {p}",
    "Our {a} {p} have helped {n}000 customers.",
    "Limited offer: {a} {p} with free shipping!!!",
    "{a} {p} {a2} {p} {p} {y} {p}",
]
_ITEMS = ["Watch", "Sneakers", "Backpack", "Headphones", "Phone Case", "Desk Lamp", "Water Bottle",
          "Jacket", "Sunglasses", "Charger", "Wallet", "Keyboard"]
_MATERIALS = ["Stainless Steel", "Leather", "Carbon", "Bamboo", "Nylon", "Aluminium", "Cotton"]
_SUBJECTS = ["Help with my setup", "Best settings?", "Problem after update", "For sale: spare parts",
             "Introduce yourself", "Off topic thread", "Firmware 2.1 released", "Need advice",
             "Weekly photo thread", "Is this normal?", "Shipping times", "Rules - read first"]
_LOREM = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt "
          "ut labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco "
          "laboris nisi aliquip ex ea commodo consequat duis aute irure in reprehenderit voluptate "
          "velit esse cillum fugiat nulla pariatur excepteur sint occaecat cupidatat non proident "
          "sunt culpa qui officia deserunt mollit anim id est laborum").split()


def page_kind(url: str) -> str:
    """The kind of a page of this site, from its URL's first path segment."""
    parts = urlparse(url).path.strip("/").split("/")
    return parts[0] if len(parts) > 1 else "site"


def _sentences(rng: random.Random, words: list[str], count: int) -> str:
    out = []
    for _ in range(count):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(6, 16)))
        out.append(sentence[:1].upper() + sentence[1:] + rng.choice([".", ".", "!", "?"]))
    return " ".join(out)


def _spam(rng: random.Random, n: int) -> tuple[str, str]:
    product = _PRODUCTS[n % len(_PRODUCTS)]
    lines = []
    for _ in range(rng.randint(25, 60)):
        a, a2 = rng.sample(_ADJECTIVES, 2)
        lines.append(rng.choice(_SPAM_TEMPLATES).format(
            p=product, P=product.upper(), a=a, a2=a2, n=rng.randint(2, 90), y=rng.choice([2023, 2024])))
    related = "".join(f"<li>{html.escape(rng.choice(_ADJECTIVES))} {html.escape(product)} "
                      f"{rng.randint(1, 99)}</li>" for _ in range(12))
    body = (f"<h1>{html.escape(product.upper())} - BEST DEALS!!!</h1>"
            + "".join(f"<p>{html.escape(line)}</p>" for line in lines)
            + f"<h2>Related searches</h2><ul>{related}</ul>")
    return f"{product.title()} deals {n}", body


def _shop(rng: random.Random, n: int) -> tuple[str, str]:
    rows = []
    for _ in range(rng.randint(20, 40)):
        size = ["S", "M", "L", "XL", "42mm", "2-pack"]
        name = f"{rng.choice(_MATERIALS)} {rng.choice(_ITEMS)} {rng.choice(size)}"
        stars = rng.randint(2, 5)
        rows.append(f"<li><h3>{name}</h3><p>${rng.randint(5, 300)}.{rng.randint(0, 99):02d}</p>"
                    f"<p>{'In stock' if rng.random() < 0.8 else 'Only 2 left'}</p>"
                    f"<p>{'★' * stars}{'☆' * (5 - stars)} ({rng.randint(0, 900)} reviews)</p>"
                    "<p>Add to cart</p><p>Compare</p></li>")
    filters = "".join(f"<li>{m} ({rng.randint(1, 80)})</li>" for m in _MATERIALS)
    body = (f"<h1>Shop: page {n}</h1><p>Sort by: Popularity | Price | Newest</p>"
            f"<ul class=filters>{filters}</ul><ul class=products>{''.join(rows)}</ul>"
            f"<p>Page {n} of 400 Next</p>")
    return f"Shop page {n}", body


def _forum(rng: random.Random, n: int) -> tuple[str, str]:
    rows = []
    for _ in range(rng.randint(25, 45)):
        rows.append(f"<tr><td>{'Re: ' if rng.random() < 0.4 else ''}{rng.choice(_SUBJECTS)}</td>"
                    f"<td>Replies: {rng.randint(0, 300)}</td><td>Views: {rng.randint(10, 90000)}</td>"
                    f"<td>Last post by user{rng.randint(1, 9999)} on 2024-{rng.randint(1, 12):02d}-"
                    f"{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}</td></tr>")
    body = (f"<h1>General discussion - page {n}</h1><p>Moderators: admin, mod_team</p>"
            f"<table>{''.join(rows)}</table><p>Users browsing this forum: {rng.randint(2, 80)} guests</p>")
    return f"Forum page {n}", body


def _salad(rng: random.Random, n: int, words: list[str]) -> tuple[str, str]:
    paragraphs = "".join(f"<p>{html.escape(_sentences(rng, words, rng.randint(3, 8)))}</p>"
                         for _ in range(rng.randint(4, 10)))
    title = html.escape(_sentences(rng, words, 1)[:60])
    return f"Article {n}", f"<article><h1>{title}</h1>{paragraphs}</article>"


def _lorem(rng: random.Random, n: int) -> tuple[str, str]:
    paragraphs = "".join(f"<p>{_sentences(rng, _LOREM, rng.randint(3, 7))}</p>"
                         for _ in range(rng.randint(3, 8)))
    return f"Sample page {n}", f"<h1>Sample Page</h1><p>This is an example page.</p>{paragraphs}"


def _data(rng: random.Random, n: int) -> tuple[str, str]:
    kind = n % 3
    if kind == 0:
        lines = [f"{i * 16:08x}  " + " ".join(f"{rng.randrange(256):02x}" for _ in range(16))
                 for i in range(rng.randint(40, 120))]
    elif kind == 1:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        lines = ["-----BEGIN PUBLIC KEY-----"] + [
            "".join(rng.choice(alphabet) for _ in range(64)) for _ in range(rng.randint(30, 90))
        ] + ["-----END PUBLIC KEY-----"]
    else:
        lines = [f"{rng.randint(10**9, 10**10 - 1)} | {rng.choice(['DELIVERED', 'IN TRANSIT', 'HELD'])} "
                 f"| {rng.randint(1, 28):02d}/{rng.randint(1, 12):02d} | {rng.randint(100, 999)}-"
                 f"{rng.randint(1000, 9999)}" for _ in range(rng.randint(40, 100))]
    return f"Download {n}", f"<h1>File {n}</h1><pre>{html.escape(chr(10).join(lines))}</pre>"


def _near_duplicate(rng: random.Random, article: dict) -> dict:
    paragraphs = list(article["paragraphs"])
    if len(paragraphs) > 3:
        paragraphs = paragraphs[:-1]
    for _ in range(3):
        i = rng.randrange(len(paragraphs))
        paragraphs[i] = paragraphs[i].replace(" the ", " that ", 1)
    lead = f"This piece first appeared in {rng.choice(['The Review', 'Weekly Letters', 'Old Texts Daily'])}."
    return dict(article, paragraphs=[lead, *paragraphs])


def _text_bytes(article: dict) -> int:
    return sum(len(p.encode("utf-8")) for p in article["paragraphs"])


def build_web_site(out: Path, articles: list[dict], foreign: dict[str, str] | None = None,
                   junk_ratio: float = 1.0, seed: int = 0) -> Path:
    """Write the site under `out` (see the module docstring); return `out`."""
    rng = random.Random(seed)
    clean_bytes = sum(_text_bytes(a) for a in articles)
    quota = {kind: junk_ratio * share * clean_bytes for kind, share in JUNK_SHARES.items()}
    pages: dict[str, str] = {}  # path -> HTML
    titles: dict[str, str] = {}

    def put(path: str, title: str, page: str) -> None:
        pages[path], titles[path] = page, title

    for i, a in enumerate(articles):
        related = [articles[(i + k) % len(articles)] for k in (1, 2, 3)]
        put(f"articles/{a['slug']}.html", a["title"], _article_page(a, related))

    copies = 0.0
    for a in rng.sample(articles, len(articles)):  # duplicates of a random share of articles
        if copies >= quota["duplicates"]:
            break
        for prefix in rng.sample(["print", "amp", "syndicated"], rng.randint(1, 3)):
            copy = _near_duplicate(rng, a) if prefix == "syndicated" else a
            put(f"{prefix}/{a['slug']}.html", copy["title"], _article_page(copy, [], mirror_of=a["slug"]))
            copies += _text_bytes(copy)

    vocabulary = Counter(w for a in articles for p in a["paragraphs"] for w in p.split())
    words = rng.choices(list(vocabulary), weights=list(vocabulary.values()), k=50_000)
    makers = {"spam": _spam, "shop": _shop, "forum": _forum, "lorem": _lorem, "data": _data,
              "salad": lambda r, n: _salad(r, n, words)}
    for kind, make in makers.items():
        n, made = 0, 0.0
        while made < quota[kind]:
            n += 1
            title, body = make(rng, n)
            put(f"{kind}/{n}.html", title, _layout(title, body))
            made += len(_TAGS.sub("", body).encode("utf-8"))
    for n in (1, 4):  # the site footer links to these
        if f"spam/{n}.html" not in pages:
            put(f"spam/{n}.html", f"Spam {n}", _spam_page(n))

    made = 0.0
    for code, text in sorted((foreign or {}).items()):
        for part, start in enumerate(range(0, len(text), INTL_PAGE_CHARS)):
            if made >= quota["intl"]:
                break
            chunk = text[start:start + INTL_PAGE_CHARS]
            put(f"intl/{code}-{part + 1}.html", f"{code} {part + 1}", _layout(
                f"{code} {part + 1}", f"<article><pre>{html.escape(chunk)}</pre></article>", lang=code))
            made += len(chunk.encode("utf-8"))

    by_tag: dict[str, list[dict]] = {}
    for a in articles:
        for tag in a["tags"]:
            by_tag.setdefault(tag, []).append(a)
    for tag in sorted({"scripture", "fiction"} | set(by_tag)):
        listing = "".join(f'<li><a href="/articles/{a["slug"]}.html">{html.escape(a["title"])}</a></li>'
                          for a in by_tag.get(tag, []))
        put(f"tags/{tag}.html", f"#{tag}", _layout(f"#{tag}", f"<h1>Tagged #{tag}</h1><ul>{listing}</ul>"))

    listed = sorted(p for p in pages if not p.startswith("tags/"))
    archive = []
    for n, start in enumerate(range(0, len(listed), LINKS_PER_ARCHIVE_PAGE), 1):
        links = "".join(f'<li><a href="/{p}">{html.escape(titles[p])}</a></li>'
                        for p in listed[start:start + LINKS_PER_ARCHIVE_PAGE])
        put(f"archive/{n}.html", f"Archive {n}",
            _layout(f"Archive {n}", f"<h1>Archive, page {n}</h1><ul>{links}</ul>"))
        archive.append(f'<a href="/archive/{n}.html">{n}</a>')
    put("intl/index.html", "International", _layout("International", "<h1>International</h1>"))
    put("index.html", "Home", _layout("Home", "<h1>Welcome</h1><p>Archive: " + " ".join(archive) + "</p>"))
    put("about.html", "About", _layout("About", "<h1>About us</h1><p>We publish old texts.</p>"))
    put("privacy.html", "Privacy", _layout("Privacy", "<h1>Privacy policy</h1><p>We keep no data.</p>"))

    files = {path: page.encode("utf-8") for path, page in pages.items()}
    files["robots.txt"] = b"User-agent: *\nDisallow: /private/\n"
    files["feed.xml"] = b"<?xml version='1.0'?><rss version='2.0'><channel></channel></rss>\n"
    headers = {"/robots.txt": {"Content-Type": "text/plain"},
               "/feed.xml": {"Content-Type": "application/rss+xml"}}
    return write_site(out, files, headers)
