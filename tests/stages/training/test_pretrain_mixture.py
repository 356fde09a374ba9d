"""pretrain with a data mixture: two tokenize inputs with weights, end to end on a tiny config."""

from __future__ import annotations

import json

import pytest

import pipeline
from pipeline.config import ConfigError, config_from_dict
from pipeline.report import build_report
from stages import stage_class_for

TINY = {"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "hidden_dim": 64, "max_seq_len": 32}


def config(tmp_path, mixture, tokenizers=("bpe", "bpe"), **data):
    return {
        "name": "mix",
        "run_dir": str(tmp_path / "run"),
        "stages": {
            "story": {"kind": "ingest", "params": {"paths": ["demo/corpus/verdict.jsonl"], "id_field": "id"},
                      "max_error_fraction": 0.1},
            "bible": {"kind": "ingest", "params": {"paths": ["demo/corpus/kjv-chapters.jsonl.gz"],
                                                   "id_field": "id"}},
            "bpe": {"kind": "train_tokenizer", "inputs": ["story", "bible"], "params": {"vocab_size": 300}},
            "bpe2": {"kind": "train_tokenizer", "inputs": ["story"], "params": {"vocab_size": 300}},
            "story_tokens": {"kind": "tokenize", "inputs": ["story", tokenizers[0]],
                             "params": {"val_fraction": 0.1}},
            "bible_tokens": {"kind": "tokenize", "inputs": ["bible", tokenizers[1]],
                             "params": {"val_fraction": 0.05}},
            "lm": {"kind": "pretrain", "inputs": ["story_tokens", "bible_tokens"], "params": {
                "model": TINY,
                "data": {"seq_len": 32, **data},
                "mixture": mixture,
                "train": {"batch_size": 4, "max_steps": 16, "warmup_steps": 2, "lr": 3e-3, "min_lr": 3e-4,
                          "eval_every": 8, "eval_batches": 2, "log_every": 4, "checkpoint_every": 8, "seed": 0},
                "sample_tokens": 4}},
        },
    }


def test_pretrain_trains_on_two_tokenize_inputs_by_weight_and_reports_the_mix(tmp_path):
    # The story is about 17k tokens (vocabulary 300): ~530 windows of 32 per epoch, so 0.02
    # epochs are 10 windows, used up by step 10 at a quarter of 4 rows per step.
    mixture = {"story_tokens": {"weight": 0.25, "max_epochs": 0.02}, "bible_tokens": 0.75}
    pipeline.run(config(tmp_path, mixture))
    stage = tmp_path / "run" / "lm"
    info = json.loads((stage / "manifest.json").read_text())["tasks"]["train"]["info"]
    assert info["steps"] == 16 and info["final_loss"] < info["first_loss"]
    mix = info["mixture"]
    story, bible = mix["story_tokens"], mix["bible_tokens"]
    assert story["tokens"] + bible["tokens"] == 16 * 4 * 32
    assert story["exhausted_at_tokens"] is not None and story["weight"] == 0.0 and bible["weight"] == 1.0
    assert story["epochs"] == pytest.approx(0.02, abs=0.002)
    assert story["target"] == 0.25 and bible["exhausted_at_tokens"] is None
    log = [json.loads(line) for line in (stage / "train_log.jsonl").read_text().splitlines()]
    shares = [r["mixture"]["story_tokens"]["share"] for r in log if "mixture" in r]
    assert len(shares) == 4 and shares[0] == pytest.approx(0.25, abs=0.07) and shares[-1] < shares[0]

    html = build_report(tmp_path / "run").read_text()
    assert "Data mixture" in html and "story_tokens" in html and "exhausted" in html


def test_mixture_keys_must_match_the_token_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"params.mixture: 'bibel_tokens' is not an input with token shards"):
        pipeline.run(config(tmp_path, {"story_tokens": 0.5, "bibel_tokens": 0.5}))
    with pytest.raises(ValueError, match=r"input 'bible_tokens' has token shards but no weight in params.mixture"):
        pipeline.run(config(tmp_path, {"story_tokens": 1}))
    with pytest.raises(ValueError, match=r"needs exactly one tokenize stage as input, or params.mixture"):
        pipeline.run(config(tmp_path, {}))


def test_sources_tokenized_with_different_tokenizers_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"mixture source 'bible_tokens' .*same tokenizer"):
        pipeline.run(config(tmp_path, {"story_tokens": 0.5, "bible_tokens": 0.5}, tokenizers=("bpe2", "bpe")))


def test_bad_mixture_params_are_config_errors_naming_the_key():
    def load(mixture, **data):
        stages = {"t": {"kind": "filter"},
                  "lm": {"kind": "pretrain", "inputs": ["t"], "params": {"mixture": mixture, "data": data}}}
        config_from_dict({"name": "p", "stages": stages}, stage_class_for)

    with pytest.raises(ConfigError, match=r"stage 'lm'.*mixture.web.weight"):
        load({"web": -0.5})
    with pytest.raises(ConfigError, match=r"stage 'lm'.*mixture.web.max_epoch"):
        load({"web": {"weight": 1, "max_epoch": 2}})
    with pytest.raises(ConfigError, match=r"stage 'lm'.*on_exhausted must be 'drop' or 'stop'"):
        load({"web": 1}, on_exhausted="wrap")
