"""Training config: strict loading with errors naming file and key; the shipped presets."""

from __future__ import annotations

import pytest

from model.config import TrainConfig, TrainConfigError, accumulation_steps, load_pretrain_config
from model.llama import Transformer

from .conftest import REPO


@pytest.mark.parametrize("text, message", [
    ("model:\n  dimm: 8\n", "model: unknown key 'dimm'"),
    ("optim:\n  lr: 1\n", "unknown key 'optim'"),
    ("data:\n  dir: d\ntrain:\n  lr: fast\n", "train.lr: expected float"),
    ("data:\n  dir: d\ntrain:\n  batch_size: true\n", "train.batch_size: expected int"),
    ("data:\n  dir: d\n  text_files: [a]\n", "data: set exactly one"),
    ("data:\n  dir: d\ntrain:\n  parallel: zero3\n", "parallel must be"),
])
def test_bad_configs_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TrainConfigError, match=message) as info:
        load_pretrain_config(path)
    assert str(path) in str(info.value)


def test_presets_load_and_have_their_intended_size():
    sizes = {}
    for name in ("tiny", "shakespeare", "124m"):
        config = load_pretrain_config(REPO / "configs" / f"{name}.yaml")
        vocab = {"tiny": 60, "shakespeare": 67, "124m": 50304}[name]
        config.model.vocab_size = vocab
        with __import__("torch").device("meta"):
            sizes[name] = Transformer(config.model).num_params()
    assert sizes["tiny"] < 200_000
    assert 4_000_000 < sizes["shakespeare"] < 6_000_000
    assert 110_000_000 < sizes["124m"] < 135_000_000
    gpu = load_pretrain_config(REPO / "configs" / "124m.yaml")
    assert gpu.model.n_kv_heads < gpu.model.n_heads and gpu.data.seq_len == 1024 and gpu.train.compile


def test_global_batch_in_tokens_gives_the_accumulation_per_world_size():
    train = TrainConfig(batch_size=16, batch_tokens=524288)
    assert accumulation_steps(train, seq_len=1024, world_size=1) == 32
    assert accumulation_steps(train, seq_len=1024, world_size=8) == 4
    assert accumulation_steps(TrainConfig(batch_size=16), seq_len=1024, world_size=8) == 1
    with pytest.raises(TrainConfigError, match=r"batch_tokens 524,288 is not a multiple of batch_size 16 x seq_len "
                                               r"1024 x 3 rank\(s\) = 49,152"):
        accumulation_steps(train, seq_len=1024, world_size=3)


def test_the_124m_preset_keeps_2_19_tokens_per_step():
    config = load_pretrain_config(REPO / "configs" / "124m.yaml")
    assert config.train.batch_tokens == 2**19
    assert accumulation_steps(config.train, config.data.seq_len, world_size=8) * 8 * config.train.batch_size \
        * config.data.seq_len == 2**19
