"""`sft`, `dpo` and `chat` subcommands: configs in, checkpoints out, a streamed greedy reply."""

from __future__ import annotations

import argparse
import io
import json

import pytest
import torch
import yaml

from model.chat import ChatTemplate
from model.checkpoint import load_model, resolve_checkpoint
from model.cli import BAD_INPUT, register
from model.generate import generate

from .conftest import PAIRS

TRAIN = {"batch_size": 4, "max_steps": 4, "lr": 1.0e-3, "min_lr": 1.0e-4, "warmup_steps": 1, "eval_every": 4,
         "eval_batches": 2, "log_every": 2, "checkpoint_every": 0, "seed": 0, "device": "cpu"}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def write_config(path, init_from, out_dir, **extra):
    config = {"init_from": str(init_from), "data": {"train_file": str(PAIRS), "seq_len": 64, "max_examples": 40},
              "train": {**TRAIN, "out_dir": str(out_dir)}, **extra}
    path.write_text(yaml.safe_dump(config))
    return path


def test_sft_then_dpo_then_chat(base_checkpoint, tmp_path, monkeypatch, capsys):
    assert main(["sft", str(write_config(tmp_path / "sft.yaml", base_checkpoint, tmp_path / "sft"))]) == 0
    log = [json.loads(line) for line in (tmp_path / "sft" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and log[-1]["val_loss"] is not None

    dpo_config = write_config(tmp_path / "dpo.yaml", tmp_path / "sft", tmp_path / "dpo", dpo={"beta": 0.2})
    assert main(["dpo", str(dpo_config)]) == 0
    log = [json.loads(line) for line in (tmp_path / "dpo" / "log.jsonl").read_text().splitlines()]
    assert {"reward_margin", "reward_accuracy", "val_reward_margin"} <= log[-1].keys()
    out = capsys.readouterr().out
    assert "reward_accuracy" in out

    # chat: one user line on stdin; the greedy reply is the model's own continuation of the
    # chat prompt, cut at <|end|>.
    ckpt = resolve_checkpoint(tmp_path / "dpo")
    message = "Convert 45 kilometers to meters."
    monkeypatch.setattr("sys.stdin", io.StringIO(message + "\n"))
    assert main(["chat", str(ckpt), "--temperature", "0", "--max-new-tokens", "12"]) == 0
    printed = capsys.readouterr().out
    template = ChatTemplate.from_file(ckpt / "tokenizer.json")
    prompt = template.prompt_ids([{"role": "user", "content": message}])
    ids = []
    for token in generate(load_model(ckpt), torch.tensor([prompt]), 12, temperature=0, eos_id=template.end_id):
        if token.item() in template.stop_ids:
            break
        ids.append(token.item())
    assert ids, "the reply should not be empty"
    assert printed == template.tokenizer.decode(ids) + "\n"


def test_bad_config_and_checkpoint_raise_bad_input_naming_them(tmp_path):
    path = tmp_path / "dpo.yaml"
    path.write_text("init_from: x\ndpo: {beta: -1.0}\ndata: {train_file: d.json}\n")
    with pytest.raises(BAD_INPUT, match="dpo.yaml: dpo: beta must be > 0"):
        main(["dpo", str(path)])
    with pytest.raises(BAD_INPUT, match="missing: no model.safetensors"):
        main(["chat", str(tmp_path / "missing")])
