"""The `lmforge` console script: parse, build, run, close.

    lmforge run CONFIG [--run-dir DIR] [--executor local|dask] [--workers N]
                       [--scheduler ADDR] [--force STAGE] [--until STAGE]
    lmforge validate CONFIG
    lmforge status RUN_DIR [--json]

    lmforge inspect-shards DIR / report RUN_DIR / plan --gpu-hours H --gpu h100

plus the model commands that model/cli.py (`train`, `generate`, `export-hf`, `import-hf`)
and model/posttrain_cli.py (`sft`, `dpo`, `chat`) register. Exit codes: 0 done, 1 a stage failed, 2 a bad config or bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline.config import ConfigError, load_config
from pipeline.runner import StageFailed, run_config
from pipeline.status import format_status, run_status


def cmd_validate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(f"{config.path}: run '{config.name}' -> {config.run_dir}")
    for i, (name, spec) in enumerate(config.stages.items(), start=1):
        reads = f" <- {', '.join(spec.inputs)}" if spec.inputs else ""
        print(f"  {i}. {name} ({spec.config.kind}){reads}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.executors import make_executor

    config = load_config(args.config)
    ex = config.run.executor
    executor = make_executor(
        args.executor or ex.kind,
        workers=args.workers or ex.workers,
        scheduler=args.scheduler or ex.scheduler,
    )
    try:
        outcomes = run_config(
            config,
            executor,
            force=args.force,
            until=args.until,
            run_dir=Path(args.run_dir) if args.run_dir else None,
        )
    finally:
        executor.close()
    for outcome in outcomes:
        c = outcome.counts
        print(f"{outcome.name:<20} {outcome.status:<8} in {c.n_in:>9,}  kept {c.kept:>9,}")
    print(f"run directory: {config.run_dir}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = run_status(Path(args.run_dir))
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmforge", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a pipeline config")
    run.add_argument("config")
    run.add_argument("--run-dir", help="override the config's run_dir")
    run.add_argument("--executor", choices=["local", "dask"])
    run.add_argument("--workers", type=int, help="dask LocalCluster worker processes")
    run.add_argument("--scheduler", help="address of an existing dask scheduler (tcp://HOST:PORT)")
    run.add_argument("--force", action="append", metavar="STAGE",
                     help="re-run this stage and its descendants (repeatable)")
    run.add_argument("--until", metavar="STAGE", help="run only this stage and its ancestors")
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check a config and print its DAG; runs nothing")
    validate.add_argument("config")
    validate.set_defaults(func=cmd_validate)

    status = sub.add_parser("status", help="per-stage funnel of a run directory")
    status.add_argument("run_dir")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    from model import cli as model_cli, inspect_shards, plan, posttrain_cli
    from pipeline import report

    for module in (inspect_shards, report, plan, model_cli, posttrain_cli):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except (StageFailed, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
