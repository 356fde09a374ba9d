"""What the training adapters share: model/'s config from a preset and the stage's params.

A training stage starts from a preset (a training YAML such as configs/tiny.yaml or
configs/sft.yaml), overrides it key by key with its params, and has model/ validate the
result when the pipeline config loads, so a bad training key is a config error that names
the stage. `MODEL_FILES` are the files of a committed model folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MODEL_FILES = ("model.safetensors", "model.json", "tokenizer.json")


def load_preset(path: str | None) -> dict[str, Any]:
    """A training preset as a dict; {} for None."""
    if path is None:
        return {}
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ValueError(f"preset {path!r}: {exc.strerror}") from None


def model_config(config_class: type, raw: dict[str, Any], what: str) -> Any:
    """model/'s `config_class` built from `raw`; a ValueError naming the bad key otherwise."""
    from model.config import TrainConfigError, from_dict

    try:
        return from_dict(config_class, raw, f"{what} config:")
    except TrainConfigError as exc:
        raise ValueError(str(exc)) from None
