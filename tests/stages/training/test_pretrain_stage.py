"""pretrain: the DAG trains a tiny model on its own token shards, resumes, and samples."""

from __future__ import annotations

import json
import shutil

import pytest
from tokenizers import Tokenizer

import pipeline
from pipeline.config import ConfigError, config_from_dict
from stages import stage_class_for

TINY = {"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "hidden_dim": 64, "max_seq_len": 32}


def config(tmp_path, max_steps=12, **pretrain):
    return {
        "name": "p",
        "run_dir": str(tmp_path / "run"),
        "stages": {
            "ingest": {"kind": "ingest", "params": {
                "paths": ["demo/corpus/verdict.jsonl"], "id_field": "id"},
                "max_error_fraction": 0.1},
            "bpe": {"kind": "train_tokenizer", "inputs": ["ingest"], "params": {"vocab_size": 300}},
            "tok": {"kind": "tokenize", "inputs": ["ingest", "bpe"], "params": {"val_fraction": 0.1}},
            "lm": {"kind": "pretrain", "inputs": ["tok"], "params": {
                "model": TINY,
                "data": {"seq_len": 32},
                "train": {"batch_size": 4, "max_steps": max_steps, "warmup_steps": 2, "lr": 3e-3,
                          "min_lr": 3e-4, "eval_every": 6, "eval_batches": 2, "log_every": 6,
                          "checkpoint_every": 6, "seed": 0},
                "sample_tokens": 8, **pretrain}},
        },
    }


def test_pretrain_stage_trains_resumes_and_samples(tmp_path):
    pipeline.run(config(tmp_path))
    stage = tmp_path / "run" / "lm"
    manifest = json.loads((stage / "manifest.json").read_text())
    info = manifest["tasks"]["train"]["info"]
    assert info["steps"] == 12
    assert info["final_loss"] < info["first_loss"]
    assert info["best_val_loss"] is not None
    committed = sorted(f["path"] for f in manifest["tasks"]["train"]["files"])
    assert committed == ["model/model.json", "model/model.safetensors", "model/tokenizer.json",
                         "sample.txt", "train_log.jsonl"]
    Tokenizer.from_file(str(stage / "model" / "tokenizer.json"))
    assert (stage / "sample.txt").read_text().startswith("The")

    # A run killed after the step-6 checkpoint: the re-run resumes there, and on CPU ends
    # with the very same weights.
    weights = (stage / "model" / "model.safetensors").read_bytes()
    manifest.update(complete=False, tasks={})
    (stage / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(stage / "model")
    checkpoints = sorted((stage / "train" / "checkpoints").glob("step-*"))
    assert [c.name for c in checkpoints] == ["step-00000006", "step-00000012"]
    shutil.rmtree(checkpoints[-1])
    [*_, again] = pipeline.run(config(tmp_path))
    assert again.status == "resumed"
    steps = [json.loads(line)["step"] for line in (stage / "train" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13)) + list(range(7, 13))
    assert (stage / "model" / "model.safetensors").read_bytes() == weights


def test_bad_training_key_is_a_config_error():
    with pytest.raises(ConfigError, match=r"stage 'lm'.*unknown key 'n_layer'"):
        config_from_dict({"name": "p", "stages": {
            "tok": {"kind": "filter"},
            "lm": {"kind": "pretrain", "inputs": ["tok"], "params": {"model": {"n_layer": 2}}}}},
            stage_class_for)
