"""Progress inside long tasks (issue 19, item 6): documents done, docs/s and an ETA per
stage while tasks run, on the local executor and summed across dask workers, as plain log
lines when stderr is not a terminal."""

from __future__ import annotations

import re

import pipeline
from pipeline import progress
from tests.pipeline.test_cli_messages import test_kinds  # noqa: F401  (fixture)
from tests.pipeline.conftest import write_corpus

LINE = re.compile(r"stage slow: (\d+)/(\d+) tasks, ([\d,]+) of ([\d,]+) documents \([\d.]+%\), "
                  r"[\d,]+ docs/s(, ETA \d+(m\d\ds|s|h\d\dm))?$")


def config(tmp_path, files, docs_per_file, seconds_per_doc, **executor):
    corpus = write_corpus(tmp_path / "corpus", files=files, docs_per_file=docs_per_file)
    return {"name": "p", "run_dir": str(tmp_path / "run"), "executor": executor, "stages": {
        "ingest": {"kind": "ingest", "params": {"paths": [str(corpus / "*.jsonl")]}},
        "slow": {"kind": "slow", "inputs": ["ingest"], "params": {
            "seconds_per_doc": seconds_per_doc, "ran_log": str(tmp_path / "ran.log")}},
    }}


def progress_lines(caplog) -> list[tuple[int, int, int, int]]:
    found = [LINE.match(r.getMessage()) for r in caplog.records]
    return [tuple(int(g.replace(",", "")) for g in m.groups()[:4]) for m in found if m]


def test_local_progress_counts_documents_inside_tasks(tmp_path, caplog, monkeypatch, test_kinds):
    monkeypatch.setattr(progress, "REPORT_SECONDS", 0.0)
    monkeypatch.setattr(progress, "LOG_SECONDS", 0.0)
    caplog.set_level("INFO", logger="lmforge")
    pipeline.run(config(tmp_path, files=4, docs_per_file=10, seconds_per_doc=0.0))
    lines = progress_lines(caplog)
    assert lines, caplog.text
    assert {total for *_, total in lines} == {40}  # the manifest's document count upstream
    assert all(tasks == 4 for _, tasks, _, _ in lines)
    # counts inside a task, between finished tasks: not only multiples of 10
    assert any(docs % 10 for _, _, docs, _ in lines)
    docs = [d for _, _, d, _ in lines]
    assert docs == sorted(docs) and docs[-1] == 40


def test_dask_progress_adds_up_across_workers(tmp_path, caplog, monkeypatch, test_kinds):
    """Two tasks of 3 s on two worker processes: each reports after 2 s (the workers'
    REPORT_SECONDS), so the driver logs counts before any task has finished."""
    monkeypatch.setattr(progress, "LOG_SECONDS", 0.0)
    caplog.set_level("INFO", logger="lmforge")
    pipeline.run(config(tmp_path, files=2, docs_per_file=30, seconds_per_doc=0.1,
                        kind="dask", workers=2))
    assert re.search(r"dask: 2 workers, dashboard http://\S+", caplog.text)
    running = [(done, docs) for done, _, docs, total in progress_lines(caplog)
               if done == 0 and total == 60]
    assert running and all(0 < docs < 60 for _, docs in running), caplog.text
