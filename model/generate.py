"""Sampling from a ``Transformer`` with a KV cache.

The prompt is run once (prefill), then one token at a time, each step attending to the
cached keys and values. Sampling order: temperature, then top-k, then top-p (nucleus) on
what is left; temperature 0 means greedy argmax. ``generate`` yields tokens as they are
produced so a caller can stream text.

``continuation`` is the one path from a prompt's ids to sampled ids that ``lmforge
generate``, ``lmforge chat`` and the pretrain stage's sample share; ``stream_text`` turns
those ids into printable pieces.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence

import torch
from tokenizers import Tokenizer

from model.llama import KVCache, Transformer


class PromptError(ValueError):
    """A prompt the model cannot continue: empty, not encodable, or as long as its context."""


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids, shape (B,), from last-position logits of shape (B, vocab)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the mass before it already reaches top_p; the first always stays.
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


@torch.inference_mode()
def generate(model: Transformer, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, eos_id: int | None = None,
             generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Yield the next token ids (shape (B,)) for a prompt of shape (B, T), one step at a time.

    Stops after ``max_new_tokens`` or once every sequence has produced ``eos_id``. Sequences
    that finished early keep receiving ``eos_id``.
    """
    if temperature < 0 or (top_k is not None and top_k < 1) or (top_p is not None and not 0 < top_p <= 1):
        raise ValueError(f"sampling needs temperature >= 0, top_k >= 1 and top_p in (0, 1]; got "
                         f"temperature={temperature}, top_k={top_k}, top_p={top_p}")
    model.eval()
    batch, prompt_len = prompt.shape
    if prompt_len >= model.config.max_seq_len:
        raise PromptError(f"prompt of {prompt_len} tokens leaves no room within max_seq_len {model.config.max_seq_len}")
    # The last sampled token is never fed back, hence the -1.
    max_len = min(prompt_len + max_new_tokens - 1, model.config.max_seq_len)
    cache = KVCache(model.config, batch, max(max_len, prompt_len), prompt.device, next(model.parameters()).dtype)
    logits = model(prompt, cache=cache, pos=0)[:, -1]
    finished = torch.zeros(batch, dtype=torch.bool, device=prompt.device)
    for pos in range(prompt_len, prompt_len + max_new_tokens):
        token = sample_next(logits, temperature, top_k, top_p, generator)
        if eos_id is not None:
            token = token.masked_fill(finished, eos_id)
            finished |= token == eos_id
        yield token
        if pos >= max_len or (eos_id is not None and bool(finished.all())):
            return
        logits = model(token[:, None], cache=cache, pos=pos)[:, -1]


def encode_prompt(tokenizer: Tokenizer, text: str) -> list[int]:
    """``text`` as ids, no special tokens added; PromptError when it cannot be encoded or is empty."""
    try:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
    except Exception as e:  # tokenizers raises a bare Exception, e.g. a character a char vocab lacks
        raise PromptError(f"cannot encode the prompt {text[:40]!r}: {e}") from None
    if not ids:
        raise PromptError(f"the prompt {text[:40]!r} encodes to no tokens")
    return ids


def continuation(model: Transformer, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, stop_ids: Collection[int | None] = (),
                 seed: int = 0) -> Iterator[int]:
    """The ids that continue one prompt, streamed: at most ``max_new_tokens``, ending before
    the first id in ``stop_ids`` (not yielded). Sampling draws from a generator seeded with
    ``seed`` on the model's device, so a seed gives the same text every time.

    This is the one sampling path of ``lmforge generate``, ``lmforge chat`` and the pretrain
    stage's sample.
    """
    if not prompt_ids:
        raise PromptError("the prompt has no tokens")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    stops = {i for i in stop_ids if i is not None}
    prompt = torch.tensor([list(prompt_ids)], device=device)
    for token in generate(model, prompt, max_new_tokens, temperature, top_k, top_p, generator=generator):
        token_id = token.item()
        if token_id in stops:
            return
        yield token_id


def stream_text(tokenizer: Tokenizer, tokens: Iterable[int]) -> Iterator[str]:
    """Text pieces as ``tokens`` arrive: decode everything so far and yield what is new.

    A byte-level BPE character can span tokens, so a piece ending in an incomplete
    character (U+FFFD) waits for the next token; whatever is left at the end is yielded
    as it decodes.
    """
    ids: list[int] = []
    printed = text = ""
    for token in tokens:
        ids.append(token)
        text = tokenizer.decode(ids)
        if not text.endswith("\ufffd"):
            yield text[len(printed):]
            printed = text
    if text != printed:
        yield text[len(printed):]
