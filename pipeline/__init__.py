"""lmforge's engine: config, DAG, cache keys, executors, artifacts, accounting, CLI.

For use from Python (notebooks, tests):

    from pipeline import run
    run("configs/demo.yaml", executor="dask", workers=2)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run(
    config: str | Path | dict[str, Any],
    executor: str | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    run_dir: str | Path | None = None,
    force: list[str] | None = None,
    until: str | None = None,
):
    """Run a config (a YAML path or a dict); returns one StageOutcome per stage touched."""
    from pipeline.config import config_from_dict, load_config
    from pipeline.executors import make_executor
    from pipeline.runner import run_config

    loaded = config_from_dict(config) if isinstance(config, dict) else load_config(config)
    ex = loaded.run.executor
    runner = make_executor(executor or ex.kind, workers or ex.workers, scheduler or ex.scheduler)
    try:
        return run_config(loaded, runner, force=force, until=until,
                          run_dir=Path(run_dir) if run_dir else None)
    finally:
        runner.close()
