"""The `lmforge` console script, and the one module that wires the program together.

    lmforge run CONFIG [--run-dir DIR] [--executor local|dask] [--workers N]
                       [--scheduler ADDR] [--connect-timeout S] [--force STAGE]
                       [--until STAGE]
    lmforge validate CONFIG
    lmforge status RUN_DIR [--json]
    lmforge report RUN_DIR
    lmforge verify RUN_DIR [--repair]
    lmforge init DIR --from warc:PATH|jsonl:PATH|parquet:PATH|crawl:URL
    lmforge stages [KIND] / lmforge schema
    lmforge ablate ABLATION [--json]

plus the model's commands, which model/cli.py registers (`train`, `generate`, `export-hf`,
`import-hf`, `sft`, `dpo`, `chat`, `plan`, `inspect-shards`). Each command is parse ->
build -> run -> close.

Wiring. The engine (pipeline/) knows no stage kind and no model. This module alone
imports `stages` (the kind -> class registry it hands to the config loader) and `model`
(its subcommands). `run` here is also the Python API, `from pipeline import run`.

Errors: one policy, applied here only. Exit 2 for bad input: a config mistake, bad
arguments, a missing file or run directory, and the model's bad-input types
(`model.cli.BAD_INPUT`: a bad training config, checkpoint, token shard, ...), executor
settings that cannot work (`ExecutorError`: a dask scheduler that does not answer within
`--connect-timeout`). Exit 1 for a failure while running (a stage that fails, a full
disk, anything else). Either way one line on stderr, `lmforge: bad input: ...` or
`lmforge: error: ...`; the traceback only with `--debug`. An error a task raised is
prefixed with its stage and task (the executor's note). Ctrl-C exits 130 with
`lmforge: interrupted: ...`.

A run that stops part-way keeps every finished task (the runner records each in its
stage's manifest journal), so after Ctrl-C or a full disk the line says what was kept and
that running the same command again resumes (without `--force`, which would redo the
forced stages).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from pipeline import storage
from pipeline.config import Config, ConfigError, config_from_dict, load_config
from pipeline.executors import CONNECT_TIMEOUT, ExecutorError, make_executor
from pipeline.manifest import Manifest, fetch_listed
from pipeline.runner import StageOutcome, run_config, stage_cache_keys
from pipeline.status import format_status, run_status
from pipeline.storage import StorageError
from stages import stage_class_for

# The trainer writes its log here in its output folder (model/trainer.py), so that
# `lmforge report` can also be pointed at a training run made outside a pipeline.
TRAINER_LOG = "log.jsonl"


def load(config: str | Path | dict[str, Any]) -> Config:
    """A run config (a YAML path or a dict) validated against this program's stage kinds."""
    if isinstance(config, dict):
        return config_from_dict(config, stage_class_for)
    return load_config(config, stage_class_for)


def run(
    config: str | Path | dict[str, Any] | Config,
    executor: str | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    run_dir: str | Path | None = None,
    force: list[str] | None = None,
    until: str | None = None,
    connect_timeout: float | None = None,
) -> list[StageOutcome]:
    """Run a config (a YAML path, a dict or a loaded Config); one StageOutcome per stage
    touched. Arguments left at None take the config's `executor` settings;
    `connect_timeout`: seconds to wait for `scheduler` to answer (default 10)."""
    loaded = config if isinstance(config, Config) else load(config)
    check_run_dir(storage.run_location(run_dir) if run_dir else loaded.run_dir)
    ex = loaded.run.executor
    runner = make_executor(executor or ex.kind, ex.workers if workers is None else workers,
                           scheduler or ex.scheduler, connect_timeout or CONNECT_TIMEOUT)
    try:
        return run_config(loaded, runner, force=force, until=until,
                          run_dir=str(run_dir) if run_dir else None)
    finally:
        runner.close()


def check_run_dir(run_dir: Any) -> None:
    """A local run directory must be a folder or not exist yet, below a folder: a file in
    the way is bad input, found before any executor starts or any stage runs."""
    if not storage.is_local(run_dir):
        return
    path = Path(run_dir)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or existing.is_dir():
        return
    where = "" if existing == path else f" ({existing})"
    raise NotADirectoryError(f"run directory {path}: exists and is not a folder{where}")


