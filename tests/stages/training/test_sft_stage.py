"""sft: the DAG fine-tunes its own pretrained model on instruction data and commits it."""

from __future__ import annotations

import json
import shutil

import pytest

import pipeline
from pipeline.config import ConfigError, config_from_dict
from stages import stage_class_for

from tests.stages.training.conftest import DATA, TRAIN, pretrained_stages

# The local executor trains in this process: torch on one thread (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def config(tmp_path, data=DATA, **sft):
    return {
        "name": "s",
        "run_dir": str(tmp_path / "run"),
        "stages": {
            **pretrained_stages(),
            "sft": {"kind": "sft", "inputs": ["lm"], "params": {
                "preset": "configs/sft.yaml",
                "data": {"train_file": data, "max_examples": 80, "seq_len": 128, "val_fraction": 0.2},
                "train": {**TRAIN, "max_steps": 6, "eval_every": 3}, **sft}},
        },
    }


def test_sft_stage_fine_tunes_the_pretrained_model(tmp_path):
    data = tmp_path / "data.json"
    shutil.copyfile(DATA, data)
    outcomes = pipeline.run(config(tmp_path, data=str(data)))
    assert outcomes[-1].status == "ran"
    stage = tmp_path / "run" / "sft"
    manifest = json.loads((stage / "manifest.json").read_text())
    info = manifest["tasks"]["sft"]["info"]
    assert info["steps"] == 6 and info["train_examples"] == 64
    assert info["final_val_loss"] < info["first_val_loss"]
    committed = sorted(f["path"] for f in manifest["tasks"]["sft"]["files"])
    assert committed == ["model/model.json", "model/model.safetensors", "model/tokenizer.json", "train_log.jsonl"]
    # The pretrain stage's tokenizer (with the chat tokens) travels with the model.
    assert ((stage / "model" / "tokenizer.json").read_bytes()
            == (tmp_path / "run" / "lm" / "model" / "tokenizer.json").read_bytes())
    weights = (stage / "model" / "model.safetensors").read_bytes()

    # Unchanged config and data: cached. New content under the same file name: trained again.
    assert pipeline.run(config(tmp_path, data=str(data)))[-1].status == "skipped"
    data.write_text(json.dumps(json.loads(data.read_text())[::-1]))
    again = pipeline.run(config(tmp_path, data=str(data)))
    assert [o.status for o in again] == ["skipped"] * 4 + ["ran"]
    assert (stage / "model" / "model.safetensors").read_bytes() != weights


def test_bad_sft_key_is_a_config_error(tmp_path):
    bad = config(tmp_path)
    bad["stages"]["sft"]["params"]["data"]["seq_lenn"] = 3
    with pytest.raises(ConfigError, match=r"stage 'sft'.*unknown key 'seq_lenn'"):
        config_from_dict(bad, stage_class_for)
