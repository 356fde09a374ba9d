"""Direct Preference Optimization (Rafailov et al. 2023) on (prompt, chosen, rejected) pairs.

The policy starts from ``init_from`` (normally an SFT checkpoint); a frozen copy, the
reference, is loaded from ``dpo.reference`` (default: the same checkpoint), kept in eval
mode with ``requires_grad`` off and never given to the optimizer. For each pair, with
``logp`` the log-probability of the reply's tokens summed (reply tokens and the closing
``<|end|>``, never the prompt)::

    reward(y)  = beta * (logp_policy(y | x) - logp_reference(y | x))
    loss       = -log sigmoid(reward(chosen) - reward(rejected))

Chosen and rejected sequences of a batch go through the model in one padded forward pass.
Logged per step and on validation: the loss, ``reward_chosen``, ``reward_rejected``,
``reward_margin`` (their difference), ``reward_accuracy`` (share of pairs whose margin is
positive) and ``logp_margin`` (policy log-probability of chosen minus rejected).
Reference log-probabilities are recomputed each step (no cache to invalidate; the
reference forward pass costs a third of a training step).

Run: ``lmforge dpo configs/dpo.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from model.chat import Rendered
from model.checkpoint import CheckpointError, load_model, resolve_checkpoint
from model.posttrain import IGNORE, PostTrainConfig, PostTrainer, pad, preference_triple, sequence_logprobs, shift


@dataclass
class DPOSettings:
    beta: float = 0.1  # strength of the pull towards the reference (higher: stay closer)
    reference: str | None = None  # None: the init_from checkpoint

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")


@dataclass
class DPOConfig(PostTrainConfig):
    """``init_from``, ``data``, ``train`` as for SFT, plus ``dpo`` (beta, reference)."""

    dpo: DPOSettings = field(default_factory=DPOSettings)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.data.packing:
            raise ValueError("data.packing is for SFT; DPO pads its chosen/rejected pairs")


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean loss, chosen rewards, rejected rewards) from summed reply log-probabilities."""
    chosen_rewards = beta * (policy_chosen - reference_chosen)
    rejected_rewards = beta * (policy_rejected - reference_rejected)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards.detach(), rejected_rewards.detach()


class DPOTrainer(PostTrainer):
    """DPO on preference pairs; ``self.reference`` is the frozen reference model."""

    def build_model(self) -> torch.nn.Module:
        model = super().build_model()
        reference_path = resolve_checkpoint(self.config.dpo.reference or self.config.init_from)
        self.reference = load_model(reference_path, self.device).eval().requires_grad_(False)
        if self.reference.config != model.config:
            raise CheckpointError(f"reference {reference_path} has a different model shape than {self.init_checkpoint}")
        return model

    def examples(self, records: list[tuple[str, dict]]) -> list[tuple[Rendered, Rendered]]:
        pairs, dropped = [], 0
        seq_len = self.config.data.seq_len
        for where, record in records:
            prompt, chosen, rejected = preference_triple(record, where, self.config.data.system_prompt)
            pair = tuple(self.template.render([*prompt, {"role": "assistant", "content": reply}])
                         for reply in (chosen, rejected))
            if all(any(r.assistant_mask[1:seq_len + 1]) for r in pair):
                pairs.append(pair)
            else:
                dropped += 1
        if dropped:
            self._print(f"dropped {dropped} pairs whose replies start beyond seq_len {seq_len}")
        return pairs

    def collate(self, pairs: list[tuple[Rendered, Rendered]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows 0..B-1 chosen, B..2B-1 rejected, padded to one width."""
        rendered = [pair[0] for pair in pairs] + [pair[1] for pair in pairs]
        shifted = [shift(r.ids, r.assistant_mask, self.config.data.seq_len) for r in rendered]
        return pad([i for i, _ in shifted], self.template.pad_id), pad([t for _, t in shifted], IGNORE)

    def compute_loss(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        inputs, targets = batch
        half = inputs.shape[0] // 2
        policy = sequence_logprobs(self.model, inputs, targets)
        with torch.no_grad():
            reference = sequence_logprobs(self.reference, inputs, targets)
        loss, chosen, rejected = dpo_loss(policy[:half], policy[half:], reference[:half], reference[half:],
                                          self.config.dpo.beta)
        margin = chosen - rejected
        metrics = {"reward_chosen": chosen.mean(), "reward_rejected": rejected.mean(),
                   "reward_margin": margin.mean(), "reward_accuracy": (margin > 0).float().mean(),
                   "logp_margin": (policy[:half] - policy[half:]).detach().mean()}
        return loss, metrics, (inputs != self.template.pad_id).sum()

    def eval_weight(self, batch: tuple[torch.Tensor, ...]) -> int:
        return batch[0].shape[0] // 2  # pairs
