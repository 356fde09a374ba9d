"""Where a run directory lives: a local folder or any fsspec URL (s3://, gs://, memory://).

`run_location(text)` turns the config's `run_dir` into a path object: a `pathlib.Path` for a
local folder, a `upath.UPath` (pathlib's API over fsspec) for a URL. Engine and stages then
join, list, read and delete with the same calls wherever the run directory is. A URL whose
filesystem is not installed is an error that names the extra to install, never a local
folder named `s3:`.

Writing keeps the commit promise on stores without rename. Every file is first
written whole to a local temporary file (`local_tmp_for`): beside its final name on local
disk, in this process's temp folder otherwise. `commit` then makes it visible in one step:
local disk fsyncs, renames over the final name and fsyncs the folder; an object store gets
one upload of the finished file (a single PUT, or a multipart upload that the store shows
only once it completes), so no reader ever sees a partial object. A task that runs twice
writes the same bytes to the same key; only the driver's manifest says a file is done.

Reading: `open_input` streams any committed file; `local_copy` gives a local path for
readers that need one (memory-mapped token shards, fastText and tokenizer files), fetched
once into a cache folder and checked against the manifest's sha256.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO, Any

import fsspec

TMP_MARK = ".tmp-"

# pip extra that brings the filesystem of each protocol a user is likely to name.
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure",
          "abfss": "azure"}


class StorageError(ValueError):
    """A run directory that cannot be used: unknown protocol, filesystem not installed."""


def is_url(text: str | os.PathLike) -> bool:
    return "://" in str(text)


def run_location(text: str | os.PathLike) -> Any:
    """A local `Path`, or a `UPath` for a URL; StorageError if its filesystem is missing."""
    if hasattr(text, "fs"):
        return text  # already a UPath
    if isinstance(text, Path) or not is_url(text):
        return Path(text)
    text = str(text)
    protocol = text.split("://", 1)[0]
    if protocol == "file":
        return Path(text[len("file://"):])
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        extra = EXTRAS.get(protocol)
        hint = f"pip install 'lmforge[{extra}]'" if extra else str(exc)
        raise StorageError(
            f"run directory {text!r}: the filesystem for '{protocol}://' is not installed "
            f"({hint})"
        ) from None
    except ValueError:
        raise StorageError(f"run directory {text!r}: unknown protocol '{protocol}://'") from None
    from upath import UPath

    return UPath(text)


def is_local(path: Any) -> bool:
    """True for a local path (a str or Path without a URL scheme)."""
    return not is_url(path)


def local_tmp_for(final: Any) -> Path:
    """A unique local file to write `final`'s bytes into before `commit`."""
    name = f"{final.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if is_local(final):
        tmp = Path(final).with_name(name)
    else:
        tmp = Path(tempfile.gettempdir()) / "lmforge-upload" / name
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return tmp


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: Path, final: Any) -> None:
    """Make the finished local file `tmp` visible as `final` in one step, then drop `tmp`."""
    if is_local(final):
        final = Path(final)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
        return
    try:
        final.fs.put_file(str(tmp), final.path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(final: Any, data: bytes) -> None:
    """Write a small file whole and commit it (a manifest, a journal entry, stats)."""
    tmp = local_tmp_for(final)
    tmp.write_bytes(data)
    commit(tmp, final)


def open_input(path: str | Any, mode: str = "rb") -> IO:
    """Open a committed file (local path, URL string or UPath) for reading."""
    if hasattr(path, "fs"):
        return path.open(mode)
    if not is_url(path):
        return open(path, mode)
    return fsspec.open(str(path), mode).open()


def read_text(path: str | Any) -> str:
    with open_input(path, "rb") as f:
        return f.read().decode("utf-8")


def remove_tree(path: Any) -> None:
    """Delete a folder and everything under it; nothing if it does not exist."""
    if is_local(path):
        if Path(path).exists():
            shutil.rmtree(path)
        return
    path.fs.invalidate_cache(path.path)
    if path.fs.exists(path.path):
        path.fs.rm(path.path, recursive=True)


def files_under(path: Any) -> list[Any]:
    """Every file below `path` (recursively), as path objects; [] if it does not exist."""
    if is_local(path):
        return [p for p in Path(path).rglob("*") if p.is_file()] if Path(path).exists() else []
    root = path.path.rstrip("/")
    path.fs.invalidate_cache(root)  # other processes (workers) may have written since
    return [path / key[len(root) + 1:] for key in sorted(path.fs.find(root))]


def file_sizes(path: Any) -> dict[str, int]:
    """Size of every file below folder `path`, by its path relative to it (one listing)."""
    if is_local(path):
        root = Path(path)
        return {p.relative_to(root).as_posix(): p.stat().st_size for p in files_under(root)}
    root = path.path.rstrip("/")
    path.fs.invalidate_cache(root)
    found = path.fs.find(root, detail=True)
    return {key[len(root) + 1:]: int(info["size"]) for key, info in found.items()
            if info.get("type", "file") == "file"}


def list_files(path: Any) -> list[Any]:
    """The files directly in folder `path` (not below), sorted; [] if it does not exist."""
    if is_local(path):
        path = Path(path)
        return sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else []
    root = path.path.rstrip("/")
    path.fs.invalidate_cache(root)
    if not path.fs.exists(root):
        return []
    entries = path.fs.ls(root, detail=True)
    return [path / e["name"].rstrip("/").rsplit("/", 1)[-1]
            for e in sorted(entries, key=lambda e: e["name"]) if e["type"] == "file"]


def remove_files(paths: list[Any]) -> None:
    """Delete files (a batch request on an object store)."""
    if not paths:
        return
    if is_local(paths[0]):
        for p in paths:
            Path(p).unlink(missing_ok=True)
        return
    paths[0].fs.rm([p.path for p in paths])


def remove(path: Any) -> None:
    if is_local(path):
        Path(path).unlink(missing_ok=True)
    elif path.fs.exists(path.path):
        path.fs.rm_file(path.path)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open_input(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_root() -> Path:
    """Where remote files needed as local paths are kept (LMFORGE_CACHE, else a temp dir)."""
    root = os.environ.get("LMFORGE_CACHE") or os.path.join(tempfile.gettempdir(), "lmforge-cache")
    return Path(root)


def local_copy(url: str, sha256: str | None = None, cache: Path | None = None) -> Path:
    """A local path holding the bytes of `url`: the path itself when local, else a copy
    fetched once into the cache (named by its sha256 when given, and checked against it)."""
    if not is_url(url):
        return Path(url)
    cache = cache or cache_root()
    name = url.rsplit("/", 1)[-1]
    key = sha256 or hashlib.sha256(url.encode()).hexdigest()
    final = cache / key[:2] / key / name
    if final.exists() and (sha256 is None or sha256_file(final) == sha256):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with open_input(url) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    got = sha256_file(tmp)
    if sha256 is not None and got != sha256:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"{url}: sha256 {got} does not match the manifest's {sha256}")
    os.replace(tmp, final)
    return final


def local_folder(files: list[tuple[str, str | None]], cache: Path | None = None) -> Path:
    """A local folder holding `files` ((url, sha256) pairs) under their base names, for
    readers that want a folder (the trainer's token shards): each remote file fetched once
    into the cache and checked, then linked in. The folder is built under a temp name and
    renamed, so a folder that exists is complete."""
    cache = cache or cache_root()
    key = hashlib.sha256("\n".join(f"{u} {s}" for u, s in sorted(files)).encode()).hexdigest()
    folder = cache / "folders" / key[:16]
    if folder.is_dir():
        return folder
    tmp = folder.with_name(f"{folder.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    for url, sha in files:
        source = local_copy(url, sha, cache)
        try:
            os.link(source, tmp / source.name)
        except OSError:  # another filesystem: copy
            shutil.copyfile(source, tmp / source.name)
    try:
        os.rename(tmp, folder)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
