"""Runs a config: stages in DAG order, each skipped, resumed or run from scratch.

A run holds the run directory's lock (pipeline/lock.py) from start to end, so a second
`lmforge run` on it refuses, naming the first, instead of deleting its temporary files.

For each stage the driver computes its cache key and reads `manifest.json`:
- same key and `complete`: skipped, after one listing checks that every committed file is
  there with its recorded size; the tasks whose files are missing or resized run again;
- same key, not complete (a killed run): files not in the manifest and temp files are
  deleted, and only the tasks without a manifest entry run;
- another key, no manifest, or `--force`: the stage directory is wiped and all tasks run.
After each task the driver checks the funnel invariant and records the task's files in the
manifest. When all tasks are in, it checks the error budget, writes `stats.json` and marks
the manifest complete. Tasks check each input file they open against its manifest sha256
(pipeline/artifacts.py, `verified_inputs`), so a damaged upstream shard stops the stage
with its name instead of changing the output.

lmforge deletes only what it can prove it wrote. A stage directory is the run's when it
holds a `manifest.json` of lmforge's shape (the first file a stage writes, the last one a
wipe deletes); a folder at a stage's path without one is refused with a message, never
deleted. The same holds for `run.json` at the top of the run directory.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import storage
from pipeline.artifacts import MANIFEST, STATS, TMP_MARK, write_json_atomic
from pipeline.lock import RunLock
from pipeline.manifest import Manifest
from pipeline.progress import StageProgress
from pipeline.config import Config, ConfigError, LoadedStage
from pipeline.dag import ancestors, cache_key, descendants
from pipeline.stage import Counts, Stage, StageInput, Task, TaskResult
from pipeline.status import RUN_FILE
from pipeline.storage import StorageError

log = logging.getLogger("lmforge")


class StageFailed(RuntimeError):
    """A stage could not complete; the message names the stage, shard and first errors."""


@dataclass
class StageOutcome:
    name: str
    status: str  # "skipped", "ran" or "resumed"
    cache_key: str
    counts: Counts


def stage_input(run_dir: Path, name: str) -> StageInput:
    stage_dir = _absolute(run_dir / name)
    manifest = Manifest.load(stage_dir)
    if manifest is None or not manifest.complete:
        raise StageFailed(f"stage '{name}': its output is not complete in {stage_dir}")
    entries = manifest.entries()
    return StageInput(
        name=name,
        kind=manifest.data["kind"],
        directory=stage_dir,
        files=tuple(str(stage_dir / f["path"]) for f in entries),
        sha256=tuple(f["sha256"] for f in entries),
        kept=_total(manifest).kept,
        docs=tuple(f["docs"] for f in entries),
    )


def build_stage(run_dir: Path, spec: LoadedStage) -> Stage:
    return spec.stage_class(spec.name, spec.params, _absolute(run_dir / spec.name))


def _absolute(path: Path) -> Path:
    """Local paths resolved (tasks may run in another working directory); URLs as they are."""
    return path.resolve() if storage.is_local(path) else path


def stage_cache_keys(config: Config) -> dict[str, str]:
    keys: dict[str, str] = {}
    for name, spec in config.stages.items():
        stage = build_stage(config.run_dir, spec)
        keys[name] = cache_key(
            spec.config.kind,
            spec.stage_class.version,
            spec.params.model_dump(mode="json"),
            stage.fingerprint(),
            [keys[i] for i in spec.inputs],
        )
    return keys


def run_config(
    config: Config,
    executor: Any,
    force: list[str] | None = None,
    until: str | None = None,
    run_dir: Path | None = None,
) -> list[StageOutcome]:
    """Run (or skip) every stage of `config`; return what happened to each."""
    if run_dir is not None:
        config.run.run_dir = str(run_dir)
    run_dir = config.run_dir
    graph = {n: s.inputs for n, s in config.stages.items()}
    for name in [*(force or []), *([until] if until else [])]:
        if name not in graph:
            raise ConfigError(f"{config.path}: no stage named '{name}' (stages: {', '.join(graph)})")
    forced = descendants(graph, force or [])
    selected = ancestors(graph, until) if until else set(graph)
    keys = stage_cache_keys(config)
    with RunLock(run_dir):
        _check_run_file(run_dir / RUN_FILE)
        write_json_atomic(run_dir / RUN_FILE, {
            "name": config.name,
            "config": str(config.path),
            "stages": list(config.stages),
            "cache_keys": keys,
        })
        return [_run_stage(config, spec, keys[name], executor, name in forced)
                for name, spec in config.stages.items() if name in selected]


def _check_run_file(path: Path) -> None:
    """Refuse to overwrite a `run.json` that lmforge did not write."""
    if not path.exists():
        return
    try:
        data = json.loads(storage.read_text(path))
    except ValueError:
        data = None
    if not (isinstance(data, dict) and "cache_keys" in data and "stages" in data):
        raise StorageError(f"{path}: exists and is not lmforge's run record; lmforge "
                           "overwrites only what it wrote: move it or choose another run_dir")


def _run_stage(config: Config, spec: LoadedStage, key: str, executor: Any,
               forced: bool) -> StageOutcome:
    run_dir = config.run_dir
    stage_dir = run_dir / spec.name
    manifest = Manifest.load(stage_dir)
    if manifest and manifest.data["cache_key"] == key and manifest.complete and not forced:
        damaged = manifest.damaged()
        if not damaged:
            log.info("stage %s: up to date, skipped", spec.name)
            return StageOutcome(spec.name, "skipped", key, _total(manifest))
        owners = manifest.task_of()
        redo = {owners[path] for path in damaged}
        shown = "; ".join(f"{path}: {why}" for path, why in sorted(damaged.items())[:5])
        log.warning("stage %s: committed files damaged (%s); re-running %d task(s): %s",
                    spec.name, shown, len(redo), ", ".join(sorted(redo)[:5]))
        manifest.drop(redo)

    if manifest is None:
        _check_owned(stage_dir)
    if manifest is None or manifest.data["cache_key"] != key or forced:
        _wipe(stage_dir)
        manifest = Manifest.new(stage_dir, spec.name, spec.config.kind,
                                spec.stage_class.version, key, spec.stage_class.declared())
        manifest.save()  # the folder's first file: what proves it is the run's
        status = "ran"
    else:
        status = "resumed"
    stage = build_stage(run_dir, spec)
    _remove_uncommitted(stage_dir, manifest, stage.scratch_dirs)

    inputs = [stage_input(run_dir, i) for i in spec.inputs]
    stage.input_checksums = {f: sha for i in inputs for f, sha in zip(i.files, i.sha256)}
    empty = [i.name for i in inputs if i.kept == 0]
    if stage.needs_documents and empty:
        raise StageFailed(f"stage '{spec.name}' ({spec.config.kind}): upstream stage "
                          f"'{empty[0]}' produced no documents, so there is nothing to train "
                          f"on; see `lmforge status {run_dir}` for where they were dropped")
    tasks = stage.tasks(inputs)
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise StageFailed(f"stage '{spec.name}': task names are not unique: {names}")
    pending = [t for t in tasks if t.name not in manifest.tasks]
    log.info(
        "stage %s (%s): %d tasks, %d to run on %s executor",
        spec.name, spec.config.kind, len(tasks), len(pending), executor.name,
    )
    manifest.save()

    start = time.perf_counter()
    file_docs = {f: d for i in inputs for f, d in zip(i.files, i.docs)}
    total = sum(file_docs.get(p, 0) for t in tasks for p in t.inputs) if stage.doc_stage else 0
    progress = StageProgress(spec.name, len(tasks), len(tasks) - len(pending),
                             sum(t["counts"]["in"] for t in manifest.tasks.values()), total)
    try:
        for task, result in executor.map(stage, pending, progress.report):
            if stage.doc_stage and not result.counts.balanced():
                raise StageFailed(
                    f"stage '{spec.name}', shard '{task.name}': accounting does not balance: "
                    f"{result.counts.to_dict()}"
                )
            manifest.record(task.name, {
                "files": [vars(f) for f in result.files],
                "counts": result.counts.to_dict(),
                "seconds": round(result.seconds, 4),
                "first_errors": result.first_errors,
                "info": result.info,
            })
            progress.task_done(task.name, result.counts.n_in)
    finally:
        progress.close()
    wall = time.perf_counter() - start

    _remove_uncommitted(stage_dir, manifest, stage.scratch_dirs)  # leftovers of attempts that died on a worker
    total = _total(manifest)
    _check_error_budget(spec, manifest, total)
    stats = _stats(spec, manifest, total, wall, executor)
    write_json_atomic(stage_dir / STATS, stats)
    manifest.data["complete"] = True
    manifest.save()  # folds the journal into manifest.json
    log.info(
        "stage %s: in %d, kept %d, dropped %d, errors %d (%.1fs)",
        spec.name, total.n_in, total.kept, sum(total.dropped.values()),
        sum(total.errors.values()), wall,
    )
    return StageOutcome(spec.name, status, key, total)


def _check_owned(stage_dir: Path) -> None:
    """Refuse a folder at a stage's path that holds files and no manifest: not ours."""
    foreign = [p for p in storage.files_under(stage_dir)
               if not (p.parent == stage_dir and p.name.startswith(MANIFEST + TMP_MARK))]
    if foreign:
        shown = ", ".join(p.relative_to(stage_dir).as_posix() for p in foreign[:3])
        raise StorageError(
            f"{stage_dir}: exists and holds files lmforge did not write ({shown}"
            f"{', ...' if len(foreign) > 3 else ''}; no {MANIFEST}); lmforge deletes only what "
            "it wrote: move them, or choose another run_dir or stage name"
        )


