"""The one sampling path: continuation() stops before a stop id, replays by seed, streams text."""

from __future__ import annotations

import pytest
import torch

from model.checkpoint import load_model
from model.generate import PromptError, continuation, encode_prompt, generate, stream_text
from model.special_tokens import EOS


def test_continuation_is_generate_cut_before_the_first_stop_id(base_checkpoint, chat_tokenizer):
    model = load_model(base_checkpoint)
    prompt = encode_prompt(chat_tokenizer, "Convert 45 kilometers")
    sampled = [t.item() for t in generate(model, torch.tensor([prompt]), 40, temperature=1.0,
                                          generator=torch.Generator().manual_seed(3))]
    stop = sampled[5]
    got = list(continuation(model, prompt, 40, temperature=1.0, stop_ids=[stop, None], seed=3))
    assert got == sampled[:sampled.index(stop)]
    assert list(continuation(model, prompt, 40, temperature=1.0, seed=3)) == sampled
    assert list(continuation(model, prompt, 40, temperature=1.0, seed=4)) != sampled


def test_prompts_that_cannot_be_continued_are_bad_input(base_checkpoint, chat_tokenizer):
    model = load_model(base_checkpoint)
    with pytest.raises(PromptError, match="encodes to no tokens"):
        encode_prompt(chat_tokenizer, "")
    with pytest.raises(PromptError, match="leaves no room"):
        list(continuation(model, [chat_tokenizer.token_to_id(EOS)] * model.config.max_seq_len, 4))


def test_stream_text_yields_an_unfinished_character_at_the_end(chat_tokenizer):
    ids = chat_tokenizer.encode("ok ✓", add_special_tokens=False).ids
    pieces = list(stream_text(chat_tokenizer, ids[:-1]))  # the check mark cut in the middle
    assert "".join(pieces) == chat_tokenizer.decode(ids[:-1])
    assert pieces[-1].endswith("\ufffd")


@pytest.mark.parametrize("options", [dict(top_k=0), dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5),
                                     dict(temperature=-0.5)])
def test_sampling_settings_out_of_range_are_refused_before_any_step(base_checkpoint, options):
    model = load_model(base_checkpoint)
    with pytest.raises(ValueError, match="sampling needs temperature >= 0, top_k >= 1 and top_p in"):
        next(generate(model, torch.tensor([[5, 6]]), 4, **options))
