"""Entry point: ``python -m model.train CONFIG`` or ``torchrun --nproc_per_node N -m model.train CONFIG``.

Parse, build, train, close. Errors propagate (``lmforge train`` turns them into a one-line
message and an exit code; under torchrun a failing rank ends the job with its traceback).
"""

from __future__ import annotations

import argparse

from model.config import load_pretrain_config
from model.trainer import Trainer


def run(config_path: str) -> None:
    """Train the run a pretraining config describes, from its newest checkpoint if any."""
    trainer = Trainer(load_pretrain_config(config_path))
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
