"""Checkpoints of the split layout (separate wq/wk/wv and w1/w3, unpadded vocabulary) still load and resume."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from model.checkpoint import (
    fuse_projections,
    latest_checkpoint,
    load_model,
    load_safetensors,
    split_projections,
)
from model.llama import Transformer
from model.trainer import Trainer

from .conftest import tiny_model_config, tiny_run_config, write_shards


def test_split_then_fuse_is_the_identity_and_split_matches_the_layout():
    torch.manual_seed(0)
    model = Transformer(tiny_model_config())
    state = model.state_dict()
    split = split_projections(state, model.config)
    assert split["layers.0.attention.wq.weight"].shape == (32, 32)
    assert split["layers.1.attention.wv.weight"].shape == (16, 32)
    assert torch.equal(split["layers.0.feed_forward.w3.weight"], state["layers.0.feed_forward.w13.weight"][64:])
    assert split["tok_embeddings.weight"].shape == split["output.weight"].shape == (97, 32)
    assert not any("wqkv" in k or "w13" in k for k in split)
    fused = fuse_projections(split, model.config)
    assert fused.keys() == state.keys()
    assert all(torch.equal(fused[k], state[k]) for k in state)


PARTS = {"wqkv": ("wq", "wk", "wv"), "w13": ("w1", "w3")}


def split_names(name: str) -> list[str]:
    module = name.split(".")[-2]
    return [name.replace(module, part) for part in PARTS[module]] if module in PARTS else [name]


def to_split_layout(checkpoint) -> None:
    """Rewrite a checkpoint in place as the code before fusion and padding wrote it."""
    config_json = json.loads((checkpoint / "model.json").read_text())
    config_json.pop("vocab_multiple")  # that code had no such field
    (checkpoint / "model.json").write_text(json.dumps(config_json))
    config = tiny_model_config(vocab_size=config_json["vocab_size"])
    weights = split_projections(load_safetensors(checkpoint / "model.safetensors"), config)
    save_file({k: v.contiguous() for k, v in weights.items()}, checkpoint / "model.safetensors")

    tensors = {}
    for key, value in load_safetensors(checkpoint / "trainer_state.safetensors").items():
        if not key.startswith("optimizer/"):
            tensors[key] = value
            continue
        name, field = key[len("optimizer/"):].rsplit("/", 1)
        if value.dim() == 0:  # AdamW's step: one per parameter
            tensors.update({f"optimizer/{part}/{field}": value.clone() for part in split_names(name)})
        else:  # moments: shaped like the parameter
            for part, piece in split_projections({name: value}, config).items():
                tensors[f"optimizer/{part}/{field}"] = piece.contiguous()
    save_file(tensors, checkpoint / "trainer_state.safetensors")

    state = json.loads((checkpoint / "trainer_state.json").read_text())
    for group in state["param_groups"]:
        group["params"] = [part for name in group["params"] for part in split_names(name)]
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))


def test_split_layout_checkpoint_loads_and_resumes_bit_identically(tmp_path):
    data = write_shards(tmp_path / "data")
    straight = Trainer(tiny_run_config(tmp_path / "straight", data, max_steps=8))
    expected = straight.train()

    first = Trainer(tiny_run_config(tmp_path / "resumed", data, max_steps=8))
    first.train(stop_at=4)
    checkpoint = latest_checkpoint(tmp_path / "resumed" / "checkpoints")
    fused_model = load_model(checkpoint)
    to_split_layout(checkpoint)
    assert "layers.0.attention.wq.weight" in load_safetensors(checkpoint / "model.safetensors")

    loaded = load_model(checkpoint)
    for name, weight in fused_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], weight), name

    resumed = Trainer(tiny_run_config(tmp_path / "resumed", data, max_steps=8))
    assert resumed.step == 4
    rest = resumed.train()
    assert [r["loss"] for r in rest] == [r["loss"] for r in expected[4:]]
    assert [r["grad_norm"] for r in rest] == [r["grad_norm"] for r in expected[4:]]
