"""Shared by the post-training stage tests: a tiny model, its training settings, and the
upstream DAG (ingest -> tokenizer -> token shards -> pretrain) that sft and dpo start from."""

from __future__ import annotations

DATA = "tests/data/sft_preference_240.json"
TINY = {"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "hidden_dim": 64, "max_seq_len": 128}
TRAIN = {"batch_size": 4, "warmup_steps": 1, "lr": 3e-3, "min_lr": 3e-4, "eval_batches": 5, "log_every": 100,
         "checkpoint_every": 0, "seed": 0}


def pretrained_stages() -> dict:
    """Stages `ingest`, `bpe`, `tok` and `lm` (a 2-step pretrained model) on The Verdict."""
    return {
        "ingest": {"kind": "ingest", "params": {"paths": ["demo/corpus/verdict.jsonl"], "id_field": "id"},
                   "max_error_fraction": 0.1},
        "bpe": {"kind": "train_tokenizer", "inputs": ["ingest"], "params": {"vocab_size": 300}},
        "tok": {"kind": "tokenize", "inputs": ["ingest", "bpe"], "params": {"val_fraction": 0.1}},
        "lm": {"kind": "pretrain", "inputs": ["tok"], "params": {
            "model": TINY, "data": {"seq_len": 32}, "sample_tokens": 0,
            "train": {**TRAIN, "max_steps": 2, "eval_every": 0}}},
    }