def _wipe(stage_dir: Path) -> None:
    """Delete a stage directory of this run, its manifest last: a wipe cut short by a kill
    leaves a folder that is still provably the run's."""
    marker = stage_dir / MANIFEST
    storage.remove_files([p for p in storage.files_under(stage_dir)
                          if p.relative_to(stage_dir).as_posix() != MANIFEST])
    storage.remove(marker)
    storage.remove_tree(stage_dir)


def _remove_uncommitted(stage_dir: Path, manifest: Manifest, scratch_dirs: tuple[str, ...]) -> None:
    """Delete temp files and files no manifest entry vouches for (a killed run's leftovers)."""
    committed = set(manifest.files())
    for path in storage.files_under(stage_dir):
        rel = path.relative_to(stage_dir).as_posix()
        if "/" not in rel:  # manifest, journal, stats and logs live at the top
            if TMP_MARK in path.name:
                storage.remove(path)
            continue
        if rel.split("/", 1)[0] in scratch_dirs:
            continue
        if TMP_MARK in path.name or rel not in committed:
            storage.remove(path)


def _total(manifest: Manifest) -> Counts:
    total = Counts()
    for entry in manifest.tasks.values():
        total.add(Counts.from_dict(entry["counts"]))
    return total


def _check_error_budget(spec: LoadedStage, manifest: Manifest, total: Counts) -> None:
    failed = sum(total.errors.values())
    if not total.n_in or failed / total.n_in <= spec.config.max_error_fraction:
        return
    shards = [(n, t) for n, t in sorted(manifest.tasks.items()) if t["counts"]["errors"]]
    firsts = [e for _, t in shards for e in t["first_errors"]][:5]
    raise StageFailed(
        f"stage '{spec.name}': {failed} of {total.n_in} documents failed "
        f"({failed / total.n_in:.1%} > max_error_fraction {spec.config.max_error_fraction}); "
        f"shards with errors: {', '.join(n for n, _ in shards[:10])}; first errors:\n  "
        + "\n  ".join(firsts)
    )


def _stats(spec: LoadedStage, manifest: Manifest, total: Counts, wall: float,
           executor: Any) -> dict[str, Any]:
    task_seconds = sum(t["seconds"] for t in manifest.tasks.values())
    return {
        "stage": spec.name,
        "kind": spec.config.kind,
        **total.to_dict(),
        "tasks": len(manifest.tasks),
        "wall_seconds": round(wall, 4),
        "task_seconds": round(task_seconds, 4),
        "docs_per_second": round(total.n_in / wall, 2) if wall > 0 else None,
        "docs_per_second_per_core": round(total.n_in / task_seconds, 2) if task_seconds else None,
        "mb_per_second_per_core": (
            round(total.bytes_in / 1e6 / task_seconds, 3) if task_seconds else None
        ),
        "executor": executor.name,
        "workers": executor.workers,
        "shards": {n: t["counts"] for n, t in sorted(manifest.tasks.items())},
        "info": {n: t["info"] for n, t in sorted(manifest.tasks.items()) if t["info"]},
    }
