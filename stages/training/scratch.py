"""Where a training stage's trainer works: `train/` in the stage directory, on local disk.

The trainer memory-maps token shards and writes checkpoints and `log.jsonl` into a local
folder. For a run directory on local disk that folder is simply `<stage>/train` (scratch
that survives a killed run, so a re-run resumes). For a run directory on an object store:

- the input files (token shards and their tokenizer, or an upstream model folder) are
  fetched once into a local cache folder, each checked against the upstream manifest's
  sha256 (`pipeline.storage.local_folder`);
- the trainer works in a local folder named after the stage URL, first filled with what
  `<stage>/train` on the store holds: the checkpoints a killed run uploaded, and its log;
- every checkpoint the trainer writes is uploaded to `<stage>/train/checkpoints/<step>/`,
  file by file, then a marker `<step>.done`, with the log; only marked checkpoints are
  downloaded on resume, and checkpoints the trainer pruned are deleted from the store.

So a run whose worker dies resumes from its newest uploaded checkpoint on any machine.
Memory: one file at a time in 1 MiB blocks.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from pipeline import storage

SCRATCH = "train"
CHECKPOINTS = "checkpoints"
LOG = "log.jsonl"
DONE = ".done"


def local_inputs(files: tuple[str, ...], sha256: tuple[str | None, ...]) -> Path:
    """The local folder holding `files` (all in one folder): that folder itself on local
    disk, else a cached copy of each file checked against its manifest sha256."""
    if storage.is_local(files[0]):
        return Path(files[0]).parent
    return storage.local_folder(list(zip(files, sha256)))


class TrainingScratch:
    """The trainer's local output folder for a stage, mirrored to `<stage>/train` when the
    stage directory is on an object store."""

    def __init__(self, stage_dir: Any):
        self.remote = None if storage.is_local(stage_dir) else stage_dir / SCRATCH
        if self.remote is None:
            self.local = Path(stage_dir) / SCRATCH
        else:
            key = hashlib.sha256(str(stage_dir).encode()).hexdigest()[:16]
            self.local = storage.cache_root() / "scratch" / key / SCRATCH

    @property
    def log(self) -> Path:
        return self.local / LOG

    def pull(self) -> None:
        """Fill the local folder with the uploaded checkpoints and log of an earlier run."""
        if self.remote is None:
            return
        remote_checkpoints = self.remote / CHECKPOINTS
        done = {p.name[: -len(DONE)] for p in storage.list_files(remote_checkpoints)
                if p.name.endswith(DONE)}
        local_checkpoints = self.local / CHECKPOINTS
        local_checkpoints.mkdir(parents=True, exist_ok=True)
        for step in sorted(done):
            target = local_checkpoints / step
            if target.is_dir():
                continue
            tmp = local_checkpoints / f".tmp-pull-{step}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            for f in storage.list_files(remote_checkpoints / step):
                _download(f, tmp / f.name)
            tmp.rename(target)
        if (self.remote / LOG).exists():
            _download(self.remote / LOG, self.log)

    def push(self, checkpoint: Path) -> None:
        """Upload a checkpoint the trainer just wrote (and the log); drop pruned ones."""
        if self.remote is None:
            return
        remote_checkpoints = self.remote / CHECKPOINTS
        for f in sorted(checkpoint.iterdir()):
            _upload(f, remote_checkpoints / checkpoint.name / f.name)
        storage.write_bytes(remote_checkpoints / f"{checkpoint.name}{DONE}", b"")
        if self.log.exists():
            _upload(self.log, self.remote / LOG)
        kept = {p.name for p in (self.local / CHECKPOINTS).iterdir() if p.is_dir()}
        for marker in storage.list_files(remote_checkpoints):
            step = marker.name[: -len(DONE)]
            if marker.name.endswith(DONE) and step not in kept:
                storage.remove(marker)  # unmark first: a half-deleted step is never pulled
                storage.remove_tree(remote_checkpoints / step)


def uploading(trainer_class: type, scratch: TrainingScratch) -> type:
    """`trainer_class` whose checkpoints are also pushed to the store as they are written."""

    class Uploading(trainer_class):
        def save_checkpoint(self):
            path = super().save_checkpoint()
            if path is not None:
                scratch.push(Path(path))
            return path

    Uploading.__name__ = trainer_class.__name__
    return Uploading


def _download(source: Any, target: Path) -> None:
    tmp = target.with_name(f"{target.name}{storage.TMP_MARK}pull")
    target.parent.mkdir(parents=True, exist_ok=True)
    with storage.open_input(source) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    tmp.replace(target)


def _upload(source: Path, target: Any) -> None:
    tmp = storage.local_tmp_for(target)
    shutil.copyfile(source, tmp)
    storage.commit(tmp, target)
