"""Tests for model/: the model, token shards, data, trainer, distributed runs, HF interop, CLI."""
