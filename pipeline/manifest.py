"""A stage's `manifest.json`: cache key, completion flag, one entry per finished task.

Entries arrive one per finished task; rewriting a JSON file with thousands of entries after
each would cost O(tasks^2). So a running stage appends each entry as one line to
`manifest.journal` (flushed and fsynced before the next task is recorded), and
`manifest.json` is rewritten atomically when the stage starts and when it completes, at
which point the journal is folded in and removed. Loading replays the journal over the
JSON; a torn last line (a kill mid-append) is ignored, so its task simply runs again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from pipeline.artifacts import MANIFEST, write_json_atomic

log = logging.getLogger("lmforge")

MANIFEST_VERSION = 1
JOURNAL = "manifest.journal"


class Manifest:
    def __init__(self, stage_dir: Path, data: dict[str, Any]):
        self.stage_dir = stage_dir
        self.data = data

    @classmethod
    def load(cls, stage_dir: Path) -> Manifest | None:
        path = stage_dir / MANIFEST
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
        except ValueError:
            log.warning("%s: unreadable manifest, the stage will run again", path)
            return None
        if data.get("manifest_version") != MANIFEST_VERSION:
            return None
        journal = stage_dir / JOURNAL
        if journal.exists():
            for line in journal.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    break  # torn write at the kill point: that task was never committed
                data["tasks"][entry["task"]] = entry["entry"]
        return cls(stage_dir, data)

    @classmethod
    def new(cls, stage_dir: Path, name: str, kind: str, version: int, key: str,
            units: str = "documents") -> Manifest:
        return cls(stage_dir, {
            "manifest_version": MANIFEST_VERSION,
            "stage": name,
            "kind": kind,
            "stage_version": version,
            "cache_key": key,
            "units": units,  # what the task counts' `in` and `kept` count
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
        return sorted(f["path"] for t in self.tasks.values() for f in t["files"])

    def record(self, task_name: str, entry: dict[str, Any]) -> None:
        """Add a finished task's entry durably: after this returns, the task is done."""
        self.tasks[task_name] = entry
        line = json.dumps({"task": task_name, "entry": entry}, sort_keys=True) + "\n"
        with open(self.stage_dir / JOURNAL, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def save(self) -> None:
        """Rewrite manifest.json with every entry, then drop the journal it now contains."""
        write_json_atomic(self.stage_dir / MANIFEST, self.data)
        (self.stage_dir / JOURNAL).unlink(missing_ok=True)
