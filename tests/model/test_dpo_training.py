"""DPO: the loss against a hand computation, reply-only log-probabilities, a frozen
reference, and a held-out chosen-over-rejected margin that rises with training."""

from __future__ import annotations

import math

import pytest
import torch

from model.dpo import DPOConfig, DPOSettings, DPOTrainer, dpo_loss
from model.posttrain import IGNORE, sequence_logprobs

from .conftest import data_config, train_config


def test_dpo_loss_matches_hand_computation():
    # Pair 1: policy gains 0.5 nats on chosen and loses 0.5 on rejected vs the reference,
    # beta 0.5 -> margin 0.5, loss log(1 + e^-0.5). Pair 2: margin 0.5 * (0 - 2) = -1.
    loss, chosen, rejected = dpo_loss(torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0]),
                                      torch.tensor([-1.5, -3.0]), torch.tensor([-1.5, -3.0]), beta=0.5)
    assert chosen.tolist() == [0.25, 0.0] and rejected.tolist() == [-0.25, 1.0]
    expected = (math.log1p(math.exp(-0.5)) + math.log1p(math.exp(1.0))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert math.log1p(math.exp(-0.5)) == pytest.approx(0.474077, abs=1e-6)


def test_sequence_logprobs_sum_over_reply_tokens_only():
    vocab = 10

    class Uniform(torch.nn.Module):
        def forward(self, tokens):
            return torch.zeros(*tokens.shape, vocab)

    targets = torch.tensor([[IGNORE, IGNORE, 4, 5, 6], [IGNORE, 7, IGNORE, IGNORE, IGNORE]])
    logp = sequence_logprobs(Uniform(), torch.zeros_like(targets), targets)
    assert logp.tolist() == pytest.approx([-3 * math.log(vocab), -math.log(vocab)])


def dpo_trainer(init_from, out_dir, **train) -> DPOTrainer:
    return DPOTrainer(DPOConfig(init_from=str(init_from), data=data_config(),
                                train=train_config(out_dir, **{"lr": 1e-3, **train}), dpo=DPOSettings(beta=0.1)))


def test_batch_rows_are_chosen_then_rejected_replies(sft_checkpoint, tmp_path):
    trainer = dpo_trainer(sft_checkpoint, tmp_path)
    pairs = trainer.train_data.examples[:3]
    inputs, targets = trainer.collate(pairs)
    assert inputs.shape[0] == 6
    template = trainer.template
    for row, rendered in enumerate([p[0] for p in pairs] + [p[1] for p in pairs]):
        # The scored tokens are the reply and its <|end|>, nothing of the prompt.
        scored = targets[row][targets[row] != IGNORE].tolist()
        start = rendered.ids.index(template.role_ids["assistant"]) + 1
        assert scored == rendered.ids[start:]
        assert scored[-1] == template.end_id


def test_dpo_step_leaves_reference_unchanged(sft_checkpoint, tmp_path):
    trainer = dpo_trainer(sft_checkpoint, tmp_path, max_steps=2)
    reference = {k: v.clone() for k, v in trainer.reference.state_dict().items()}
    policy = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimized or p.requires_grad for p in trainer.reference.parameters())
    trainer.train_step()
    trainer.train_step()
    assert all(torch.equal(v, trainer.reference.state_dict()[k]) for k, v in reference.items())
    assert any(not torch.equal(v, trainer.model.state_dict()[k]) for k, v in policy.items())


def test_dpo_raises_heldout_margin(sft_checkpoint, tmp_path):
    trainer = dpo_trainer(sft_checkpoint, tmp_path, max_steps=20, eval_every=10)
    before = trainer.evaluate()
    # Policy == reference at the start: every reward is 0 and the loss is log 2.
    assert before["val_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert before["val_reward_margin"] == 0
    records = trainer.train()
    after = trainer.evaluate()
    trainer.close()
    print(f"held-out logp margin {before['val_logp_margin']:.3f} -> {after['val_logp_margin']:.3f}, "
          f"reward accuracy {after['val_reward_accuracy']:.3f}, loss {after['val_loss']:.4f}")
    assert after["val_logp_margin"] > before["val_logp_margin"] + 1.0
    assert after["val_reward_margin"] > 0.1 and after["val_reward_accuracy"] >= 0.7
    assert after["val_loss"] < math.log(2) - 0.05
    # The log carries the reward metrics for training steps and validation.
    assert {"reward_margin", "reward_accuracy", "logp_margin"} <= records[0].keys()
    assert "val_reward_accuracy" in records[9] and "val_reward_accuracy" not in records[8]


def test_preference_records_in_both_layouts():
    from model.posttrain import preference_triple

    alpaca = {"instruction": "Edit.", "input": "He go.", "chosen": "He goes.", "rejected": "He goes, obviously."}
    assert preference_triple(alpaca, "f: record 0") == (
        [{"role": "user", "content": "Edit.\n\nHe go."}], "He goes.", "He goes, obviously.")
    chat = {"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
            "chosen": "Hello!", "rejected": "What?"}
    assert preference_triple(chat, "f: record 1", system_prompt="ignored")[0] == chat["prompt"]
    assert preference_triple({"prompt": "Hi", "chosen": "a", "rejected": "b"}, "x", system_prompt="S")[0] == [
        {"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]
    with pytest.raises(ValueError, match=r"f: record 2: missing key 'rejected'"):
        preference_triple({"prompt": "Hi", "chosen": "a"}, "f: record 2")
