"""extract's time limit holds for any page: the engine's child ends itself at the CPU limit.

The pathological page is resiliparse's worst case, markup nested tens of thousands of levels
deep (its cost grows faster than the square of the depth: 16,000 levels take about 8 CPU
seconds, 32,000 about 48), built in the test. The limits here are short and the wall-time
bounds generous (10x): the machine running the tests may be shared.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import run
from pipeline.documents import Document, Rejected
from stages.ingest import extract
from stages.ingest.extract import Extract, ExtractParams, _batches, _Inline, _Sandbox, _Timeout
from tests.stages.ingest.conftest import html_response

RESILIPARSE = dict(engine="resiliparse", favor_precision=True, include_tables=True,
                   deduplicate=False)


def nested_page(depth: int) -> str:
    return "<html><body>" + "<div>x" * depth + "</div>" * depth + "</body></html>"


def normal_page(i: int) -> str:
    paragraphs = "".join(f"<p>Paragraph {j} of page {i}: the quick brown fox jumps over the "
                         f"lazy dog, and the dog does not mind at all.</p>" for j in range(6))
    return (f"<html><head><title>Page {i}</title></head><body><nav><a href='/'>Home</a></nav>"
            f"<main><article><h1>Page {i}</h1>{paragraphs}</article></main></body></html>")


def write_warc(path: Path, pages: dict[str, str]) -> None:
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for name, html in pages.items():
            writer.write_record(html_response(f"http://s.test/{name}", html.encode()))


def run_extract(run_dir: Path, pages: dict[str, str], **params) -> tuple[Path, float]:
    """ingest_warc (one shard, so one extract task) -> extract; its directory and wall s."""
    run_dir.mkdir()
    write_warc(run_dir / "in.warc.gz", pages)
    config = {
        "name": "x", "run_dir": str(run_dir / "run"),
        "stages": {
            "html": {"kind": "ingest_warc", "params": {"paths": [str(run_dir / "in.warc.gz")]}},
            "extract": {"kind": "extract", "inputs": ["html"], "max_error_fraction": 1.0,
                        "params": {"engine": "resiliparse", **params}},
        },
    }
    start = time.monotonic()
    run(config, executor="local", workers=1)
    return run_dir / "run" / "extract", time.monotonic() - start


def rows(stage_dir: Path, sub: str) -> list[dict]:
    return [r for f in sorted((stage_dir / sub).glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()]


def extracted(row: dict) -> tuple:
    """What extract decided for a row, without what the WARC record says of itself (its
    id, offset, record id and date differ between two WARCs holding the same page)."""
    meta = json.loads(row["metadata"])
    return row["url"], row["text"], meta["title"], meta["engine"]


def test_deeply_nested_page_is_stopped_at_the_limit_and_the_task_goes_on(tmp_path):
    limit = 1.0
    normal = {f"n{i}": normal_page(i) for i in range(6)}
    # 32,000 levels: about 48 CPU seconds of resiliparse if nothing stopped it.
    pages = {**dict(list(normal.items())[:3]), "deep": nested_page(32_000),
             **dict(list(normal.items())[3:])}
    stage, wall = run_extract(tmp_path / "process", pages, timeout_seconds=limit)
    assert wall < 10 * limit, f"{wall:.1f} s for a {limit} s limit"

    stats = json.loads((stage / "stats.json").read_text())
    assert stats["in"] == 7 and stats["kept"] == 6
    assert stats["dropped"] == {"timeout": 1} and stats["errors"] == {}
    assert stats["in"] == stats["kept"] + sum(stats["dropped"].values()) + \
        sum(stats["errors"].values())
    [rejected] = rows(stage, "rejected")
    assert rejected["url"] == "http://s.test/deep" and rejected["reason"] == "timeout"
    assert rejected["text"] == pages["deep"]  # kept whole for inspection

    # The pages before and after it: as an inline run extracts them, in the same order.
    inline, _ = run_extract(tmp_path / "inline", normal, isolate="inline")
    kept = rows(stage, "shards")
    assert [r["url"].rsplit("/", 1)[1] for r in kept] == list(normal)
    assert [extracted(r) for r in kept] == [extracted(r) for r in rows(inline, "shards")]
    assert "Paragraph 5 of page 4" in kept[4]["text"]


def test_timeouts_anywhere_in_a_batch_leave_the_other_pages_alone():
    normal = [normal_page(i) for i in range(3)]
    deep = nested_page(16_000)  # about 8 CPU seconds
    batch = [deep, normal[0], deep, deep, normal[1], normal[2], deep]  # first, twice, last
    sandbox = _Sandbox(dict(RESILIPARSE, timeout_seconds=0.3))
    try:
        start = time.monotonic()
        outcomes = sandbox.extract_many(batch)
        wall = time.monotonic() - start
    finally:
        sandbox.stop()
    assert [type(o).__name__ for o in outcomes] == \
        ["_Timeout", "str", "_Timeout", "_Timeout", "str", "str", "_Timeout"]
    assert [o for o in outcomes if isinstance(o, str)] == \
        _Inline(dict(RESILIPARSE, timeout_seconds=60)).extract_many(normal)
    assert wall < 4 * (0.3 + 0.5) * 10  # four limits and four fresh children, 10x


def test_a_child_that_does_not_answer_is_killed_at_the_wall_backstop():
    sandbox = _Sandbox(dict(RESILIPARSE, timeout_seconds=0.2))
    backstop = 0.2 * extract.WALL_FACTOR
    big = normal_page(1).replace("<main>", "<main><p>" + "padding " * 40_000 + "</p>")
    try:
        [first] = sandbox.extract_many([normal_page(0)])
        os.kill(sandbox.proc.pid, signal.SIGSTOP)  # alive, but never runs again
        start = time.monotonic()
        [outcome] = sandbox.extract_many([normal_page(1)])  # fits in the pipe: never answered
        assert isinstance(outcome, _Timeout)
        assert backstop <= time.monotonic() - start < 10 * backstop
        assert sandbox.proc is None
        assert sandbox.extract_many([normal_page(0)]) == [first]  # a fresh child

        # A batch bigger than the pipe cannot even be sent: not the page's fault, so a
        # fresh child gets it.
        os.kill(sandbox.proc.pid, signal.SIGSTOP)
        start = time.monotonic()
        [text] = sandbox.extract_many([big])
        assert time.monotonic() - start < 10 * backstop
        assert "Paragraph 5 of page 1" in text and text.count("padding") == 40_000
    finally:
        sandbox.stop()


def test_a_child_that_died_between_batches_is_restarted_without_blaming_a_page():
    sandbox = _Sandbox(dict(RESILIPARSE, timeout_seconds=5.0))
    try:
        [first] = sandbox.extract_many([normal_page(0)])
        sandbox.proc.kill()
        sandbox.proc.wait()
        assert sandbox.extract_many([normal_page(0), normal_page(1)])[0] == first
    finally:
        sandbox.stop()


def test_a_child_that_crashes_on_a_page_makes_it_an_error_and_the_batch_goes_on():
    sandbox = _Sandbox(dict(RESILIPARSE, timeout_seconds=60.0))
    try:
        [first] = sandbox.extract_many([normal_page(0)])
        # While the child is busy with a page of about 48 CPU seconds, it dies by another hand.
        killer = threading.Timer(1.0, lambda pid: os.kill(pid, signal.SIGKILL),
                                 [sandbox.proc.pid])
        killer.start()
        outcomes = sandbox.extract_many([normal_page(0), nested_page(32_000), normal_page(0)])
        killer.join()
    finally:
        sandbox.stop()
    assert outcomes[0] == outcomes[2] == first
    assert isinstance(outcomes[1], RuntimeError) and not isinstance(outcomes[1], _Timeout)
    assert f"exit status {-signal.SIGKILL}" in str(outcomes[1])


def test_batches_are_bounded_in_pages_and_characters():
    docs = [Document(id=str(i), text="x" * n) for i, n in enumerate([3, 3, 3, 9, 1, 1, 1, 1])]
    sizes = [[len(d.text) for d in b] for b in _batches(iter(docs), max_pages=3, max_chars=8)]
    assert sizes == [[3, 3], [3], [9], [1, 1, 1], [1]]  # a page over the budget goes alone


@pytest.mark.parametrize("batch_pages", [1, 2, 64])
def test_batching_changes_no_outcome_or_order(tmp_path, monkeypatch, batch_pages):
    monkeypatch.setattr(extract, "BATCH_PAGES", batch_pages)
    docs = [Document(id="a", text=normal_page(0), url="u/a"),
            Document(id="wet", text="Plain text.", metadata={"format": "text"}),
            Document(id="big", text="<p>" + "y" * 3000 + "</p>"),
            Document(id="empty", text="<html><body></body></html>"),
            Document(id="b", text=normal_page(1), url="u/b")]
    params = ExtractParams(engine="resiliparse", max_html_bytes=2000)
    stage = Extract("extract", params, tmp_path / "extract")
    try:
        got = [(type(o).__name__, o.reason if isinstance(o, Rejected) else o.text)
               for o in stage.process(iter(docs))]
    finally:
        stage._runner.stop()
    inline = Extract("extract", params.model_copy(update={"isolate": "inline"}), tmp_path / "i")
    expected = [(type(o).__name__, o.reason if isinstance(o, Rejected) else o.text)
                for o in map(inline.apply, docs)]
    assert got == expected
    assert [kind for kind, _ in got] == ["Document", "Document", "Rejected", "Rejected",
                                         "Document"]
