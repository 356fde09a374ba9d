"""SFT: loss only on assistant tokens, held-out assistant loss falls, resume is exact, bad
data and configs are named."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from model.checkpoint import load_model
from model.config import TrainConfigError, read_config
from model.posttrain import IGNORE, split_records
from model.sft import SFTConfig, SFTTrainer

from .conftest import data_config, train_config


def trainer_for(base_checkpoint, out_dir, data=None, **train) -> SFTTrainer:
    return SFTTrainer(SFTConfig(init_from=str(base_checkpoint), data=data or data_config(),
                                train=train_config(out_dir, **train)))


def test_prompt_tokens_carry_no_loss(base_checkpoint, tmp_path):
    trainer = trainer_for(base_checkpoint, tmp_path)
    examples = trainer.train_data.examples[:4]
    inputs, targets = trainer.collate(examples)
    seq_len = trainer.config.data.seq_len
    for row, example in enumerate(examples):
        # Target t is the token at t+1: it carries loss exactly when that token is the assistant's.
        n = min(len(example.ids), seq_len + 1) - 1
        expected = [tok if m else IGNORE for tok, m in zip(example.ids[1:n + 1], example.assistant_mask[1:n + 1])]
        assert targets[row, :n].tolist() == expected
        assert (targets[row, n:] == IGNORE).all() and (inputs[row, n:] == trainer.template.pad_id).all()

    # The gradient reaches the head's input only at positions predicting an assistant token.
    captured = {}
    head = trainer.model.loss_head
    head.register_forward_hook(lambda m, args, out: captured.update(args=args) or args[0].retain_grad())
    loss, _, _ = trainer.compute_loss((inputs, targets))
    loss.backward()
    has_grad = captured["args"][0].grad.abs().sum(-1) > 0
    assert torch.equal(has_grad, targets != IGNORE)
    assert int(has_grad.sum()) == sum(sum(e.assistant_mask[1:seq_len + 1]) for e in examples)
    # And the loss is the mean cross-entropy over those positions alone.
    logits = head.logits(*captured["args"][:3]).detach()
    keep = targets != IGNORE
    by_hand = -torch.log_softmax(logits[keep], -1).gather(-1, targets[keep][:, None]).mean()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_sft_lowers_heldout_assistant_loss(base_checkpoint, tmp_path):
    trainer = trainer_for(base_checkpoint, tmp_path, max_steps=30)
    train_ids = {tuple(e.ids) for e in trainer.train_data.examples}
    assert not any(tuple(e.ids) in train_ids for e in trainer.val_data.examples)  # held out
    before = trainer.evaluate()["val_loss"]
    records = trainer.train()
    after = trainer.evaluate()["val_loss"]
    trainer.close()
    print(f"held-out assistant-token loss {before:.3f} -> {after:.3f}")
    assert after < before - 0.6
    assert [r["step"] for r in records] == list(range(1, 31))
    # The checkpoint is an ordinary one: it rebuilds the model with the trained weights.
    reloaded = load_model(tmp_path / "checkpoints")
    assert torch.equal(reloaded.tok_embeddings.weight, trainer.model.tok_embeddings.weight)
    assert (tmp_path / "checkpoints" / "step-00000030" / "tokenizer.json").is_file()


def test_resume_continues_bit_for_bit(base_checkpoint, tmp_path):
    whole = trainer_for(base_checkpoint, tmp_path / "whole", max_steps=6, checkpoint_every=3)
    whole.train()
    halted = trainer_for(base_checkpoint, tmp_path / "split", max_steps=6, checkpoint_every=3)
    halted.train(stop_at=3)
    resumed = trainer_for(base_checkpoint, tmp_path / "split", max_steps=6, checkpoint_every=3)
    assert resumed.step == 3
    resumed.train()
    a = load_file(tmp_path / "whole" / "checkpoints" / "step-00000006" / "model.safetensors")
    b = load_file(tmp_path / "split" / "checkpoints" / "step-00000006" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_messages_records_and_system_prompt(base_checkpoint, tmp_path):
    records = [{"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w},
                             {"role": "user", "content": "Again."}, {"role": "assistant", "content": w}]}
               for w in ("yes", "no", "maybe", "never")]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    trainer = trainer_for(base_checkpoint, tmp_path / "out", data=data_config(
        train_file=str(path), val_fraction=0.0, system_prompt="Be brief."))
    template = trainer.template
    example = trainer.train_data.examples[0]
    assert example.ids[:2] == [template.bos_id, template.role_ids["system"]]
    assert trainer.val_data is None
    # Two assistant turns, each one word plus <|end|>, carry the mask.
    replies = [template.encode_text(w) for w in ("yes", "no", "maybe", "never")]
    assert sum(example.assistant_mask) in {2 * (len(r) + 1) for r in replies}


def test_split_is_deterministic_and_disjoint():
    train, val = split_records(data_config())
    again_train, again_val = split_records(data_config())
    assert [w for w, _ in val] == [w for w, _ in again_val] and len(val) == 48 and len(train) == 192
    assert not {w for w, _ in train} & {w for w, _ in val}


def test_bad_record_is_named(base_checkpoint, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "c", "outptu": "d"}]))
    with pytest.raises(ValueError, match=r"bad.json: record 1: missing key 'output'"):
        trainer_for(base_checkpoint, tmp_path / "out", data=data_config(train_file=str(path), val_fraction=0.0))


def test_config_errors_name_file_and_key(tmp_path):
    path = tmp_path / "sft.yaml"
    path.write_text("init_from: x\ndata: {train_file: d.json, seq_lenn: 64}\n")
    with pytest.raises(TrainConfigError, match=r"sft.yaml: data: unknown key 'seq_lenn'"):
        read_config(SFTConfig, path)
    path.write_text("init_from: x\ntrain: {lr: 1.0e-4}\n")
    with pytest.raises(TrainConfigError, match=r"sft.yaml:.*data.train_file is required"):
        read_config(SFTConfig, path)
