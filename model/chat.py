"""The chat template: conversations as token ids plus a mask of the assistant's tokens.

One format, built from the special tokens that the ``train_tokenizer`` stage adds
(``<|bos|>``, ``<|system|>``, ``<|user|>``, ``<|assistant|>``, ``<|end|>``)::

    <|bos|><|system|>{system}<|end|><|user|>{user}<|end|><|assistant|>{reply}<|end|><|user|>...

- Every turn is its role token, the content, then ``<|end|>``; there is no text between
  turns, so every token belongs to exactly one turn.
- The assistant mask is true on the tokens of each assistant reply and on the ``<|end|>``
  closing it (the model must learn to stop), false on ``<|bos|>``, on every role token
  (``<|assistant|>`` is part of the prompt: a generation prompt ends with it) and on system
  and user turns. Fine-tuning puts loss only where the mask is true.
- Generation stops at ``<|end|>`` (or ``<|eos|>``). ``<|eos|>`` ends pretraining documents
  and is not part of the chat format.
- Content is encoded with ``encode_special_tokens`` on: text that spells ``<|end|>`` or
  ``<|assistant|>`` stays plain text and cannot forge a turn. Content is encoded turn by
  turn, which gives the same ids as encoding the whole string, since special tokens split
  the text anyway.
- At most one system turn, first. Roles otherwise may come in any order.

``HF_CHAT_TEMPLATE`` is the same format as a Jinja template for a Hugging Face
``tokenizer_config.json``, so ``apply_chat_template`` renders the same ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from model.special_tokens import BOS, END, EOS, PAD, ROLE_TOKENS

HF_CHAT_TEMPLATE = (
    "{{ '<|bos|>' }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

Message = dict[str, str]


class ChatDataError(ValueError):
    """Chat data that does not fit the format (a bad message list or record, a tokenizer
    without the chat tokens); the message names the file, record or message."""


@dataclass(frozen=True)
class Rendered:
    """A rendered conversation: ``ids`` and, per id, whether the assistant produced it."""

    ids: list[int]
    assistant_mask: list[bool]

    def __len__(self) -> int:
        return len(self.ids)


def check_messages(messages: Any, where: str = "conversation") -> list[Message]:
    """``messages`` as a list of {"role", "content"} dicts; ChatDataError naming the bad entry."""
    if not isinstance(messages, list) or not messages:
        raise ChatDataError(f"{where}: expected a non-empty list of messages, got {messages!r:.80}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise ChatDataError(f"{where}: message {i} must have exactly the keys 'role' and 'content', "
                             f"got {message!r:.80}")
        if message["role"] not in ROLE_TOKENS:
            raise ChatDataError(f"{where}: message {i} has role {message['role']!r} "
                             f"(known: {', '.join(ROLE_TOKENS)})")
        if not isinstance(message["content"], str):
            raise ChatDataError(f"{where}: message {i} content must be a string, got {type(message['content']).__name__}")
        if message["role"] == "system" and i > 0:
            raise ChatDataError(f"{where}: message {i} is a system message; only the first may be")
    return messages


class ChatTemplate:
    """Renders conversations with one tokenizer; loads the special ids once."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        needed = [BOS, EOS, PAD, END, *ROLE_TOKENS.values()]
        ids = {token: tokenizer.token_to_id(token) for token in needed}
        missing = [token for token, i in ids.items() if i is None]
        if missing:
            raise ChatDataError(f"the tokenizer lacks the chat special tokens {missing}; train it with the "
                             "train_tokenizer stage (or add them as special tokens)")
        # A private copy: switching encode_special_tokens on must not change the caller's tokenizer.
        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self.tokenizer.encode_special_tokens = True
        self.bos_id, self.eos_id, self.pad_id, self.end_id = ids[BOS], ids[EOS], ids[PAD], ids[END]
        self.role_ids = {role: ids[token] for role, token in ROLE_TOKENS.items()}

    @classmethod
    def from_file(cls, path: str | Path) -> ChatTemplate:
        return cls(Tokenizer.from_file(str(path)))

    @property
    def stop_ids(self) -> frozenset[int]:
        """Ids that end an assistant reply during generation."""
        return frozenset((self.end_id, self.eos_id))

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> Rendered:
        """Ids and assistant mask of ``messages``; with ``add_generation_prompt``, end with
        ``<|assistant|>`` so that the model continues with a reply."""
        check_messages(list(messages))
        ids, mask = [self.bos_id], [False]
        for message in messages:
            is_assistant = message["role"] == "assistant"
            content = self.encode_text(message["content"])
            ids += [self.role_ids[message["role"]], *content, self.end_id]
            mask += [False] + [is_assistant] * (len(content) + 1)
        if add_generation_prompt:
            ids.append(self.role_ids["assistant"])
            mask.append(False)
        return Rendered(ids, mask)

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """The ids to feed the model so that it writes the next assistant turn."""
        return self.render(messages, add_generation_prompt=True).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

