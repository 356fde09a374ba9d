"""Entry point: ``python -m model.train CONFIG`` or ``torchrun --nproc_per_node N -m model.train CONFIG``.

Parse, build, train, close. Errors propagate (``lmforge train`` turns them into a one-line
message and an exit code; under torchrun a failing rank ends the job with its traceback).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from model.config import load_pretrain_config
from model.trainer import Trainer


def run(config_path: str, localize: Callable[[str], str] | None = None) -> None:
    """Train the run a pretraining config describes, from its newest checkpoint if any.
    ``localize`` turns a ``data.dir`` given as a URL into a local folder (``lmforge train``
    passes one that fetches token shards from an object store into a local cache)."""
    config = load_pretrain_config(config_path)
    if localize is not None and config.data.dir and "://" in config.data.dir:
        config.data.dir = localize(config.data.dir)
    trainer = Trainer(config)
    try:
        trainer.train()
    finally:
        trainer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.train", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="training config YAML (see configs/tiny.yaml)")
    run(parser.parse_args(argv).config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
