"""Batches from token shards: per-rank disjointness, resumable position, validation, char-level shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from model.char_text import prepare_char_shards
from model.data import ShardDataset, describe_shards
from model.token_shards import HEADER_SIZE, TokenShard, TokenShardError, file_sha256, write_token_shard

from .conftest import HAMLET, tiny_run_config, write_shards


def put_token(path, position: int, token_id: int) -> None:
    """Overwrite one uint16 token of a shard in place (the file stays well-formed)."""
    with open(path, "r+b") as f:
        f.seek(HEADER_SIZE + 2 * position)
        f.write(np.array([token_id], dtype="<u2").tobytes())


def test_targets_are_inputs_shifted_and_windows_come_from_the_shards(tmp_path):
    data = write_shards(tmp_path)
    ds = ShardDataset(data, "train", seq_len=16, batch_size=4)
    x, y = ds.next_batch()
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    streams = [TokenShard(p).tokens.tolist() for p in sorted(data.glob("train-*.bin"))]
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        window = row_x + row_y[-1:]
        assert any(any(s[i:i + 17] == window for i in range(len(s) - 16)) for s in streams)


@pytest.mark.parametrize("sampling", ["random", "sequential"])
def test_ranks_split_the_global_batch_disjointly(tmp_path, sampling):
    data = write_shards(tmp_path)
    single = ShardDataset(data, "train", seq_len=16, batch_size=4, sampling=sampling, seed=3)
    ranks = [ShardDataset(data, "train", seq_len=16, batch_size=2, rank=r, world_size=2, sampling=sampling, seed=3)
             for r in range(2)]
    for _ in range(3):
        x, _ = single.next_batch()
        parts = [r.next_batch()[0] for r in ranks]
        assert torch.equal(torch.cat(parts), x)
        assert not torch.equal(parts[0], parts[1])


def test_sequential_packing_visits_every_window_in_order_then_wraps(tmp_path):
    path = tmp_path / "train-00000.bin"
    write_token_shard(path, [np.arange(41)], vocab_size=100)
    ds = ShardDataset(tmp_path, "train", seq_len=10, batch_size=2, sampling="sequential")
    firsts = [ds.next_batch()[0][:, 0].tolist() for _ in range(3)]
    assert firsts == [[0, 10], [20, 30], [0, 10]]  # 4 windows of 11 tokens, stride 10


def test_resume_position_and_checked_state(tmp_path):
    data = write_shards(tmp_path)
    ds = ShardDataset(data, "train", seq_len=16, batch_size=4)
    for _ in range(5):
        ds.next_batch()
    resumed = ShardDataset(data, "train", seq_len=16, batch_size=4)
    resumed.load_state_dict(ds.state_dict())
    assert torch.equal(resumed.next_batch()[0], ds.next_batch()[0])
    other_seed = ShardDataset(data, "train", seq_len=16, batch_size=4, seed=1)
    with pytest.raises(ValueError, match="seed"):
        other_seed.load_state_dict(ds.state_dict())


def test_validation_batches_are_fixed(tmp_path):
    ds = ShardDataset(write_shards(tmp_path), "val", seq_len=16, batch_size=2, sampling="sequential")
    first = [x for x, _ in ds.validation_batches(3)]
    second = [x for x, _ in ds.validation_batches(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert ds.batch_index == 0


def test_shards_must_match_their_tokenizer(tmp_path):
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text("{}")
    write_token_shard(tmp_path / "train-00000.bin", [[1, 2, 3]], 10, "00" * 31 + "01")
    with pytest.raises(ValueError, match="tokenizer.json has sha256"):
        describe_shards(tmp_path)
    write_token_shard(tmp_path / "train-00000.bin", [[1, 2, 3]], 10, file_sha256(tokenizer))
    write_token_shard(tmp_path / "val-00000.bin", [[1, 2, 3]], 12, file_sha256(tokenizer))
    with pytest.raises(ValueError, match="val-00000.bin: vocab_size 12"):
        describe_shards(tmp_path)


@pytest.mark.parametrize("split", ["train", "val"])
def test_shards_with_ids_outside_the_vocabulary_are_refused_when_the_data_loads(tmp_path, split):
    data = write_shards(tmp_path / "data")  # vocab 97
    bad = data / f"{split}-00000.bin"
    put_token(bad, 777, 97)
    with pytest.raises(TokenShardError, match=rf"^{bad}: 1 token ids >= vocab_size 97 \(largest 97; the first at "
                                              r"token 777, in document 1\)"):
        ShardDataset(data, split, seq_len=16, batch_size=2)


def test_the_trainer_refuses_shards_with_ids_outside_the_vocabulary_before_training(tmp_path):
    from model.trainer import Trainer

    data = write_shards(tmp_path / "data")
    bad = data / "train-00001.bin"
    put_token(bad, 3, 40_000)
    with pytest.raises(TokenShardError, match=f"{bad}: 1 token ids >= vocab_size 97 .*largest 40,000"):
        Trainer(tiny_run_config(tmp_path / "run", data))
    assert not (tmp_path / "run" / "log.jsonl").exists()
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


def test_char_shards_split_the_text_and_decode_back(tmp_path):
    text = HAMLET.read_text(encoding="utf-8")
    out = prepare_char_shards([HAMLET, HAMLET], tmp_path / "chars", val_fraction=0.1)
    full = text + text
    split = int(len(full) * 0.9)
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    train, val = TokenShard(out / "train-00000.bin"), TokenShard(out / "val-00000.bin")
    assert train.vocab_size == len(set(text)) and train.tokenizer_sha256 == file_sha256(out / "tokenizer.json")
    assert tokenizer.decode(train.tokens.tolist()) == full[:split]
    assert tokenizer.decode(val.tokens.tolist()) == full[split:]
    assert tokenizer.encode(full[:500]).ids == train.tokens[:500].tolist()
    before = (out / "train-00000.bin").read_bytes()
    prepare_char_shards([HAMLET, HAMLET], tmp_path / "chars", val_fraction=0.1)
    assert (out / "train-00000.bin").read_bytes() == before
