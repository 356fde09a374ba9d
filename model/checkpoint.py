"""Checkpoints on disk: safetensors only, written atomically, the newest complete one found on resume.

A checkpoint is a directory ``ROOT/step-00001234/`` holding

- ``model.safetensors``: the weights (a tied output head is stored once, as the embedding);
- ``model.json``: the ``ModelConfig``, so a checkpoint rebuilds its model alone;
- ``trainer_state.safetensors``: optimizer moments and RNG states, as tensors;
- ``trainer_state.json``: step, scheduler, data position, run config, optimizer hyper-parameters;
- ``tokenizer.json`` when the training data came with one.

The weights and optimizer moments are always full tensors in this one layout, whatever
parallelism trained them: ``model/parallel.py`` gathers FSDP2, tensor-parallel and pipeline
shards (and undoes the row order it gives the fused projections under tensor parallelism)
before anything is written, and shards them again on load. So a checkpoint from any layout
resumes under any other, and ``generate``/``export-hf`` read it as a one-process one.

Everything is written into a hidden temp directory, each file fsynced, then the directory is
renamed into place and its parent fsynced. A directory named ``step-<8 digits>`` therefore is
complete by construction; anything else under ROOT (temp dirs of a killed run) is ignored.

Checkpoints written before the projections were fused (separate ``wq``/``wk``/``wv`` and
``w1``/``w3``, an unpadded vocabulary) still load: ``fuse_projections`` joins the matrices
and zero-pads the vocabulary rows of the weights and of the optimizer moments on read. The
same pair of functions converts to and from the Hugging Face layout (``model/hf.py``).

Nothing here unpickles. ``torch.load`` is only ever called with ``weights_only=True`` (for
HF ``pytorch_model.bin`` files), and a file in a safetensors slot that holds a pickle or a
``torch.save`` zip is refused with ``UnsafeCheckpointError`` before anything reads it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.files import fsync
from model.llama import ModelConfig, Transformer

CHECKPOINT_NAME = re.compile(r"^step-(\d{8})$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or unreadable; the message names the file."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file that would need unpickling to load."""


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    # A safetensors file opens with an 8-byte little-endian header length, then a JSON object.
    return len(head) >= 9 and 8 + int.from_bytes(head[:8], "little") <= size and head[8:9] == b"{"


def _looks_pickled(head: bytes) -> bool:
    # Pickle protocol 2+ starts with the PROTO opcode 0x80; torch.save writes a zip archive.
    return head[:1] == b"\x80" or head[:4] == b"PK\x03\x04"


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a pickle payload is refused, never executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(9)
    if not _looks_like_safetensors(head, path.stat().st_size) and _looks_pickled(head):
        raise UnsafeCheckpointError(f"{path}: holds a pickle payload (torch.save format), not safetensors; "
                                    "refusing to load it because unpickling can run arbitrary code")
    try:
        return load_file(path)
    except SafetensorError as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def load_torch_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``torch.save`` file of plain tensors, through ``torch.load(weights_only=True)``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(f"{path}: contains objects other than tensors; refusing to unpickle "
                                    f"it (weights_only=True rejected it: {str(e).splitlines()[0]})") from None


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and CHECKPOINT_NAME.match(p.name))


