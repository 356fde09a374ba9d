"""Damaged inputs never crash or hang ingest: seeded random mutations of small valid files.

Each mutation of a valid `.warc.gz`, `.jsonl.gz` and `.parquet` (byte flips, a truncation,
inserted or deleted runs of bytes) runs through the stage's task in this process, as an
executor would run it; so does each of a plain `.warc` and `.jsonl`, whose mutations reach
the record and JSON parsers rather than stopping at a gzip CRC, and a `.jsonl.zst`, whose
frames ingest walks itself. Every run must end with a balanced funnel (`in == kept + dropped +
errors`), or else raise the engine's bad-input kind (pipeline.cli.bad_input) with the file
named in one line: never another exception, and never longer than `RUN_SECONDS`.

The default test runs `DEFAULT_CASES` mutations of each file; the slow one runs 500.
A failure prints the seed and the mutation, and `mutate(data, seed)` rebuilds the file.
"""

from __future__ import annotations

import gzip
import json
import random
import signal
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from stages.ingest.files import Ingest
from stages.ingest.warc import IngestWarc
from tests.stages.ingest.conftest import html_response, pages, warc_bytes

DEFAULT_CASES = 100
FULL_CASES = 500
RUN_SECONDS = 10
NAMES = ["in.warc.gz", "in.jsonl.gz", "in.parquet", "in.warc", "in.jsonl", "in.jsonl.zst"]


def valid_inputs() -> dict[str, bytes]:
    """Small valid files, one per reader: a few records each, so a run takes milliseconds."""
    records = [*pages(4), html_response("http://site.test/gz", b"<html><p>x</p></html>" * 20)]
    warc, _ = warc_bytes(records)
    plain_warc, _ = warc_bytes(records, gzip_members=False)
    lines = [json.dumps({"text": f"document {i} " + "word " * i, "n": i, "tags": ["a", "b"]})
             for i in range(30)]
    jsonl = ("\n".join(lines) + "\n").encode()
    table = pa.table({"text": [f"row {i} " + "text " * i for i in range(30)],
                      "n": list(range(30)), "score": [i / 7 for i in range(30)]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=8)
    return {"in.warc.gz": warc, "in.jsonl.gz": gzip.compress(jsonl, mtime=0),
            "in.jsonl.zst": zstandard.ZstdCompressor(write_checksum=True).compress(jsonl),
            "in.parquet": sink.getvalue().to_pybytes(), "in.warc": plain_warc, "in.jsonl": jsonl}


def mutate(data: bytes, seed: int) -> tuple[bytes, str]:
    """One seeded mutation of `data` and a description of it."""
    rng = random.Random(seed)
    kind = rng.choice(["flip", "truncate", "insert", "delete", "mixed"])
    out = bytearray(data)
    steps = []
    for _ in range(rng.randint(2, 4) if kind == "mixed" else 1):
        step = rng.choice(["flip", "truncate", "insert", "delete"]) if kind == "mixed" else kind
        at = rng.randrange(max(len(out), 1))
        if step == "flip":
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(out))
                out[i] ^= 1 << rng.randrange(8) if rng.random() < 0.5 else rng.randrange(1, 256)
            steps.append("flip")
        elif step == "truncate":
            del out[at:]
            steps.append(f"truncate@{at}")
        elif step == "insert":
            junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
            out[at:at] = junk if rng.random() < 0.7 else bytes(out[at:at + len(junk)])  # repeat
            steps.append(f"insert@{at}+{len(junk)}")
        else:
            n = rng.randint(1, 64)
            del out[at:at + n]
            steps.append(f"delete@{at}-{n}")
        if not out:
            break
    return bytes(out), ",".join(steps)


@contextmanager
def time_limit(seconds: float):
    def expire(signum, frame):
        raise TimeoutError(f"ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_one(path: Path, stage_dir: Path) -> str:
    """Run the ingest task on one file: "ok", or the bad-input line it raised."""
    from pipeline.cli import bad_input

    if ".warc" in path.name:
        stage = IngestWarc("fuzz", IngestWarc.Params(paths=[str(path)]), stage_dir)
    else:
        params = Ingest.Params(paths=[str(path)], max_record_bytes=4096,
                               max_row_group_bytes=1 << 20, rejected_prefix_bytes=200)
        stage = Ingest("fuzz", params, stage_dir)
    try:
        with time_limit(RUN_SECONDS):
            [task] = stage.tasks([])
            result = stage.run_task(task)
    except Exception as exc:  # only the engine's bad input is allowed, naming the file
        line = str(exc)
        if not (bad_input(exc) and path.name in line and "\n" not in line.strip()):
            raise
        return f"bad input: {line}"
    assert result.counts.balanced(), result.counts.to_dict()
    assert result.counts.n_in >= 1  # a damaged file still shows in the funnel
    return "ok"


def fuzz(tmp_path: Path, name: str, cases: int) -> None:
    data = valid_inputs()[name]
    path, stage_dir = tmp_path / name, tmp_path / "stage"
    path.write_bytes(data)
    assert run_one(path, stage_dir) == "ok"
    for seed in range(cases):
        damaged, how = mutate(data, seed)
        path.write_bytes(damaged)
        try:
            run_one(path, stage_dir)
        except BaseException as exc:
            raise AssertionError(f"{name}, seed {seed} ({how}): {type(exc).__name__}: {exc}") \
                from exc


@pytest.mark.parametrize("name", NAMES)
def test_mutated_inputs_are_counted_never_crash(tmp_path, name):
    fuzz(tmp_path, name, DEFAULT_CASES)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_mutated_inputs_full(tmp_path, name):
    fuzz(tmp_path, name, FULL_CASES)


def test_mutations_are_deterministic_and_varied():
    data = valid_inputs()["in.jsonl.gz"]
    assert [mutate(data, s) for s in range(20)] == [mutate(data, s) for s in range(20)]
    kinds = {how.split("@")[0].split(",")[0] for _, how in (mutate(data, s) for s in range(50))}
    assert kinds >= {"flip", "truncate", "insert", "delete"}
    assert all(mutate(data, s)[0] != data for s in range(50) if "flip" not in mutate(data, s)[1])
