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
