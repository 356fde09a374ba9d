"""Packed SFT: rows of several examples whose attention stays inside each example, whose
positions restart per example, and whose loss equals the examples' losses run one by one."""

from __future__ import annotations

import pytest
import torch

from model.config import TrainConfigError, from_dict
from model.dpo import DPOConfig
from model.llama import Transformer, document_mask
from model.posttrain import IGNORE, pack_rows, shift
from model.sft import SFTConfig, SFTTrainer, collate_packed

from .conftest import data_config, tiny_model_config, train_config


def trainer_for(base_checkpoint, out_dir, packing=True, **train) -> SFTTrainer:
    return SFTTrainer(SFTConfig(init_from=str(base_checkpoint), data=data_config(packing=packing),
                                train=train_config(out_dir, **train)))


def test_pack_rows_places_every_example_once_within_capacity():
    lengths = [90, 10, 50, 50, 40, 96, 3, 60, 30, 6]
    rows = pack_rows(lengths, 96)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 96 for row in rows)
    assert len(rows) == 5  # sum 435 needs at least 5 rows of 96
    with pytest.raises(ValueError, match="97 tokens does not fit a row of 96"):
        pack_rows([97], 96)


def test_document_mask_is_causal_within_examples_only():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]])
    mask = document_mask(positions, flex=False)[:, 0]
    example = [[0, 0, 0, 1, 1, 2], [0] * 6]
    for b in range(2):
        for q in range(6):
            for k in range(6):
                assert mask[b, q, k] == (k <= q and example[b][k] == example[b][q])


def packed_batch(trainer: SFTTrainer, n: int = 12) -> tuple[list[tuple], tuple[torch.Tensor, ...]]:
    rows = trainer.train_data.examples[:n]
    return rows, trainer.collate(rows)


def test_positions_restart_and_loss_is_on_assistant_tokens_only(base_checkpoint, tmp_path):
    trainer = trainer_for(base_checkpoint, tmp_path)
    seq_len = trainer.config.data.seq_len
    rows, (inputs, targets, positions) = packed_batch(trainer)
    assert any(len(row) > 1 for row in rows)
    for r, row in enumerate(rows):
        expected_inputs, expected_targets, expected_positions = [], [], []
        for example in row:
            i, t = shift(example.ids, example.assistant_mask, seq_len)
            expected_inputs += i
            expected_targets += t
            expected_positions += range(len(i))
        n = len(expected_inputs)
        assert n <= seq_len
        assert inputs[r, :n].tolist() == expected_inputs
        assert positions[r, :n].tolist() == expected_positions
        # Only the next token of an assistant turn is a target; no target crosses an example.
        assert targets[r, :n].tolist() == expected_targets
        assert int((targets[r] != IGNORE).sum()) == sum(sum(e.assistant_mask[1:seq_len + 1]) for e in row)
        # Padding: no loss, its own example (positions from 0) so nothing real attends to it.
        assert (targets[r, n:] == IGNORE).all() and (inputs[r, n:] == trainer.template.pad_id).all()
        assert positions[r, n:].tolist() == list(range(inputs.shape[1] - n))


def test_packed_loss_equals_examples_run_one_by_one(base_checkpoint, tmp_path):
    trainer = trainer_for(base_checkpoint, tmp_path)
    model, seq_len = trainer.model, trainer.config.data.seq_len
    rows, (inputs, targets, positions) = packed_batch(trainer)
    packed_tokens = int((targets != IGNORE).sum())
    packed_sum = trainer.compute_loss((inputs, targets, positions))[0] * packed_tokens
    packed_logits = model(inputs, positions=positions)

    alone_sum, alone_tokens = 0.0, 0
    for r, row in enumerate(rows):
        start = 0
        for example in row:
            i, t = (torch.tensor([x]) for x in shift(example.ids, example.assistant_mask, seq_len))
            n = int((t != IGNORE).sum())
            alone_sum += model(i, t) * n
            alone_tokens += n
            # Token for token the same logits: same context, same RoPE positions.
            torch.testing.assert_close(packed_logits[r, start:start + i.shape[1]], model(i)[0], atol=2e-5, rtol=0)
            start += i.shape[1]
    assert packed_tokens == alone_tokens
    assert packed_sum.item() == pytest.approx(alone_sum.item(), rel=1e-5)
    # Without the positions (one causal sequence) the later examples see the earlier ones.
    assert not torch.allclose(model(inputs), packed_logits, atol=1e-3)


