"""A stage's `manifest.json`: cache key, completion flag, one entry per finished task.

Entries arrive one per finished task; rewriting a JSON file with thousands of entries after
each would cost O(tasks^2), and an object store cannot append. So a running stage writes
each entry as one small file of its own, `journal.<task>.json`, committed whole (rename on
local disk, one PUT on an object store) before the next task is recorded; `manifest.json`
is rewritten when the stage starts and when it completes, at which point the journal
entries are folded in and removed. Loading replays the journal over the JSON; an entry that
cannot be read (a kill mid-write leaves none, but a damaged file might) is ignored, so its
task simply runs again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipeline import storage
from pipeline.artifacts import MANIFEST, write_json_atomic
from pipeline.storage import StorageError

log = logging.getLogger("lmforge")

MANIFEST_VERSION = 1
JOURNAL_PREFIX = "journal."


class ManifestError(StorageError):
    """A manifest.json lmforge cannot trust: not JSON, or not the shape it writes."""


class Manifest:
    def __init__(self, stage_dir: Path, data: dict[str, Any]):
        self.stage_dir = stage_dir
        self.data = data

    @classmethod
    def load(cls, stage_dir: Path) -> Manifest | None:
        """The stage's manifest with its journal replayed; None when there is none or it is
        of another manifest version (the stage runs again). A manifest that is not JSON
        or not of the shape lmforge writes raises ManifestError naming it: the folder may
        not be lmforge's, so nothing in it is trusted or deleted."""
        path = stage_dir / MANIFEST
        if not path.exists():
            return None
        try:
            data = json.loads(storage.read_text(path))
        except ValueError as exc:
            raise ManifestError(f"{path}: not valid JSON ({exc}); lmforge deletes only what it "
                                f"can prove it wrote: delete {stage_dir} to run the stage again"
                                ) from None
        if isinstance(data, dict) and "manifest_version" in data \
                and data["manifest_version"] != MANIFEST_VERSION:
            return None
        problem = _shape_problem(data)
        if problem:
            raise ManifestError(f"{path}: not a manifest lmforge wrote ({problem}); delete "
                                f"{stage_dir} to run the stage again")
        for journal in _journal_files(stage_dir):
            try:
                record = json.loads(storage.read_text(journal))
            except ValueError:
                record = None
            if not (isinstance(record, dict) and isinstance(record.get("task"), str)
                    and not _entry_problem(record.get("entry"))):
                log.warning("%s: unreadable journal entry, its task will run again", journal)
                continue
            data["tasks"][record["task"]] = record["entry"]
        return cls(stage_dir, data)

    @classmethod
    def new(cls, stage_dir: Path, name: str, kind: str, version: int, key: str,
            declared: dict[str, Any] | None = None) -> Manifest:
        """`declared`: what the stage kind says of itself for status and report
        (`Stage.declared()`: units, filters, report_files)."""
        return cls(stage_dir, {
            "manifest_version": MANIFEST_VERSION,
            "stage": name,
            "kind": kind,
            **(declared or {}),
            "stage_version": version,
            "cache_key": key,
            "complete": False,
            "tasks": {},
        })

    @property
    def tasks(self) -> dict[str, Any]:
        return self.data["tasks"]

    @property
    def complete(self) -> bool:
        return self.data["complete"]

    def files(self) -> list[str]:
        return [f["path"] for f in self.entries()]

    def checksums(self) -> list[tuple[str, str]]:
        """(path, sha256) of every committed file, in the order of `files()`."""
        return [(f["path"], f["sha256"]) for f in self.entries()]

    def entries(self) -> list[dict[str, Any]]:
        """Every committed file's entry (path, sha256, docs, bytes), in the order of `files()`."""
        return sorted((f for t in self.tasks.values() for f in t["files"]), key=lambda f: f["path"])

    def drop(self, task_names: set[str]) -> None:
        """Forget tasks (their files are damaged): the stage is resumed to redo them."""
        for name in task_names:
            self.tasks.pop(name, None)
        self.data["complete"] = False
        self.save()

    def task_of(self) -> dict[str, str]:
        """The task that wrote each committed file (path relative to the stage dir)."""
        return {f["path"]: name for name, t in self.tasks.items() for f in t["files"]}

    def damaged(self) -> dict[str, str]:
        """Committed files that are missing or not of the size recorded, by path relative to
        the stage dir, with what is wrong (one listing; no file is read)."""
        sizes = storage.file_sizes(self.stage_dir)
        problems = {}
        for f in self.entries():
            size = sizes.get(f["path"])
            if size is None:
                problems[f["path"]] = "missing"
            elif size != f["bytes"]:
                problems[f["path"]] = f"{size} bytes, the manifest says {f['bytes']}"
        return problems

    def record(self, task_name: str, entry: dict[str, Any]) -> None:
        """Add a finished task's entry durably: after this returns, the task is done."""
        self.tasks[task_name] = entry
        write_json_atomic(self.stage_dir / _journal_name(task_name),
                          {"task": task_name, "entry": entry})

    def save(self) -> None:
        """Rewrite manifest.json with every entry, then drop the journal it now contains."""
        write_json_atomic(self.stage_dir / MANIFEST, self.data)
        for journal in _journal_files(self.stage_dir):
            storage.remove(journal)


