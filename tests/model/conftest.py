"""Fixtures for model tests: a tiny model config, token shards written in the test, a run config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.config import DataConfig, PretrainConfig, TrainConfig
from model.llama import ModelConfig
from model.token_shards import write_token_shard

REPO = Path(__file__).resolve().parents[2]
HAMLET = REPO / "tests" / "data" / "hamlet_excerpt.txt"


@pytest.fixture(autouse=True)
def _single_threaded(one_thread):
    """Every model test runs torch on one thread (tests/conftest.py)."""


def tiny_model_config(**overrides) -> ModelConfig:
    fields = dict(vocab_size=97, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=64, max_seq_len=64)
    return ModelConfig(**{**fields, **overrides})


def write_shards(directory: Path, vocab_size: int = 97, train_docs: int = 4, doc_len: int = 500, seed: int = 0) -> Path:
    """train-00000/00001.bin and val-00000.bin of random documents with a learnable pattern."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)

    def doc() -> np.ndarray:
        # A repeating ramp with noise: enough structure for the loss to fall quickly.
        start = rng.integers(0, vocab_size)
        ramp = (start + np.arange(doc_len)) % vocab_size
        noise = rng.random(doc_len) < 0.1
        return np.where(noise, rng.integers(0, vocab_size, doc_len), ramp)

    for i in range(2):
        write_token_shard(directory / f"train-{i:05d}.bin", [doc() for _ in range(train_docs)], vocab_size)
    write_token_shard(directory / "val-00000.bin", [doc() for _ in range(2)], vocab_size)
    return directory


def tiny_run_config(out_dir: Path, data_dir: Path, **train) -> PretrainConfig:
    train_fields = dict(out_dir=str(out_dir), batch_size=4, max_steps=8, lr=1e-2, min_lr=1e-3, warmup_steps=2,
                        eval_every=4, eval_batches=2, log_every=100, checkpoint_every=4, keep_checkpoints=2,
                        seed=0, device="cpu")
    return PretrainConfig(model=tiny_model_config(vocab_size=None),
                     data=DataConfig(dir=str(data_dir), seq_len=32),
                     train=TrainConfig(**{**train_fields, **train}))
