"""Hugging Face Llama interop: export a checkpoint to a ``LlamaForCausalLM`` directory, import one back.

An export directory holds ``config.json``, ``model.safetensors`` and, when the checkpoint
carries a tokenizer, ``tokenizer.json`` + ``tokenizer_config.json`` (PreTrainedTokenizerFast),
which is what transformers, vLLM and llama.cpp's converter read. Our rotary layout is HF's
rotate-half layout, so q/k need no permutation; our fused ``wqkv``/``w13`` are split into
q/k/v and gate/up on export and joined on import, and the vocabulary padding rows are dropped
on export (config.json states the true vocab size) and added back on import
(``split_projections`` / ``fuse_projections`` in ``model/checkpoint.py``).

Import accepts the configs that current transformers writes (``rope_parameters``) and older
ones (top-level ``rope_theta``, ``rope_scaling``), tied or untied embeddings, and weights in
one safetensors file, a sharded safetensors index, or ``pytorch_model.bin`` (read with
``weights_only=True``). What our model cannot represent (rope scaling, biases, another
activation, a decoupled head_dim) is refused with a message naming the key, and so is a
config.json that is not a JSON object, lacks a key a Llama config has, or holds a shape
field that is not a positive number (``HFConversionError``: bad input, one line).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from model.checkpoint import (
    CheckpointError,
    load_model_weights,
    load_safetensors,
    load_torch_weights,
    model_weights,
    resolve_checkpoint,
    split_projections,
)
from model.llama import ModelConfig, Transformer

# Split-layout names (see fuse_projections) -> HF's.
_LAYER_NAMES = {
    "attention.wq": "self_attn.q_proj",
    "attention.wk": "self_attn.k_proj",
    "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj",
    "feed_forward.w1": "mlp.gate_proj",
    "feed_forward.w3": "mlp.up_proj",
    "feed_forward.w2": "mlp.down_proj",
    "attention_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"tok_embeddings": "model.embed_tokens", "norm": "model.norm", "output": "lm_head"}

# Special-token spellings, ours first (stages/tokens/train_tokenizer.py), then common ones.
SPECIAL_TOKENS = {
    "bos_token": ["<|bos|>", "<|begin_of_text|>", "<s>", "<bos>"],
    "eos_token": ["<|eos|>", "<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"],
    "pad_token": ["<|pad|>", "<pad>"],
}


class HFConversionError(ValueError):
    """A Hugging Face model that our Llama cannot represent; the message names the key."""


def to_hf_name(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "layers":
        module = ".".join(parts[2:-1])
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[module]}.{parts[-1]}"
    return f"{_TOP_NAMES[parts[0]]}.{parts[-1]}"


def from_hf_name(name: str) -> str:
    for ours, theirs in _TOP_NAMES.items():
        if name == f"{theirs}.weight":
            return f"{ours}.weight"
    parts = name.split(".")
    if len(parts) >= 5 and parts[:2] == ["model", "layers"]:
        module = ".".join(parts[3:-1])
        for ours, theirs in _LAYER_NAMES.items():
            if module == theirs:
                return f"layers.{parts[2]}.{ours}.{parts[-1]}"
    raise HFConversionError(f"unexpected weight {name!r}: not part of a plain Llama")


def special_tokens(tokenizer_json: Path) -> dict[str, tuple[str, int]]:
    """bos/eos/pad tokens found among a tokenizer.json's added tokens, as (text, id)."""
    added = {t["content"]: t["id"] for t in json.loads(tokenizer_json.read_text(encoding="utf-8")).get("added_tokens", [])}
    found = {}
    for role, spellings in SPECIAL_TOKENS.items():
        for text in spellings:
            if text in added:
                found[role] = (text, added[text])
                break
    return found


def hf_config(config: ModelConfig, specials: dict[str, tuple[str, int]]) -> dict[str, Any]:
    """config.json for ``LlamaForCausalLM``, readable by old and new transformers."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.dim,
        "intermediate_size": config.hidden_dim,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        # Older transformers read rope_theta/rope_scaling, newer ones rope_parameters.
        "rope_theta": config.rope_theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "tie_word_embeddings": config.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "initializer_range": config.init_std,
        "torch_dtype": "float32",
        "use_cache": True,
        "bos_token_id": specials["bos_token"][1] if "bos_token" in specials else None,
        "eos_token_id": specials["eos_token"][1] if "eos_token" in specials else None,
        "pad_token_id": specials["pad_token"][1] if "pad_token" in specials else None,
    }


def export_hf(checkpoint: str | Path, out_dir: str | Path, tokenizer: str | Path | None = None) -> Path:
    """Write checkpoint ``checkpoint`` as a Hugging Face Llama directory at ``out_dir``."""
    ckpt = resolve_checkpoint(checkpoint)
    config = ModelConfig(**json.loads((ckpt / "model.json").read_text()))
    weights = split_projections(load_safetensors(ckpt / "model.safetensors"), config)
    tokenizer = Path(tokenizer) if tokenizer else (ckpt / "tokenizer.json" if (ckpt / "tokenizer.json").is_file() else None)
    specials = special_tokens(tokenizer) if tokenizer else {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Tied: HF stores the embedding only and re-ties lm_head on load.
    hf_weights = {to_hf_name(k): v.contiguous() for k, v in model_weights(weights, config.tie_embeddings).items()}
    save_file(hf_weights, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config(config, specials), indent=2))
    if tokenizer:
        shutil.copyfile(tokenizer, out / "tokenizer.json")
        tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": config.max_seq_len,
                            **{role: text for role, (text, _) in specials.items()}}
        (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return out


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding an object; HFConversionError naming the file otherwise."""
    if not path.is_file():
        raise HFConversionError(f"{path}: no such file (not a Hugging Face model directory?)")
    try:
        value = json.loads(path.read_bytes())
    except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
        raise HFConversionError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise HFConversionError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


