"""The Llama model: shapes, parameter count, causality, KV-cache generation, sampling, learning."""

from __future__ import annotations

import pytest
import torch

from model.generate import generate, sample_next
from model.llama import KVCache, Transformer

from .conftest import tiny_model_config


def build(**overrides) -> Transformer:
    torch.manual_seed(0)
    return Transformer(tiny_model_config(**overrides))


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])  # MHA, GQA, MQA
def test_shapes_and_kv_projection_widths(n_kv_heads):
    model = build(n_kv_heads=n_kv_heads)
    tokens = torch.randint(0, 97, (3, 10))
    assert model(tokens).shape == (3, 10, 97)
    # One fused matmul: 32 query rows, then n_kv_heads * head_dim rows each for keys and values.
    assert model.layers[0].attention.wqkv.weight.shape == (32 + 2 * n_kv_heads * 8, 32)
    assert model.layers[0].feed_forward.w13.weight.shape == (2 * 64, 32)
    loss = model(tokens, tokens)
    assert loss.shape == () and abs(loss.item() - torch.log(torch.tensor(97.0)).item()) < 0.5


@pytest.mark.parametrize("tied", [False, True])
def test_parameter_count_matches_formula(tied):
    model = build(tie_embeddings=tied)
    dim, hidden, vocab, layers, kv_dim = 32, 64, 128, 2, 2 * 8  # 97 ids padded to 128 rows
    per_layer = dim * dim * 2 + dim * kv_dim * 2 + 3 * dim * hidden + 2 * dim
    expected = vocab * dim * (1 if tied else 2) + layers * per_layer + dim
    assert model.num_params() == expected
    assert model.flops_per_token(64) == 6 * (expected - (0 if tied else vocab * dim)) + 12 * layers * 4 * 8 * 64


def test_residual_projections_get_smaller_init():
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(dim=256, hidden_dim=512, n_heads=8, n_kv_heads=8, n_layers=8))
    wo_std = model.layers[0].attention.wo.weight.std().item()
    wq_std = model.layers[0].attention.wqkv.weight.std().item()
    assert wq_std == pytest.approx(0.02, rel=0.05)
    assert wo_std == pytest.approx(0.02 / 4, rel=0.05)  # 1/sqrt(2 * 8 layers)


def test_future_tokens_never_change_earlier_logits():
    model = build().eval()
    tokens = torch.randint(0, 97, (2, 20))
    changed = tokens.clone()
    changed[:, 12:] = (changed[:, 12:] + 1 + torch.randint(0, 90, (2, 8))) % 97
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert torch.equal(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_cached_forward_matches_full_forward_including_chunked_prefill():
    model = build().eval()
    tokens = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        full = model(tokens)
        cache = KVCache(model.config, 2, 16, torch.device("cpu"), torch.float32)
        pieces = [model(tokens[:, :6], cache=cache, pos=0),
                  model(tokens[:, 6:11], cache=cache, pos=6)]  # a second chunk exercises the shifted mask
        pieces += [model(tokens[:, i:i + 1], cache=cache, pos=i) for i in range(11, 16)]
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


def greedy_by_recomputation(model: Transformer, prompt: torch.Tensor, n: int) -> torch.Tensor:
    tokens = prompt
    with torch.no_grad():
        for _ in range(n):
            tokens = torch.cat([tokens, model(tokens)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokens[:, prompt.shape[1]:]


def test_kv_cache_generation_equals_full_recomputation():
    model = build(n_kv_heads=1)
    prompt = torch.randint(0, 97, (3, 5))
    cached = torch.stack(list(generate(model, prompt, max_new_tokens=20, temperature=0)), dim=1)
    assert cached.shape == (3, 20)
    assert torch.equal(cached, greedy_by_recomputation(model, prompt, 20))


def test_generation_stops_at_max_seq_len_and_on_eos():
    model = build(max_seq_len=16)
    prompt = torch.randint(0, 97, (1, 10))
    assert len(list(generate(model, prompt, max_new_tokens=50, temperature=0))) == 7  # positions 10..15 + 1
    first = next(generate(model, prompt, max_new_tokens=5, temperature=0)).item()
    assert len(list(generate(model, prompt, max_new_tokens=5, temperature=0, eos_id=first))) == 1


def test_sampling_filters():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5, 2.9]])
    g = torch.Generator().manual_seed(0)
    assert sample_next(logits, temperature=0).item() == 1
    assert {sample_next(logits, 1.0, top_k=1, generator=g).item() for _ in range(20)} == {1}
    top2 = {sample_next(logits, 1.0, top_k=2, generator=g).item() for _ in range(200)}
    assert top2 == {1, 4}
    # softmax mass of tokens 1 and 4 is ~0.71; top_p=0.6 keeps exactly those two
    nucleus = {sample_next(logits, 1.0, top_p=0.6, generator=g).item() for _ in range(200)}
    assert nucleus == {1, 4}
    assert {sample_next(logits, 1.0, top_p=0.01, generator=g).item() for _ in range(20)} == {1}


def test_overfits_one_batch():
    model = build()
    torch.manual_seed(1)
    tokens = torch.randint(0, 97, (4, 33))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(150):
        loss = model(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.item() < 0.05


@pytest.mark.parametrize("tied", [False, True])
def test_padding_ids_are_never_scored_sampled_or_trained(tied):
    model = build(tie_embeddings=tied)
    assert model.config.padded_vocab_size == 128
    assert model.tok_embeddings.weight.shape == model.output.weight.shape == (128, 32)
    assert not model.output.weight[97:].any() and not model.tok_embeddings.weight[97:].any()
    tokens = torch.randint(0, 97, (2, 12))
    targets = tokens.clone()
    targets[0, :4] = -100
    logits = model(tokens)
    assert logits.shape == (2, 12, 97)
    # The loss is the cross-entropy over the 97 real ids only, ignored targets left out.
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 97), targets.reshape(-1), ignore_index=-100)
    loss = model(tokens, targets)
    assert torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    assert not model.output.weight.grad[97:].any() and not model.tok_embeddings.weight.grad[97:].any()
    assert model.output.weight.grad[:97].abs().sum() > 0
    g = torch.Generator().manual_seed(0)
    samples = torch.stack(list(generate(model, tokens[:, :3], max_new_tokens=40, temperature=5.0, generator=g)))
    assert samples.max().item() < 97


def test_fused_gate_up_projection_puts_the_gate_first():
    model = build().eval()
    x = torch.randn(2, 5, 32)
    ffn = model.layers[0].feed_forward
    w1, w3 = ffn.w13.weight.chunk(2)
    with torch.no_grad():
        assert torch.allclose(ffn(x), ffn.w2(torch.nn.functional.silu(x @ w1.T) * (x @ w3.T)), atol=1e-6)
