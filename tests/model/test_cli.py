"""The model subcommands, driven through argparse as the lmforge console script does."""

from __future__ import annotations

import argparse

import pytest
import torch
import yaml
from tokenizers import Tokenizer

from model import cli
from model.checkpoint import load_model, resolve_checkpoint
from model.generate import generate

from .conftest import HAMLET


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_train_generate_export_import(tmp_path, capsys):
    config = {
        "model": {"dim": 32, "n_layers": 1, "n_heads": 4, "hidden_dim": 64, "max_seq_len": 64},
        "data": {"text_files": [str(HAMLET)], "seq_len": 32},
        "train": {"out_dir": str(tmp_path / "run"), "batch_size": 4, "max_steps": 6, "warmup_steps": 1,
                  "eval_every": 0, "checkpoint_every": 0, "device": "cpu", "lr": 1e-2, "min_lr": 1e-3},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    assert run_cli(["train", str(tmp_path / "tiny.yaml")]) == 0
    capsys.readouterr()

    assert run_cli(["generate", str(tmp_path / "run"), "--prompt", "Ham", "--max-new-tokens", "12",
                    "--temperature", "0"]) == 0
    printed = capsys.readouterr().out
    ckpt = resolve_checkpoint(tmp_path / "run")
    tokenizer = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    prompt = torch.tensor([tokenizer.encode("Ham").ids])
    ids = [t.item() for t in generate(load_model(ckpt), prompt, 12, temperature=0)]
    assert printed == "Ham" + tokenizer.decode(ids) + "\n"
    assert len(printed) == len("Ham") + 12 + 1

    assert run_cli(["export-hf", str(tmp_path / "run"), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "tokenizer.json").read_bytes() == (ckpt / "tokenizer.json").read_bytes()
    assert run_cli(["import-hf", str(tmp_path / "hf"), str(tmp_path / "back")]) == 0
    back, original = load_model(tmp_path / "back"), load_model(ckpt)
    assert all(torch.equal(back.state_dict()[k], v) for k, v in original.state_dict().items())


def test_bad_input_raises_a_bad_input_type_naming_the_file(tmp_path):
    # The commands catch nothing; the entry point maps cli.BAD_INPUT to exit code 2.
    with pytest.raises(cli.BAD_INPUT, match="missing: no model.safetensors"):
        run_cli(["generate", str(tmp_path / "missing"), "--prompt", "x"])
    (tmp_path / "bad.yaml").write_text("model:\n  width: 3\n")
    with pytest.raises(cli.BAD_INPUT, match="bad.yaml: model: unknown key 'width'"):
        run_cli(["train", str(tmp_path / "bad.yaml")])
    with pytest.raises(cli.BAD_INPUT, match="nothing.yaml"):
        run_cli(["sft", str(tmp_path / "nothing.yaml")])
    with pytest.raises(cli.BAD_INPUT, match="no such file"):
        run_cli(["inspect-shards", str(tmp_path / "nowhere")])