_REQUIRED = object()


def _positive(cfg: dict[str, Any], key: str, source: Path, kind: type = int, default: Any = _REQUIRED) -> Any:
    """``cfg[key]`` as a positive int (or float); absent or null gives ``default``, or an
    error naming the file and the key when it is required."""
    value = cfg.get(key)
    if value is None:
        if default is _REQUIRED:
            raise HFConversionError(f"{source}: missing key {key!r}, which a Llama config.json has")
        return default
    allowed = (int, float) if kind is float else int
    if isinstance(value, bool) or not isinstance(value, allowed) or not 0 < value < float("inf"):
        wanted = "number" if kind is float else "whole number"
        raise HFConversionError(f"{source}: {key} must be a positive {wanted}, got {value!r}")
    return kind(value)


def _rope_theta(cfg: dict[str, Any], source: Path) -> float:
    """rope_theta from any config generation; refuse rope scaling we do not implement."""
    for key in ("rope_parameters", "rope_scaling"):
        params = cfg.get(key)
        if not params:
            continue
        if not isinstance(params, dict):
            raise HFConversionError(f"{source}: {key} must be an object, got {params!r}")
        kind = params.get("rope_type", params.get("type", "default"))
        if kind != "default":
            raise HFConversionError(f"{source}: {key}.rope_type {kind!r} is not supported "
                                    "(only plain RoPE, rope_type 'default')")
        if "rope_theta" in params:
            return _positive(params, "rope_theta", source, float)
    return _positive(cfg, "rope_theta", source, float, default=10000.0)


def model_config_from_hf(cfg: dict[str, Any], source: Path) -> ModelConfig:
    """Our ``ModelConfig`` for a HF Llama config.json; refuses what it cannot represent."""
    if "model_type" not in cfg:
        raise HFConversionError(f"{source}: missing key 'model_type' (a Llama config.json has \"llama\")")
    if cfg["model_type"] != "llama":
        raise HFConversionError(f"{source}: model_type {cfg['model_type']!r} is not 'llama'")
    activation = cfg.get("hidden_act", "silu")
    if activation != "silu":
        raise HFConversionError(f"{source}: hidden_act {activation!r} is not supported (SwiGLU uses 'silu')")
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise HFConversionError(f"{source}: {key} is true; this Llama has no bias terms")
    dim, n_heads = _positive(cfg, "hidden_size", source), _positive(cfg, "num_attention_heads", source)
    if cfg.get("head_dim") not in (None, dim // n_heads):
        raise HFConversionError(f"{source}: head_dim {cfg['head_dim']} differs from hidden_size / "
                                f"num_attention_heads = {dim // n_heads}; not supported")
    fields = dict(
        vocab_size=_positive(cfg, "vocab_size", source),
        dim=dim,
        n_layers=_positive(cfg, "num_hidden_layers", source),
        n_heads=n_heads,
        n_kv_heads=_positive(cfg, "num_key_value_heads", source, default=n_heads),
        hidden_dim=_positive(cfg, "intermediate_size", source),
        max_seq_len=_positive(cfg, "max_position_embeddings", source, default=2048),
        rope_theta=_rope_theta(cfg, source),
        norm_eps=_positive(cfg, "rms_norm_eps", source, float, default=1e-6),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        init_std=_positive(cfg, "initializer_range", source, float, default=0.02),
    )
    try:
        return ModelConfig(**fields)
    except ValueError as e:  # shapes our model cannot take: heads that do not divide, an odd head_dim
        raise HFConversionError(f"{source}: {e}") from None


def _read_hf_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    if (hf_dir / "model.safetensors").is_file():
        return load_safetensors(hf_dir / "model.safetensors")
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise HFConversionError(f"{index}: missing key 'weight_map' (or it is not an object)")
        files = sorted(set(weight_map.values()))
        return {k: v for f in files for k, v in load_safetensors(hf_dir / f).items()}
    if (hf_dir / "pytorch_model.bin").is_file():
        return load_torch_weights(hf_dir / "pytorch_model.bin")
    raise CheckpointError(f"{hf_dir}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def load_hf_model(hf_dir: str | Path) -> Transformer:
    """Our ``Transformer`` holding the weights of a Hugging Face Llama directory."""
    hf_dir = Path(hf_dir)
    config = model_config_from_hf(read_json_object(hf_dir / "config.json"), hf_dir / "config.json")
    weights = {}
    for name, tensor in _read_hf_weights(hf_dir).items():
        if name.endswith("rotary_emb.inv_freq"):
            continue  # a cache some transformers versions saved; rebuilt from rope_theta
        weights[from_hf_name(name)] = tensor.float()
    if config.tie_embeddings:
        weights.pop("output.weight", None)
    model = Transformer(config)
    load_model_weights(model, weights, hf_dir)
    return model


def import_hf(hf_dir: str | Path, out_dir: str | Path) -> Path:
    """Convert a Hugging Face Llama directory into one of our checkpoint directories."""
    hf_dir, out = Path(hf_dir), Path(out_dir)
    model = load_hf_model(hf_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(model_weights(model, model.config.tie_embeddings), out / "model.safetensors", metadata={"format": "pt"})
    (out / "model.json").write_text(json.dumps(dataclasses.asdict(model.config), indent=2))
    if (hf_dir / "tokenizer.json").is_file():
        shutil.copyfile(hf_dir / "tokenizer.json", out / "tokenizer.json")
    return out