_FILE_KEYS = {"path": str, "sha256": str, "docs": int, "bytes": int}


def _entry_problem(entry: Any) -> str | None:
    """What is wrong with one task entry, or None."""
    if not isinstance(entry, dict):
        return "a task entry is not a mapping"
    if not isinstance(entry.get("files"), list) or not isinstance(entry.get("counts"), dict):
        return "a task entry lacks its files list or counts"
    if any(not isinstance(entry["counts"].get(k), int) for k in ("in", "kept")) or any(
            not isinstance(entry["counts"].get(k), dict) for k in ("dropped", "errors")):
        return "a task entry's counts lack in, kept, dropped or errors"
    for f in entry["files"]:
        if not isinstance(f, dict) or any(not isinstance(f.get(k), t) for k, t in _FILE_KEYS.items()):
            return f"file entry {f!r:.80} lacks one of {', '.join(_FILE_KEYS)}"
        if f["path"].startswith("/") or ".." in f["path"].split("/"):
            return f"file entry {f['path']!r} is outside the stage directory"
    return None


def _shape_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "the top level is not a mapping"
    for key, kind in (("stage", str), ("kind", str), ("cache_key", str), ("complete", bool),
                      ("tasks", dict)):
        if not isinstance(data.get(key), kind):
            return f"'{key}' missing or not a {kind.__name__}"
    for name, entry in data["tasks"].items():
        problem = _entry_problem(entry)
        if problem:
            return f"task '{name}': {problem}"
    return None


def _journal_name(task_name: str) -> str:
    return f"{JOURNAL_PREFIX}{quote(task_name, safe='')}.json"


def _journal_files(stage_dir: Path) -> list[Path]:
    return [p for p in storage.list_files(stage_dir)
            if p.name.startswith(JOURNAL_PREFIX) and p.name.endswith(".json")]


def fetch_listed(location: str) -> str:
    """A local path for a file or folder of a run directory given as a URL (a tokenize
    stage, its `shards/` folder, one shard), for tools that need local files (the trainer,
    inspect-shards): only the files its stage's manifest lists are fetched, once, into the
    local cache, each checked against the manifest's sha256. Local paths come back as they
    are."""
    if storage.is_local(location):
        return location
    path = storage.run_location(location)
    stage_dir = next((d for d in (path, path.parent, path.parent.parent)
                      if (d / MANIFEST).exists()), None)
    if stage_dir is None:
        raise FileNotFoundError(f"{location}: no stage {MANIFEST} at or above it "
                                "(only files a manifest lists are read from a run directory)")
    manifest = Manifest.load(stage_dir)
    rel = path.relative_to(stage_dir).as_posix() if path != stage_dir else "shards"
    listed = manifest.checksums() if manifest else []
    exact = [sha for p, sha in listed if p == rel]
    if exact:
        return str(storage.local_copy(str(path), exact[0]))
    inside = [(str(stage_dir / p), sha) for p, sha in listed if p.startswith(rel + "/")]
    if not inside:
        raise FileNotFoundError(f"{location}: {stage_dir / MANIFEST} lists no file under {rel}/")
    return str(storage.local_folder(inside))
