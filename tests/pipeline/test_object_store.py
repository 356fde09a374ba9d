"""A run directory on an object store (moto's S3 server, real HTTP): a DAG of every doc-stage
family, the tokenizer, token shards and pretraining leaves the same bytes as on local disk;
a driver killed with SIGKILL resumes; status and report read the URL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import yaml

import pipeline
from pipeline import storage
from pipeline.cli import main
from tests.pipeline.conftest import TINY, committed, dag, upload_inputs

def test_run_dir_on_s3_matches_local_and_status_report_read_it(s3_bucket, tmp_path, one_thread):
    urls = upload_inputs(s3_bucket)
    pipeline.run(dag(str(tmp_path / "local"), urls, every_kind=True))
    url = f"{s3_bucket}/runs/x"
    pipeline.run(dag(url, urls, every_kind=True))

    local, remote = committed(tmp_path / "local"), committed(url)
    assert len(local) > 20 and local == remote
    # The objects are really there, and their bytes are what the manifest says.
    fresh = fsspec.filesystem("s3", skip_instance_cache=True)
    name, sha = next((k, v) for k, v in remote.items() if k.startswith("tok/shards/train-"))
    import hashlib
    assert hashlib.sha256(fresh.cat(f"{url[5:]}/{name}")).hexdigest() == sha
    assert not list(Path.cwd().glob("s3:*"))  # nothing went to a local folder named s3:

    # A second run skips every stage.
    assert {o.status for o in pipeline.run(dag(url, urls, every_kind=True))} == {"skipped"}

    assert main(["status", url, "--json"]) == 0
    assert main(["report", url]) == 0
    assert fresh.exists(f"{url[5:]}/report/report.html")

    # Token shards on the store: inspected, and trained on by `lmforge train`, through a
    # local copy checked against the manifest.
    assert main(["inspect-shards", f"{url}/tok"]) == 0
    train = tmp_path / "train.yaml"
    train.write_text(yaml.safe_dump({
        "model": TINY, "data": {"dir": f"{url}/tok/shards", "seq_len": 32},
        "train": {"batch_size": 2, "max_steps": 2, "warmup_steps": 1, "eval_every": 2,
                  "eval_batches": 1, "log_every": 1, "out_dir": str(tmp_path / "trained")}}))
    assert main(["train", str(train)]) == 0
    assert (tmp_path / "trained" / "log.jsonl").read_text().count("\n") == 2


def test_driver_killed_on_s3_resumes_to_the_same_bytes(s3_bucket, tmp_path, one_thread):
    urls = upload_inputs(s3_bucket)
    config = dag(f"{s3_bucket}/runs/ref", urls)
    del config["stages"]["lm"]
    pipeline.run(config)

    url = f"{s3_bucket}/runs/killed"
    config["run_dir"] = url
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    killed = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        fs.invalidate_cache()
        if fs.exists(f"{url[5:]}/near.buckets/manifest.json"):  # mid-DAG: dedup has begun
            os.kill(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    proc.wait()
    assert killed, "the run ended before it could be killed"

    outcomes = {o.name: o.status for o in pipeline.run(path)}
    assert outcomes["pages"] == "skipped" and outcomes["bpe"] == "ran"
    assert committed(url) == committed(f"{s3_bucket}/runs/ref")


def test_crawl_into_s3_run_dir(s3_bucket, tmp_path):
    """The crawler's WARC files and frontier live on the store; WARC ingest reads them back."""
    from demo.site import build_site, serve

    site = build_site(tmp_path / "site")
    server = serve(site, 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    url = f"{s3_bucket}/runs/crawl"
    config = {"name": "crawl", "run_dir": url, "stages": {
        "crawl": {"kind": "crawl", "params": {
            "seeds": [base + "/"], "contact_url": "https://example.org/crawler",
            "allow_private": True, "delay_seconds": 0.0, "max_depth": 2, "workers": 2}},
        "pages": {"kind": "ingest_warc", "inputs": ["crawl"]}}}
    try:
        pipeline.run(config)
        local = pipeline.run({**config, "run_dir": str(tmp_path / "local")})
    finally:
        server.shutdown()
        server.server_close()
    remote = json.loads(storage.read_text(f"{url}/pages/stats.json"))
    assert remote["kept"] > 20 and remote["kept"] == local[-1].counts.kept
    warcs = [k for k in committed(url) if k.startswith("crawl/") and k.endswith(".warc.gz")]
    assert warcs and not list(Path.cwd().glob("s3*"))
