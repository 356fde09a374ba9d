"""One `lmforge run` per run directory: a lock file with its holder, and stale-lock takeover.

Two drivers on one run directory would each delete the other's uncommitted files (the
runner removes what no manifest lists) and race on the manifests. So `run` takes
`RUN_DIR/lmforge.lock` first and refuses, naming the holder, when another run has it:

    {"pid": 4242, "host": "node-3", "command": "lmforge run demo.yaml",
     "started": 1796112000.0, "heartbeat": 1796112270.0, "token": "9f0c..."}

Taking it is one exclusive create: `O_CREAT | O_EXCL` on local disk, a conditional PUT
(`If-None-Match: *`) on an object store, so of two racing drivers exactly one wins. The
holder rewrites `heartbeat` every `HEARTBEAT_SECONDS` from a daemon thread, which makes
the file a lease: a lock whose holder is gone is stale and taken over with a warning. Gone
means, on the same host, that its pid is not running; on another host (or a pid that is
running again after a reboot), a heartbeat older than `LEASE_SECONDS`. A driver suspended
for longer than the lease can lose its lock; the limit is stated, not hidden. Only a file
of the lock's shape (or an empty one: a create cut short) is ever taken over and deleted;
any other file by that name is refused with a message, never deleted.

A stage name cannot contain '.', so the lock never collides with a stage directory.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any

from pipeline import storage
from pipeline.storage import StorageError

log = logging.getLogger("lmforge")

LOCK_FILE = "lmforge.lock"
LOCK_KEYS = {"pid", "host", "heartbeat"}  # what proves a lock file is lmforge's
HEARTBEAT_SECONDS = 30.0
LEASE_SECONDS = 300.0


class RunLocked(StorageError):
    """Another run holds the run directory; the message names it."""


class RunLock:
    """`with RunLock(run_dir): ...` holds the run directory for the block."""

    def __init__(self, run_dir: Any, heartbeat: float = HEARTBEAT_SECONDS,
                 lease: float = LEASE_SECONDS):
        self.path = run_dir / LOCK_FILE
        self.heartbeat, self.lease = heartbeat, lease
        self.token = uuid.uuid4().hex
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        for _ in range(3):  # a stale lock is removed, then the create is tried again
            if _create(self.path, self._record()):
                self._thread = threading.Thread(target=self._beat, daemon=True,
                                                name="lmforge-lock-heartbeat")
                self._thread.start()
                return
            holder = _read(self.path)
            if holder is None:
                continue  # released between our create and our read: try again
            if holder.get("foreign"):
                raise RunLocked(f"{self.path}: exists and is not a lock lmforge wrote; lmforge "
                                "deletes only what it wrote: move it, or choose another run_dir")
            why = self._stale(holder)
            if why is None:
                raise RunLocked(f"run directory {self.path.parent} is in use by "
                                f"{_describe(holder)}; wait for it to finish, or if that "
                                f"process is gone, delete {self.path}")
            log.warning("%s: taking over a stale lock (%s: %s)", self.path, _describe(holder), why)
            storage.remove(self.path)
        raise RunLocked(f"{self.path}: could not take the lock (other runs keep taking it)")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            holder = _read(self.path)
            if holder is not None and holder.get("token") == self.token:
                storage.remove(self.path)

    def _record(self) -> bytes:
        return json.dumps({
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(["lmforge", *sys.argv[1:]])[:500],
            "started": self.started,
            "heartbeat": time.time(),
            "token": self.token,
        }, indent=2).encode()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            holder = _read(self.path)
            if holder is None or holder.get("token") != self.token:
                log.error("%s: this run's lock was taken by %s", self.path,
                          _describe(holder) if holder else "nobody (it was deleted)")
                return
            storage.write_bytes(self.path, self._record())

    def _stale(self, holder: dict[str, Any]) -> str | None:
        """Why `holder` no longer holds the lock, or None while it does."""
        age = time.time() - float(holder.get("heartbeat", 0))
        if holder.get("host") == socket.gethostname() and not _alive(holder.get("pid")):
            return "its process is not running"
        if age > self.lease:
            return f"no heartbeat for {age:.0f} s (lease {self.lease:.0f} s)"
        return None


def _create(path: Any, data: bytes) -> bool:
    """Create `path` holding `data` if no file is there; False if one is."""
    if storage.is_local(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True
    try:
        path.fs.pipe_file(path.path, data, mode="create")  # If-None-Match: * where supported
    except FileExistsError:
        return False
    except OSError:
        path.fs.invalidate_cache(path.path)
        if path.fs.exists(path.path):  # s3fs reports 412 Precondition Failed as an OSError
            return False
        raise
    return True


def _read(path: Any) -> dict[str, Any] | None:
    try:
        data = json.loads(storage.read_text(path))
    except FileNotFoundError:
        return None
    except ValueError:
        data = None
    if isinstance(data, dict) and LOCK_KEYS <= data.keys():
        return data
    if _size(path) == 0:  # created, not yet written (this instant, or a kill): its age decides
        return {"command": "a lock being written", "heartbeat": _mtime(path)}
    # Not a lock lmforge wrote: never taken over, hence never deleted.
    return {"command": "a file that is not an lmforge lock", "foreign": True}


def _size(path: Any) -> int:
    try:
        return path.stat().st_size if storage.is_local(path) else int(path.fs.size(path.path))
    except (OSError, NotImplementedError):
        return -1


def _mtime(path: Any) -> float:
    try:
        if storage.is_local(path):
            return path.stat().st_mtime
        return path.fs.modified(path.path).timestamp()
    except (OSError, NotImplementedError):
        return time.time()


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _describe(holder: dict[str, Any]) -> str:
    started = holder.get("started")
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return (f"'{holder.get('command', '?')}' (pid {holder.get('pid', '?')} on host "
            f"{holder.get('host', '?')}, started {since})")
