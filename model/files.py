"""Durable writes on the model side: ``fsync`` a file or a directory by path.

A file is written in full, fsynced, renamed into place, and its directory fsynced, so that
after a crash a reader finds either the old state or the complete new file (token shards,
``model/token_shards.py``; checkpoints, ``model/checkpoint.py``).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync(path: str | Path) -> None:
    """Flush a file's or a directory's entries to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
