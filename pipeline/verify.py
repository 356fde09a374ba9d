"""`lmforge verify RUN_DIR [--repair]`: hash every committed file against its manifest.

`lmforge run` checks cheaply (sizes from one listing before a stage is skipped; sha256 of
each local input as a task opens it). `verify` is the full check, for a run directory that
was copied, restored from backup or lived on a disk that reported errors: each file the
manifests list is read once and its sha256 compared with the recorded one. Files are
streamed (1 MiB at a time); on an object store that is one download of the run directory.

With `--repair`, the tasks that wrote damaged or missing files are dropped from their
manifests (the stage becomes partial); the next `lmforge run` of the config deletes the
damaged files, as it deletes every file no manifest lists, and redoes those tasks alone.
Output is deterministic given the config, so the rebuilt files are the ones that were lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.artifacts import MANIFEST
from pipeline.manifest import Manifest
from pipeline.storage import run_location, sha256_file


@dataclass
class VerifyResult:
    files: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)  # "stage/path: what is wrong"
    dropped: dict[str, list[str]] = field(default_factory=dict)  # stage -> tasks (repair)


def verify_run(run_dir: Any, repair: bool = False) -> VerifyResult:
    run_dir = run_location(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    result = VerifyResult()
    names = sorted({p.parent.name for p in run_dir.glob(f"*/{MANIFEST}")})
    for name in names:
        manifest = Manifest.load(run_dir / name)
        if manifest is None:
            continue
        problems = manifest.damaged()  # missing or resized: no need to hash those
        for f in manifest.entries():
            result.files += 1
            result.bytes += f["bytes"]
            if f["path"] not in problems:
                got = sha256_file(manifest.stage_dir / f["path"])
                if got != f["sha256"]:
                    problems[f["path"]] = f"sha256 {got[:12]}... is not the manifest's {f['sha256'][:12]}..."
        result.problems += [f"{name}/{path}: {why}" for path, why in sorted(problems.items())]
        if repair and problems:
            owners = manifest.task_of()
            bad_tasks = {owners[path] for path in problems}
            manifest.drop(bad_tasks)
            result.dropped[name] = sorted(bad_tasks)
    return result


def format_result(run_dir: str, result: VerifyResult, repair: bool) -> str:
    lines = [f"{run_dir}: {result.files} files, {result.bytes / 1e6:,.1f} MB checked"]
    lines += [f"  damaged: {p}" for p in result.problems]
    if not result.problems:
        lines.append("  every file matches its manifest")
    elif repair:
        for stage, tasks in result.dropped.items():
            lines.append(f"  {stage}: dropped {len(tasks)} task(s) ({', '.join(tasks[:5])}); "
                         "`lmforge run CONFIG` rebuilds them")
    else:
        lines.append("  `lmforge verify RUN_DIR --repair` drops the tasks that wrote them, so "
                     "that the next `lmforge run` rebuilds them")
    return "\n".join(lines)


def register(subparsers: Any) -> None:
    """Add `verify` to the lmforge subcommands."""
    p = subparsers.add_parser("verify", help="hash every committed file against its manifest")
    p.add_argument("run_dir")
    p.add_argument("--repair", action="store_true",
                   help="drop the tasks that wrote damaged files, so `lmforge run` redoes them")
    p.set_defaults(func=_cmd_verify)


def _cmd_verify(args: Any) -> int:
    result = verify_run(args.run_dir, repair=args.repair)
    print(format_result(args.run_dir, result, args.repair))
    return 0 if not result.problems or args.repair else 1
