"""The model subcommands, driven through argparse as the lmforge console script does."""

from __future__ import annotations

import argparse
import json
import re

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


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.mark.parametrize("command", ["generate", "chat"])
@pytest.mark.parametrize("option, value", [
    ("--top-k", "0"), ("--top-k", "-3"), ("--top-k", "2.5"),
    ("--top-p", "0"), ("--top-p", "-0.1"), ("--top-p", "1.5"), ("--top-p", "nan"),
    ("--temperature", "-1"), ("--temperature", "inf"), ("--max-new-tokens", "0"),
])
def test_sampling_options_out_of_range_are_argument_errors(command, option, value, capsys):
    prompt = ["--prompt", "x"] if command == "generate" else []
    with pytest.raises(SystemExit) as info:
        parse([command, "ckpt", *prompt, option, value])
    assert info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith(f"argument {option}: must be "
                          + {"--top-k": "a whole number >= 1", "--max-new-tokens": "a whole number >= 1",
                             "--top-p": "a number in (0, 1]", "--temperature": "a finite number >= 0"}[option]
                          + f", got '{value}'")


def test_sampling_options_at_their_limits_are_accepted():
    args = parse(["generate", "ckpt", "--prompt", "x", "--top-k", "1", "--top-p", "1", "--temperature", "0",
                  "--max-new-tokens", "1"])
    assert (args.top_k, args.top_p, args.temperature, args.max_new_tokens) == (1, 1.0, 0.0, 1)
    assert (parse(["chat", "ckpt"]).top_p, parse(["generate", "ckpt", "--prompt", "x"]).top_k) == (0.9, None)


HF_CONFIG = {"model_type": "llama", "vocab_size": 10, "hidden_size": 16, "intermediate_size": 32,
             "num_hidden_layers": 1, "num_attention_heads": 2}


@pytest.mark.parametrize("text, message", [
    ("{not json", r"config.json: not valid JSON \(Expecting property name"),
    (b"\xff\xfe\x00garbage", "config.json: not valid JSON"),
    ("[1, 2]", "config.json: expected a JSON object, got list"),
    (json.dumps({k: v for k, v in HF_CONFIG.items() if k != "hidden_size"}),
     "config.json: missing key 'hidden_size'"),
    (json.dumps({k: v for k, v in HF_CONFIG.items() if k != "model_type"}), "config.json: missing key 'model_type'"),
    (json.dumps({**HF_CONFIG, "num_hidden_layers": "1"}), "config.json: num_hidden_layers must be a positive whole "
                                                           "number, got '1'"),
    (json.dumps({**HF_CONFIG, "rms_norm_eps": -1}), "config.json: rms_norm_eps must be a positive number, got -1"),
    (json.dumps({**HF_CONFIG, "num_attention_heads": 3}), "config.json: dim 16 is not divisible by n_heads 3"),
    (json.dumps({**HF_CONFIG, "rope_scaling": "linear"}), "config.json: rope_scaling must be an object"),
])
def test_import_hf_refuses_a_bad_config_json_naming_the_file_and_key(tmp_path, capsys, text, message):
    from pipeline.cli import main

    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(cli.BAD_INPUT, match=f"^{hf_dir / 'config.json'}: .*") as info:
        run_cli(["import-hf", str(hf_dir), str(tmp_path / "out")])
    assert re.search(message, str(info.value)), str(info.value)
    # Through the console script: exit 2 and one line on stderr, no traceback.
    assert main(["import-hf", str(hf_dir), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"lmforge: bad input: {info.value}"]
    assert not (tmp_path / "out").exists()


def test_import_hf_without_a_config_json_is_bad_input(tmp_path):
    with pytest.raises(cli.BAD_INPUT, match=r"nothing/config.json: no such file \(not a Hugging Face model"):
        run_cli(["import-hf", str(tmp_path / "nothing"), str(tmp_path / "out")])