def latest_checkpoint(root: str | Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


# Fused weight -> the separate matrices it stacks row-wise, in order (also HF's split layout).
_FUSED = {"attention.wqkv": ("attention.wq", "attention.wk", "attention.wv"),
          "feed_forward.w13": ("feed_forward.w1", "feed_forward.w3")}
_VOCAB_ROWS = ("tok_embeddings.weight", "output.weight")


def _fused_groups(config: ModelConfig) -> dict[str, list[str]]:
    """Every fused weight name of the model -> the split names it joins."""
    return {f"layers.{i}.{fused}.weight": [f"layers.{i}.{part}.weight" for part in parts]
            for i in range(config.n_layers) for fused, parts in _FUSED.items()}


def _pad_vocab_rows(tensor: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    if tensor.dim() == 0 or tensor.shape[0] != config.vocab_size or config.padded_vocab_size == config.vocab_size:
        return tensor
    padding = tensor.new_zeros((config.padded_vocab_size - config.vocab_size, *tensor.shape[1:]))
    return torch.cat([tensor, padding])


def fuse_projections(tensors: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Weights in the split layout (wq/wk/wv, w1/w3, true vocab rows) in the model's layout.

    Joins each group row-wise and zero-pads the embedding and output to ``padded_vocab_size``
    rows. Tensors already in the model's layout pass through unchanged.
    """
    out = dict(tensors)
    for fused, parts in _fused_groups(config).items():
        if all(part in out for part in parts):
            out[fused] = torch.cat([out.pop(part) for part in parts])
    for name in _VOCAB_ROWS:
        if name in out:
            out[name] = _pad_vocab_rows(out[name], config)
    return out


def split_projections(tensors: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Inverse of ``fuse_projections``: separate matrices, the vocabulary padding rows dropped."""
    kv_width = config.n_kv_heads * config.head_dim
    widths = {"attention.wqkv": [config.n_heads * config.head_dim, kv_width, kv_width],
              "feed_forward.w13": [config.hidden_dim, config.hidden_dim]}
    out = dict(tensors)
    for fused, parts in _fused_groups(config).items():
        if fused in out:
            kind = fused.split(".", 2)[2].removesuffix(".weight")
            out.update(zip(parts, out.pop(fused).split(widths[kind])))
    for name in _VOCAB_ROWS:
        if name in out:
            out[name] = out[name][:config.vocab_size]
    return out


def _fuse_optimizer_state(optimizer_state: dict[str, Any], config: ModelConfig) -> dict[str, Any]:
    """``fuse_projections`` for a name-keyed optimizer state: moments joined and padded like
    their parameters, per-parameter scalars (AdamW's ``step``) taken from the first part."""
    state = dict(optimizer_state["state"])
    renamed = {}
    for fused, parts in _fused_groups(config).items():
        if all(part in state for part in parts):
            per_part = [state.pop(part) for part in parts]
            state[fused] = {key: torch.cat([p[key] for p in per_part]) if value.dim() else value
                            for key, value in per_part[0].items()}
            renamed.update({part: fused for part in parts})
    for name in _VOCAB_ROWS:
        if name in state:
            state[name] = {key: _pad_vocab_rows(value, config) for key, value in state[name].items()}
    groups = []
    for group in optimizer_state["param_groups"]:
        names = [renamed.get(name, name) for name in group["params"]]
        groups.append({**group, "params": list(dict.fromkeys(names))})
    return {"state": state, "param_groups": groups}


def model_weights(model: Transformer | dict[str, torch.Tensor], tied: bool) -> dict[str, torch.Tensor]:
    """The tensors to save: contiguous CPU copies, a tied output head left out."""
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()
            if not (tied and k == "output.weight")}


def load_model_weights(model: Transformer, weights: dict[str, torch.Tensor], source: str | Path) -> None:
    """Copy ``weights`` (either layout, see ``fuse_projections``) into ``model``; every
    parameter must be present with its shape."""
    weights = fuse_projections(weights, model.config)
    expected = model_weights(model, model.config.tie_embeddings)
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source}: weights do not match the model (missing {missing}, unexpected {unexpected})")
    for name, tensor in weights.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(f"{source}: {name} has shape {tuple(tensor.shape)}, "
                                  f"the model expects {tuple(expected[name].shape)}")
    model.load_state_dict(weights, strict=False)


def _flatten_optimizer(optimizer_state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """A name-keyed optimizer state dict as flat tensors plus JSON-able param groups."""
    tensors = {}
    for name, per_param in optimizer_state["state"].items():
        for key, value in per_param.items():
            tensors[f"optimizer/{name}/{key}"] = torch.as_tensor(value).detach().to("cpu").contiguous()
    return tensors, optimizer_state["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], param_groups: list[dict]) -> dict[str, Any]:
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            name, field = key[len("optimizer/"):].rsplit("/", 1)
            state.setdefault(name, {})[field] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in param_groups]
    return {"state": state, "param_groups": groups}


def save_checkpoint(root: str | Path, state: dict[str, Any], model_config: ModelConfig,
                    tokenizer: Path | None = None, keep: int = 3) -> Path:
    """Write ``state`` (a ``Trainer.state_dict()``) as checkpoint ``state["step"]``, atomically,
    then delete all but the newest ``keep`` checkpoints."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state['step']:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    optimizer_tensors, param_groups = _flatten_optimizer(state["optimizer"])
    rng = {f"rng/{k}": v for k, v in state["rng"].items()}
    rest = {k: v for k, v in state.items() if k not in ("model", "optimizer", "rng")}
    save_file(model_weights(state["model"], model_config.tie_embeddings), tmp / "model.safetensors",
              metadata={"format": "pt"})
    save_file({**optimizer_tensors, **rng}, tmp / "trainer_state.safetensors")
    (tmp / "model.json").write_text(json.dumps(dataclasses.asdict(model_config), indent=2))
    (tmp / "trainer_state.json").write_text(json.dumps({**rest, "param_groups": param_groups}, indent=2))
    if tokenizer is not None:
        shutil.copyfile(tokenizer, tmp / "tokenizer.json")
    for f in tmp.iterdir():
        fsync(f)
    fsync(tmp)
    if final.exists():
        # The same step written again (a re-run over an existing out_dir): replace it whole.
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync(root)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old)
    return final


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The ``Trainer.state_dict()`` saved in checkpoint directory ``path``."""
    path = Path(path)
    for name in ("model.safetensors", "model.json", "trainer_state.safetensors", "trainer_state.json"):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: incomplete checkpoint, {name} is missing")
    meta = json.loads((path / "trainer_state.json").read_text())
    tensors = load_safetensors(path / "trainer_state.safetensors")
    weights = load_safetensors(path / "model.safetensors")
    config = ModelConfig(**json.loads((path / "model.json").read_text()))
    weights = fuse_projections(weights, config)
    if config.tie_embeddings:
        weights["output.weight"] = weights["tok_embeddings.weight"]
    optimizer = _fuse_optimizer_state(_unflatten_optimizer(tensors, meta.pop("param_groups")), config)
    return {**meta, "model": weights, "optimizer": optimizer,
            "rng": {k[len("rng/"):]: v for k, v in tensors.items() if k.startswith("rng/")}}


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory itself, or the newest one under a checkpoints root or run dir."""
    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path
    for root in (path, path / "checkpoints"):
        found = latest_checkpoint(root)
        if found is not None:
            return found
    raise CheckpointError(f"{path}: no model.safetensors and no complete step-* checkpoint under it")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Transformer:
    """Rebuild the model of a checkpoint (see ``resolve_checkpoint`` for ``path``)."""
    ckpt = resolve_checkpoint(path)
    config = ModelConfig(**json.loads((ckpt / "model.json").read_text()))
    model = Transformer(config)
    load_model_weights(model, load_safetensors(ckpt / "model.safetensors"), ckpt / "model.safetensors")
    return model.to(device)
