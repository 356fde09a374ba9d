"""Supervised fine-tuning: continue training a checkpoint on chat-formatted instruction data.

Each record (Alpaca ``instruction``/``input``/``output`` or ``messages``, see
``model/posttrain.py``) is rendered with the chat template (``model/chat.py``); the loss is
the mean cross-entropy over the assistant tokens of the batch only (replies and their
``<|end|>``), never over system or user turns, role tokens or padding.

Examples are padded to the longest of the batch, or with ``data.packing`` joined into rows
of ``seq_len`` (``pack_rows``), which wastes far less compute on padding when lengths vary.
A packed row carries each token's position within its example, restarting at 0; the model
builds from them a document mask, so a token attends only to its own example and sees the
same RoPE positions as unpacked: a packed batch's summed loss is the sum of its examples'
(tests/model/test_packed_sft.py). With packing, ``train.batch_size`` counts rows.

Checkpoints, resume and logs are the Trainer's (``OUT/checkpoints``, ``OUT/log.jsonl``); a
checkpoint loads like any other (``lmforge generate``, ``chat``, ``export-hf``), and
``init_from`` of a DPO run.

Run: ``lmforge sft configs/sft.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.chat import Rendered
from model.posttrain import IGNORE, PostTrainConfig, PostTrainer, pack_rows, pad, sft_messages, shift


@dataclass
class SFTConfig(PostTrainConfig):
    """``init_from``, ``data`` (``ChatDataConfig``) and ``train`` (``TrainConfig``)."""


def collate_packed(rows: list[tuple[Rendered, ...]], seq_len: int,
                   pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, targets, positions) of packed rows, padded to the longest row of the batch.

    Each example is shifted on its own (no target crosses into the next example); its
    positions run 0..n-1. The padding at a row's end counts as one more example (positions
    from 0) that carries no loss, so no real token attends to it or it to them.
    """
    inputs, targets, positions = [], [], []
    for row in rows:
        ids, tgt, pos = [], [], []
        for example in row:
            i, t = shift(example.ids, example.assistant_mask, seq_len)
            ids += i
            tgt += t
            pos += range(len(i))
        inputs.append(ids)
        targets.append(tgt)
        positions.append(pos)
    width = max(len(ids) for ids in inputs)
    for pos in positions:
        pos += range(width - len(pos))
    return pad(inputs, pad_id), pad(targets, IGNORE), torch.tensor(positions, dtype=torch.long)


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

    def batch_items(self, examples: list[Rendered]) -> list[Rendered] | list[tuple[Rendered, ...]]:
        if not self.config.data.packing:
            return examples
        seq_len = self.config.data.seq_len
        rows = pack_rows([min(len(e), seq_len + 1) - 1 for e in examples], seq_len)
        return [tuple(examples[i] for i in row) for row in rows]

    def collate(self, items: list) -> tuple[torch.Tensor, ...]:
        seq_len = self.config.data.seq_len
        if self.config.data.packing:
            return collate_packed(items, seq_len, self.template.pad_id)
        pairs = [shift(e.ids, e.assistant_mask, seq_len) for e in items]
        return pad([i for i, _ in pairs], self.template.pad_id), pad([t for _, t in pairs], IGNORE)

    def compute_loss(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        inputs, targets = batch[:2]
        positions = batch[2] if len(batch) == 3 else None  # packed rows
        # Tokens the model processed (padding excluded), for tokens/s; counted on the device.
        return self.model(inputs, targets, positions=positions), {}, (inputs != self.template.pad_id).sum()

    def eval_weight(self, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        # Validation loss is a mean over assistant tokens, so weight batches by them.
        return (batch[1] != IGNORE).sum()
