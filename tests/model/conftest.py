"""Fixtures for model tests: a tiny model config, token shards written in the test, a run config;
for the chat, SFT and DPO tests a tokenizer trained here, a base checkpoint, configs.

The chat tokenizer is a byte-level BPE trained in the test on the fixture's own text, with
the special tokens of the train_tokenizer stage in its order (<|bos|> 0, <|eos|> 1, <|pad|> 2,
then the chat roles). The base checkpoint is a freshly initialised tiny model written the
way the pretrain stage commits one (model.safetensors, model.json, tokenizer.json).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from model.checkpoint import model_weights
from model.config import DataConfig, PretrainConfig, TrainConfig
from model.llama import ModelConfig, Transformer
from model.posttrain import ChatDataConfig
from model.special_tokens import SPECIAL_TOKENS
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


PAIRS = REPO / "tests" / "data" / "sft_preference_240.json"


def train_chat_tokenizer(texts: list[str], vocab_size: int = 512) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def fixture_texts() -> list[str]:
    records = json.loads(PAIRS.read_text())
    return [r[k] for r in records for k in ("instruction", "input", "output", "chosen", "rejected") if r[k]]


@pytest.fixture(scope="session")
def chat_tokenizer() -> Tokenizer:
    return train_chat_tokenizer(fixture_texts())


def write_model_dir(directory: Path, model: Transformer, tokenizer: Tokenizer) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    save_file(model_weights(model, model.config.tie_embeddings), directory / "model.safetensors")
    (directory / "model.json").write_text(json.dumps(dataclasses.asdict(model.config)))
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


@pytest.fixture(scope="session")
def base_checkpoint(tmp_path_factory, chat_tokenizer) -> Path:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=chat_tokenizer.get_vocab_size(), dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                         hidden_dim=128, max_seq_len=128, tie_embeddings=True)
    return write_model_dir(tmp_path_factory.mktemp("base"), Transformer(config), chat_tokenizer)


def train_config(out_dir: Path, **overrides) -> TrainConfig:
    fields = dict(out_dir=str(out_dir), batch_size=8, max_steps=30, lr=3e-3, min_lr=3e-4, warmup_steps=3,
                  eval_every=0, eval_batches=100, log_every=1000, checkpoint_every=0, keep_checkpoints=2,
                  seed=0, device="cpu")
    return TrainConfig(**{**fields, **overrides})


def data_config(**overrides) -> ChatDataConfig:
    fields = dict(train_file=str(PAIRS), val_fraction=0.2, split_seed=0, seq_len=96)
    return ChatDataConfig(**{**fields, **overrides})


@pytest.fixture(scope="session")
def sft_checkpoint(tmp_path_factory, base_checkpoint) -> Path:
    """The base model after 30 SFT steps on the fixture's training split."""
    from model.sft import SFTConfig, SFTTrainer

    out = tmp_path_factory.mktemp("sft")
    # Session fixtures run before the function-scoped one_thread fixture; tiny matmuls on a
    # shared machine are many times slower with a thread per host core.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = SFTTrainer(SFTConfig(init_from=str(base_checkpoint), data=data_config(), train=train_config(out)))
        trainer.train()
        trainer.close()
    finally:
        torch.set_num_threads(threads)
    return out / "checkpoints"
