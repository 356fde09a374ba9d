"""Shared test fixtures: small configs written to a temp dir and run through the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a config dict as YAML under tmp_path; return its path."""

    def write(config: dict[str, Any], name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    return write


def shard_bytes(stage_dir: Path) -> dict[str, bytes]:
    """Every committed output file of a stage (shards and rejected), by relative path."""
    return {
        p.relative_to(stage_dir).as_posix(): p.read_bytes()
        for sub in ("shards", "rejected")
        for p in sorted((stage_dir / sub).glob("*"))
        if p.is_file()
    }


@pytest.fixture
def one_thread():
    """torch on one thread: tiny matmuls on a shared 2-core machine gain nothing from more."""
    import torch  # here, so that tests without torch never import it

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server for the session: moto's standalone server on 127.0.0.1
    and a free port. The AWS_* variables point boto and s3fs at it; child processes (CLI
    runs, dask scheduler and workers) inherit them. Yields the endpoint URL."""
    import logging
    import os
    import socket

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per HTTP request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket on the session's S3 server; returns its URL, `s3://NAME`."""
    import re
    import uuid

    import fsspec

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    bucket = f"{name}-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("s3")
    fs.mkdir(bucket)
    fs.invalidate_cache()
    return f"s3://{bucket}"
