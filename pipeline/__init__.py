"""lmforge's engine: config, composite stages, DAG and cache keys, stage base classes,
runner, executors, artifacts and manifests, inputs, status, report, CLI.

The engine knows no stage kind by name and imports neither `stages` nor `model`; the
console script's module, pipeline/cli.py, wires them in. For use from Python (notebooks,
tests):

    from pipeline import run
    run("configs/demo.yaml", executor="dask", workers=2)
"""

from __future__ import annotations


def __getattr__(name: str):
    # `run` lives with the wiring (pipeline/cli.py); importing it here, on first use, keeps
    # `import pipeline.stage` in a worker from loading every stage family's registry.
    if name == "run":
        from pipeline.cli import run

        return run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