def test_no_gradient_crosses_an_example_boundary(base_checkpoint, tmp_path):
    trainer = trainer_for(base_checkpoint, tmp_path)
    rows, (inputs, targets, positions) = packed_batch(trainer)
    r = next(r for r, row in enumerate(rows) if len(row) > 1)
    first = len(shift(rows[r][0].ids, rows[r][0].assistant_mask, trainer.config.data.seq_len)[0])
    second = len(shift(rows[r][1].ids, rows[r][1].assistant_mask, trainer.config.data.seq_len)[0])
    captured = {}

    def keep(module, args, out):
        out.retain_grad()
        captured["embedded"] = out

    trainer.model.tok_embeddings.register_forward_hook(keep)
    logits = trainer.model(inputs[r:r + 1], positions=positions[r:r + 1])
    logits[0, first:first + second].square().sum().backward()  # the second example's outputs
    grad = captured["embedded"].grad[0].abs().sum(-1)
    assert (grad[:first] == 0).all()  # the first example's tokens: not attended to
    assert (grad[first:first + second] > 0).all()
    assert (grad[first + second:] == 0).all()  # later examples and padding: causal + boundary


@pytest.mark.filterwarnings("ignore:.*flex_attention.*")  # eager FlexAttention on CPU: unfused
@torch.no_grad()  # FlexAttention has no backward on CPU; the CUDA path trains with it
def test_flex_block_mask_matches_dense_mask():
    torch.manual_seed(0)
    model = Transformer(tiny_model_config())
    attention = model.layers[0].attention
    positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3, 4, 5, 6, 0]]).repeat(2, 1)
    cos, sin = model.rope_cos[positions].unsqueeze(1), model.rope_sin[positions].unsqueeze(1)
    x = torch.randn(2, 16, model.config.dim)
    dense = attention(x, cos, sin, mask=document_mask(positions, flex=False))
    flex = attention(x, cos, sin, mask=document_mask(positions, flex=True))
    torch.testing.assert_close(flex, dense, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(attention(x, cos, sin), dense, atol=1e-3)  # plain causal differs


def test_packed_validation_loss_equals_padded(base_checkpoint, tmp_path):
    padded = trainer_for(base_checkpoint, tmp_path / "padded", packing=False)
    packed = trainer_for(base_checkpoint, tmp_path / "packed")
    assert packed.example_counts == padded.example_counts
    seq_len = packed.config.data.seq_len
    tokens = sum(min(len(e), seq_len + 1) - 1 for row in packed.train_data.examples for e in row)
    assert len(packed.train_data.examples) <= 11 / 9 * -(-tokens // seq_len) + 1  # best-fit bound
    assert packed.evaluate()["val_loss"] == pytest.approx(padded.evaluate()["val_loss"], rel=1e-5)


def test_packed_sft_trains(base_checkpoint, tmp_path):
    trainer = trainer_for(base_checkpoint, tmp_path, max_steps=12, batch_size=4)
    before = trainer.evaluate()["val_loss"]
    records = trainer.train()
    after = trainer.evaluate()["val_loss"]
    trainer.close()
    assert after < before - 0.5
    # tokens counts real tokens only: the padding of a packed batch is a few percent.
    assert records[-1]["tokens"] > 0.8 * 12 * 4 * trainer.config.data.seq_len


def test_dpo_rejects_packing():
    with pytest.raises(TrainConfigError, match="data.packing is for SFT"):
        from_dict(DPOConfig, {"init_from": "x", "data": {"train_file": "d.json", "packing": True}}, "dpo:")
