"""Raw input files named in a config: globs and fsspec URLs expanded, sorted, and named.

Source stages (ingest, ingest_warc) read files the user names by path, glob or URL
(`s3://bucket/*.jsonl.gz` with s3fs installed). Each file gets a `source` name: its path
relative to the common folder of all local inputs (so document ids do not depend on where
the data sits on this machine), or its full URL for remote files. The fingerprint (size and
modification time or ETag of each file) goes into the stage's cache key, so changing an
input file re-runs the stage. Small reference files (evaluation sets) are fingerprinted by
their content instead (`content_fingerprint`): a copy of them, or the same data set restored
with new times, keeps every stage after them cached.
"""

from __future__ import annotations

import os
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from pipeline.storage import sha256_file


def expand_paths(patterns: list[str], where: str) -> list[tuple[str, str]]:
    """(url, source) for every file the patterns match, sorted; FileNotFoundError naming
    `where` (e.g. "stage 'ingest': params.paths") for a pattern that matches nothing."""
    urls: list[str] = []
    for pattern in patterns:
        fs, _, paths = fsspec.core.get_fs_token_paths(pattern, mode="rb", expand=True)
        if not paths:
            raise FileNotFoundError(f"{where}: no file matches {pattern!r}")
        local = isinstance(fs, LocalFileSystem)
        urls += [p if local else fs.unstrip_protocol(p) for p in paths]
    urls = sorted(set(urls))
    local = [u for u in urls if "://" not in u]
    root = os.path.commonpath([os.path.dirname(u) for u in local]) if local else ""
    return [(u, os.path.relpath(u, root) if u in local and root else u) for u in urls]


def fingerprint_files(files: list[tuple[str, str]]) -> list[list[Any]]:
    """[source, size, mtime-or-ETag] per file; None for a file that cannot be stat'ed."""
    result = []
    for url, source in files:
        try:
            info = fsspec.core.url_to_fs(url)[0].info(url)
            result.append([source, info.get("size"), info.get("mtime") or info.get("ETag")])
        except OSError:
            result.append([source, None, None])
    return result


def content_fingerprint(files: list[tuple[str, str]]) -> list[list[Any]]:
    """[source, sha256] per file (None for a file that cannot be read). For files small
    enough to hash on every run (evaluation sets)."""
    result = []
    for url, source in files:
        try:
            result.append([source, sha256_file(url)])
        except OSError:
            result.append([source, None])
    return result
