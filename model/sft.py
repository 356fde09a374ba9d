"""Supervised fine-tuning: continue training a checkpoint on chat-formatted instruction data.

Each record (Alpaca ``instruction``/``input``/``output`` or ``messages``, see
``model/posttrain.py``) is rendered with the chat template (``model/chat.py``); the loss is
the mean cross-entropy over the assistant tokens of the batch only (replies and their
``<|end|>``), never over system or user turns, role tokens or padding. Examples are padded,
not packed. Checkpoints, resume and logs are the Trainer's (``OUT/checkpoints``,
``OUT/log.jsonl``); a checkpoint loads like any other (``lmforge generate``, ``chat``,
``export-hf``), and ``init_from`` of a DPO run.

Run: ``lmforge sft configs/sft.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.chat import Rendered
from model.posttrain import IGNORE, PostTrainConfig, PostTrainer, pad, sft_messages, shift


@dataclass
class SFTConfig(PostTrainConfig):
    """``init_from``, ``data`` (``ChatDataConfig``) and ``train`` (``TrainConfig``)."""


class SFTTrainer(PostTrainer):
    """Masked next-token loss on the assistant turns of rendered conversations."""

    def examples(self, records: list[tuple[str, dict]]) -> list[Rendered]:
        rendered, dropped = [], 0
        seq_len = self.config.data.seq_len
        for where, record in records:
            example = self.template.render(sft_messages(record, where, self.config.data.system_prompt))
            # Truncation can cut off every assistant token; such an example teaches nothing.
            if any(example.assistant_mask[1:seq_len + 1]):
                rendered.append(example)
            else:
                dropped += 1
        if dropped:
            self._print(f"dropped {dropped} examples whose reply starts beyond seq_len {seq_len}")
        return rendered

    def collate(self, examples: list[Rendered]) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [shift(e.ids, e.assistant_mask, self.config.data.seq_len) for e in examples]
        return pad([i for i, _ in pairs], self.template.pad_id), pad([t for _, t in pairs], IGNORE)

    def compute_loss(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        inputs, targets = batch
        # Tokens the model processed (padding excluded), for tokens/s; counted on the device.
        return self.model(inputs, targets), {}, (inputs != self.template.pad_id).sum()

    def eval_weight(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        # Validation loss is a mean over assistant tokens, so weight batches by them.
        return (batch[1] != IGNORE).sum()
