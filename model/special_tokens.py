"""The special tokens of lmforge tokenizers, defined once.

The ``train_tokenizer`` stage gives them the first ids in this order: ``<|bos|>`` 0,
``<|eos|>`` 1, ``<|pad|>`` 2, then the chat tokens. ``<|eos|>`` ends every pretraining
document; the chat template (``model/chat.py``) builds turns from the role tokens and
``<|end|>``; generation stops at ``<|eos|>`` (and at ``<|end|>`` in a chat).
"""

from __future__ import annotations

BOS, EOS, PAD, END = "<|bos|>", "<|eos|>", "<|pad|>", "<|end|>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
CHAT_TOKENS = [*ROLE_TOKENS.values(), END]
SPECIAL_TOKENS = [BOS, EOS, PAD, *CHAT_TOKENS]
