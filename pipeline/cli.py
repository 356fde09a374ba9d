"""The `lmforge` console script, and the one module that wires the program together.

    lmforge run CONFIG [--run-dir DIR] [--executor local|dask] [--workers N]
                       [--scheduler ADDR] [--force STAGE] [--until STAGE]
    lmforge validate CONFIG
    lmforge status RUN_DIR [--json]
    lmforge report RUN_DIR
    lmforge verify RUN_DIR [--repair]

plus the model's commands, which model/cli.py registers (`train`, `generate`, `export-hf`,
`import-hf`, `sft`, `dpo`, `chat`, `plan`, `inspect-shards`). Each command is parse ->
build -> run -> close.

Wiring. The engine (pipeline/) knows no stage kind and no model. This module alone
imports `stages` (the kind -> class registry it hands to the config loader) and `model`
(its subcommands). `run` here is also the Python API, `from pipeline import run`.

Errors: one policy, applied here only. Exit 2 for bad input: a config mistake, bad
arguments, a missing file or run directory, and the model's bad-input types
(`model.cli.BAD_INPUT`: a bad training config, checkpoint, token shard, ...). Exit 1 for
a failure while running (a stage that fails, anything else). Either way one line on
stderr, `lmforge: bad input: ...` or `lmforge: error: ...`; the traceback only with
`--debug`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from pipeline.config import Config, ConfigError, config_from_dict, load_config
from pipeline.executors import make_executor
from pipeline.manifest import fetch_listed
from pipeline.runner import StageOutcome, run_config
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
) -> list[StageOutcome]:
    """Run a config (a YAML path, a dict or a loaded Config); one StageOutcome per stage
    touched. Arguments left at None take the config's `executor` settings."""
    loaded = config if isinstance(config, Config) else load(config)
    ex = loaded.run.executor
    runner = make_executor(executor or ex.kind, workers or ex.workers, scheduler or ex.scheduler)
    try:
        return run_config(loaded, runner, force=force, until=until,
                          run_dir=str(run_dir) if run_dir else None)
    finally:
        runner.close()


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
    outcomes = run(config, args.executor, args.workers, args.scheduler, args.run_dir,
                   args.force, args.until)
    width = max([20, *(len(o.name) + 1 for o in outcomes)])
    for outcome in outcomes:
        c = outcome.counts
        print(f"{outcome.name:<{width}} {outcome.status:<8} in {c.n_in:>9,}  kept {c.kept:>9,}")
    print(f"run directory: {config.run_dir}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = run_status(args.run_dir)
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from model import cli as model_cli
    from pipeline import report, verify

    parser = argparse.ArgumentParser(prog="lmforge", description="Build a language model from "
                                     "scratch, data first: crawl, clean, deduplicate, tokenize, pretrain.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a pipeline config")
    p.add_argument("config")
    p.add_argument("--run-dir", help="override the config's run_dir")
    p.add_argument("--executor", choices=["local", "dask"])
    p.add_argument("--workers", type=int, help="dask LocalCluster worker processes")
    p.add_argument("--scheduler", help="address of an existing dask scheduler (tcp://HOST:PORT)")
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
    model_cli.register(sub, localize=fetch_listed)
    return parser


def bad_input(exc: BaseException) -> bool:
    """True when `exc` means the user's input is wrong (exit 2), not a failure (exit 1)."""
    from model import cli as model_cli  # BAD_INPUT imports the model's modules: only here

    return isinstance(exc, (ConfigError, StorageError, FileNotFoundError, NotADirectoryError,
                            *model_cli.BAD_INPUT))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # bad arguments: argparse exits with 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.func(args)
    except BrokenPipeError:  # `lmforge status RUN | head`: the reader left, not a failure
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        code = 2 if bad_input(exc) else 1
        message = " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        what = "bad input" if code == 2 else "error"
        print(f"lmforge: {what}: {message or type(exc).__name__}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
