"""crawl -> ingest_warc returns the served pages; a killed crawl resumes without refetching."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq

from pipeline import run
from tests.stages.crawl.conftest import RouteServer, crawl_config, page

REPO = Path(__file__).resolve().parents[3]


def site(n: int) -> dict:
    routes = {"/": page("home", [f"/p{i}" for i in range(n)] + ["/missing"])}
    routes.update({f"/p{i}": page(f"page {i}", ["/"], body=f"Body of page {i} ✓.")
                   for i in range(n)})
    return routes


def warc_pipeline(tmp_path: Path, seeds: list[str], **crawl_params) -> dict:
    config = crawl_config(tmp_path, seeds, **crawl_params)
    config["stages"]["pages"] = {"kind": "ingest_warc", "inputs": ["crawl"],
                                 "max_error_fraction": 0.0, "params": {}}
    return config


def test_crawl_then_ingest_returns_the_served_pages(tmp_path):
    routes = site(5)
    with RouteServer(routes) as srv:
        run(warc_pipeline(tmp_path, [srv.base + "/"], warc_max_bytes=2_000))
        base = srv.base
    stage = tmp_path / "run" / "pages"
    docs = [r for f in sorted((stage / "shards").glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()]
    served = {base + path: body.decode() for path, (_, _, body) in routes.items()}
    assert {d["url"]: d["text"] for d in docs} == served
    crawl = json.loads((tmp_path / "run" / "crawl" / "manifest.json").read_text())
    warcs = crawl["tasks"]["crawl"]["files"]
    counts = crawl["tasks"]["crawl"]["counts"]
    assert counts["kept"] == 6 and counts["dropped"] == {"http_404": 1}
    assert counts["bytes_out"] == sum(len(body) for _, _, body in routes.values())
    assert len(warcs) > 1  # rotated by size
    assert all(json.loads(d["metadata"])["charset"] == "utf-8" for d in docs)
    stats = json.loads((stage / "stats.json").read_text())
    # Every WARC record is accounted for: warcinfo per file, request per response,
    # robots.txt and the 404 page are responses that are not documents.
    assert stats["dropped"] == {"http_404": 2, "warc_type:request": 8,
                                "warc_type:warcinfo": len(warcs)}
    assert stats["errors"] == {}


def test_killed_crawl_resumes_without_refetching_committed_pages(tmp_path):
    release = threading.Event()

    def stall(handler):
        release.wait(60)  # holds the first crawl here until it is killed
        return page("page 6")

    routes = site(10)
    routes["/p6"] = stall
    with RouteServer(routes) as srv:
        config = warc_pipeline(tmp_path, [srv.base + "/"], warc_max_bytes=1, workers=1)
        del config["stages"]["pages"]
        config_file = tmp_path / "config.json"
        config_file.write_text(json.dumps(config))
        proc = subprocess.Popen(
            [sys.executable, "-c", "import json, sys; from pipeline import run; "
             "run(json.loads(open(sys.argv[1]).read()))", str(config_file)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        frontier = tmp_path / "run" / "crawl" / "frontier.json"
        deadline = time.monotonic() + 60
        while "/p6" not in srv.paths():
            assert time.monotonic() < deadline and proc.poll() is None, "crawl did not start"
            time.sleep(0.05)
        time.sleep(0.3)  # let the commit of /p5 land
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = json.loads(frontier.read_text())
        committed = {u for u in before["done"] if u.startswith(srv.base + "/p")}
        assert committed == {f"{srv.base}/p{i}" for i in range(6)}
        first_log = len(srv.log)

        routes["/p6"] = page("page 6")
        release.set()
        run(config)
        after = srv.paths()[first_log:]

    assert sorted(p for p in after if p.startswith("/p")) == ["/p6", "/p7", "/p8", "/p9"]
    assert "/" not in after
    manifest = json.loads((tmp_path / "run" / "crawl" / "manifest.json").read_text())
    task = manifest["tasks"]["crawl"]
    assert task["counts"]["kept"] == 11 and task["counts"]["dropped"] == {"http_404": 1}
    # The pages are in the committed WARC files exactly once each.
    run(warc_pipeline(tmp_path, [srv.base + "/"], warc_max_bytes=1, workers=1))
    pages = tmp_path / "run" / "pages" / "shards"
    urls = [r["url"] for f in sorted(pages.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert sorted(urls) == sorted([srv.base + "/"] + [f"{srv.base}/p{i}" for i in range(10)])
    leftovers = [p.name for p in (tmp_path / "run" / "crawl").iterdir()
                 if p.name.endswith(".warc.gz") and p.name not in {f["path"] for f in task["files"]}]
    assert leftovers == []


def test_crawl_that_fetched_nothing_gives_an_empty_ingest(tmp_path):
    config = warc_pipeline(tmp_path, ["http://10.0.0.1/"], allow_private=False)
    run(config)
    crawl = json.loads((tmp_path / "run" / "crawl" / "manifest.json").read_text())
    assert crawl["tasks"]["crawl"]["files"] == []
    assert crawl["tasks"]["crawl"]["counts"]["dropped"] == {"refused:private": 1}
    pages = json.loads((tmp_path / "run" / "pages" / "stats.json").read_text())
    assert (pages["in"], pages["tasks"]) == (0, 0)
