"""A crawl whose seeds all fail stops the run, naming the seeds and why (issue 19, item 3).

Before, it "succeeded" with 0 pages and every later stage ran on nothing until a dedup
phase failed with a message that said nothing of the cause.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import yaml


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket is


def test_unreachable_seeds_fail_the_run_naming_them(tmp_path):
    port = closed_port()
    seeds = [f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{port}/docs/"]
    config = {"name": "down", "run_dir": str(tmp_path / "run"), "stages": {
        "crawl": {"kind": "crawl", "params": {"seeds": seeds, "contact_url": "https://example.org",
                                              "allow_private": True, "delay_seconds": 0.0}},
        "pages": {"kind": "ingest_warc", "inputs": ["crawl"]},
    }}
    path = tmp_path / "down.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    error = [line for line in done.stderr.splitlines() if line.startswith("lmforge:")]
    assert len(error) == 1, done.stderr
    for seed in seeds:
        assert seed in error[0]
    assert "every seed failed" in error[0] and "Connection refused" in error[0]
    assert "make demo" in error[0]
    assert not (tmp_path / "run" / "pages").exists()  # nothing ran on nothing