def cmd_validate(args: argparse.Namespace) -> int:
    config = load(args.config)
    print(f"{config.path}: run '{config.name}' -> {config.run_dir}")
    for i, (name, spec) in enumerate(config.stages.items(), start=1):
        reads = f" <- {', '.join(spec.inputs)}" if spec.inputs else ""
        part = f" [phase of {spec.part_of}]" if spec.part_of else ""
        print(f"  {i}. {name} ({spec.config.kind}){reads}{part}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = load(args.config)
    if args.run_dir:
        config.run.run_dir = args.run_dir  # here, so that what_was_kept looks there too
    again = "run it again without --force" if args.force else "run the same command again"
    try:
        outcomes = run(config, args.executor, args.workers, args.scheduler, None,
                       args.force, args.until, args.connect_timeout)
    except KeyboardInterrupt as exc:
        raise KeyboardInterrupt(f"{what_was_kept(config)}; {again} to resume") from exc
    except Exception as exc:
        full = disk_full(exc)
        if full is None:
            raise
        raise RunStopped(
            f"{one_line(exc, full.strerror or 'disk full')} writing "
            f"{full.filename or f'under {config.run_dir}'}; {what_was_kept(config)}; "
            f"free space, then {again} to resume"
        ) from exc
    width = max([20, *(len(o.name) + 1 for o in outcomes)])
    for outcome in outcomes:
        c = outcome.counts
        print(f"{outcome.name:<{width}} {outcome.status:<8} in {c.n_in:>9,}  kept {c.kept:>9,}")
    print(f"run directory: {config.run_dir}")
    return 0


class RunStopped(RuntimeError):
    """`lmforge run` stopped part-way; the message says what it kept and how to resume."""


def disk_full(exc: BaseException) -> OSError | None:
    """The out-of-space (or quota) OSError that caused `exc`, if one did."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def what_was_kept(config: Config) -> str:
    """What a run that stopped leaves for the next one: complete stages and finished tasks
    of the stages whose manifests match this config's cache keys."""
    run_dir = config.run_dir
    try:
        keys = stage_cache_keys(config)
        complete, partial = [], []
        for name in config.stages:
            manifest = Manifest.load(run_dir / name)
            if manifest is None or manifest.data["cache_key"] != keys[name]:
                continue
            if manifest.complete:
                complete.append(name)
            elif manifest.tasks:
                n = len(manifest.tasks)
                partial.append(f"{n} finished task{'s' * (n != 1)} of '{name}'")
    except (Exception, KeyboardInterrupt):  # a second Ctrl-C, a store gone: say less
        return f"finished tasks are kept in {run_dir}"
    if not complete and not partial:
        return f"no task had finished in {run_dir}"
    shown = ", ".join(complete[:5]) + (", ..." if len(complete) > 5 else "")
    done = [f"{len(complete)} complete stage{'s' * (len(complete) != 1)} ({shown})"] if complete else []
    return f"kept in {run_dir}: {', '.join(done + partial)}"


def cmd_status(args: argparse.Namespace) -> int:
    status = run_status(args.run_dir)
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def positive(kind: type) -> Any:
    """An argparse type: a number of `kind` above 0, else a usage error (exit 2)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def build_parser() -> argparse.ArgumentParser:
    from model import cli as model_cli
    from pipeline import describe, report, verify
    from stages import STAGE_KINDS, ablate, recipes

    parser = argparse.ArgumentParser(prog="lmforge", description="Build a language model from "
                                     "scratch, data first: crawl, clean, deduplicate, tokenize, pretrain.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a pipeline config")
    p.add_argument("config")
    p.add_argument("--run-dir", help="override the config's run_dir")
    p.add_argument("--executor", choices=["local", "dask"])
    p.add_argument("--workers", type=positive(int), help="dask LocalCluster worker processes")
    p.add_argument("--scheduler", help="address of an existing dask scheduler (tcp://HOST:PORT)")
    p.add_argument("--connect-timeout", type=positive(float), metavar="SECONDS",
                   help=f"give up on --scheduler after this long (default {CONNECT_TIMEOUT:g})")
    p.add_argument("--force", action="append", metavar="STAGE",
                   help="re-run this stage and its descendants (repeatable)")
    p.add_argument("--until", metavar="STAGE", help="run only this stage and its ancestors")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a config and print its DAG; runs nothing")
    p.add_argument("config")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("status", help="per-stage funnel of a run directory")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    report.register(sub, trainer_log=TRAINER_LOG)
    verify.register(sub)
    describe.register(sub, STAGE_KINDS, stage_class_for)  # lmforge stages [KIND], lmforge schema
    recipes.register(sub)  # lmforge init
    ablate.register(sub, run)  # lmforge ablate
    model_cli.register(sub, localize=fetch_listed)
    return parser


def bad_input(exc: BaseException) -> bool:
    """True when `exc` means the user's input is wrong (exit 2), not a failure (exit 1)."""
    from model import cli as model_cli  # BAD_INPUT imports the model's modules: only here

    return isinstance(exc, (ConfigError, StorageError, ExecutorError, FileNotFoundError,
                            NotADirectoryError, *model_cli.BAD_INPUT))


def one_line(exc: BaseException, text: str | None = None) -> str:
    """`exc` (or `text` in its place) as one line; an error a task raised is prefixed with
    its stage and task (the executor's note) and its type."""
    if text is None:
        text = " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    notes = getattr(exc, "__notes__", None)
    if notes:
        return f"{'; '.join(notes)}: {type(exc).__name__}" + (f": {text}" if text else "")
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # bad arguments: argparse exits with 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:  # dask's own INFO lines (workers, nannies, cancelled keys) only with -v
        logging.getLogger("distributed").setLevel(logging.WARNING)
        # distributed sets that level again from its `logging` config when first imported
        # (later, by a dask executor): the same level there, for workers too.
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    try:
        return args.func(args)
    except BrokenPipeError:  # `lmforge status RUN | head`: the reader left, not a failure
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as exc:
        if args.debug:
            traceback.print_exc()
        print(f"lmforge: interrupted{': ' if str(exc) else ''}{exc}", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports a command Ctrl-C stopped
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        code = 2 if bad_input(exc) else 1
        what = "bad input" if code == 2 else "error"
        print(f"lmforge: {what}: {one_line(exc)}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
