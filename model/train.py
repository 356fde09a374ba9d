"""Entry point: ``python -m model.train CONFIG`` or ``torchrun --nproc_per_node N -m model.train CONFIG``."""

from __future__ import annotations

import argparse
import sys

from model.config import load_config
from model.trainer import Trainer, TrainingHalted


def run(config_path: str) -> int:
    trainer = Trainer(load_config(config_path))
    try:
        trainer.train()
    except TrainingHalted as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        trainer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.train", description=__doc__)
    parser.add_argument("config", help="training config YAML (see configs/tiny.yaml)")
    return run(parser.parse_args(argv).config)


if __name__ == "__main__":
    raise SystemExit(main())
