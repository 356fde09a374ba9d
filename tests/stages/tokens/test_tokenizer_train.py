"""train_tokenizer: exact round trips on varied Unicode, special tokens, the deterministic
sample (independent of sharding and of repeated training), the report, config errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

import pipeline
from pipeline.config import ConfigError
from stages.tokens.train_tokenizer import (
    BOS,
    CHAT_TOKENS,
    EOS,
    PAD,
    choose_buckets,
)
from tests.stages.tokens.conftest import EDGE_TEXTS, documents, fixture_texts, pipeline_config, write_corpus


def train(tmp: Path, name: str, shard_size: int = 40, **params) -> Path:
    corpus = write_corpus(tmp / "corpus")
    run_dir = tmp / name
    pipeline.run(pipeline_config(corpus, run_dir, shard_size=shard_size, tokenizer=params))
    return run_dir / "tokenizer" / "tokenizer"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return train(tmp_path_factory.mktemp("train"), "run")


@pytest.mark.parametrize("pattern", ["gpt4", "gpt4o"])
def test_round_trip_is_exact_on_every_language_and_edge_case(tmp_path, trained, pattern):
    folder = trained if pattern == "gpt4" else train(tmp_path, "o200k", split_pattern=pattern)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.encode_special_tokens = True
    texts = [*fixture_texts().values(), *EDGE_TEXTS]
    for text in texts:
        ids = tokenizer.encode(text).ids
        assert tokenizer.decode(ids, skip_special_tokens=False) == text
    # Compression is real: fewer tokens than UTF-8 bytes on every language.
    for lang, text in fixture_texts().items():
        assert len(tokenizer.encode(text).ids) < len(text.encode()) * 0.8, lang


def test_transformers_loads_it_and_round_trips(trained):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_file=str(trained / "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(str(trained))
    assert (auto.bos_token, auto.eos_token, auto.pad_token) == (BOS, EOS, PAD)
    assert (auto.bos_token_id, auto.eos_token_id, auto.pad_token_id) == (0, 1, 2)
    assert auto.all_special_tokens == [BOS, EOS, PAD, *CHAT_TOKENS]
    special_map = json.loads((trained / "special_tokens_map.json").read_text())
    assert sorted(special_map) == ["additional_special_tokens", "bos_token", "eos_token", "pad_token"]
    for text in [*fixture_texts().values(), *EDGE_TEXTS[:5]]:
        assert fast.decode(fast.encode(text)) == text
        assert auto.decode(auto.encode(text)) == text


def test_special_tokens_have_fixed_ids_and_never_come_from_plain_text(trained):
    tokenizer = Tokenizer.from_file(str(trained / "tokenizer.json"))
    specials = [BOS, EOS, PAD, *CHAT_TOKENS]
    assert [tokenizer.token_to_id(t) for t in specials] == list(range(len(specials)))
    tokenizer.encode_special_tokens = True
    spelled = EDGE_TEXTS[6]
    ids = tokenizer.encode(spelled).ids
    assert min(ids) >= len(specials)
    assert tokenizer.decode(ids) == spelled
    for doc in documents():
        assert min(tokenizer.encode(doc["text"]).ids, default=len(specials)) >= len(specials)


def test_vocab_size_and_report(trained):
    tokenizer = Tokenizer.from_file(str(trained / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == 600
    report = json.loads((trained / "train_report.json").read_text())
    sample, heldout, vocab = report["sample"], report["heldout"], report["vocab"]
    total = sum(len(d["text"].encode()) for d in documents())
    assert sample["corpus_docs"] == len(documents())
    assert sample["corpus_bytes"] == total
    # Held-out docs are never trained on: the two bucket ranges do not overlap.
    assert sample["hash_buckets"][1] <= heldout["hash_buckets"][0]
    assert sample["docs"] + heldout["docs"] <= sample["corpus_docs"]
    assert heldout["bytes"] >= 4000
    assert heldout["bytes_per_token"] == pytest.approx(heldout["bytes"] / heldout["tokens"], abs=1e-3)
    assert 1.5 < heldout["bytes_per_token"] < 6
    assert vocab["size"] == 600 and vocab["merges"] == 600 - 256 - 7
    assert sum(vocab["token_bytes_histogram"].values()) == 600 - 7
    assert vocab["token_bytes_histogram"]["1"] == 256
    assert vocab["special_tokens"][EOS] == 1
    counts = json.loads((trained.parents[1] / "tokenizer" / "manifest.json").read_text())[
        "tasks"]["tokenizer"]["counts"]
    assert counts["kept"] == sample["docs"]
    assert counts["dropped"]["tokenizer:heldout"] == heldout["docs"]
    assert counts["in"] == counts["kept"] + sum(counts["dropped"].values())


def test_training_is_deterministic_and_independent_of_sharding(tmp_path, trained):
    again = train(tmp_path, "again")
    resharded = train(tmp_path, "resharded", shard_size=7)
    reference = (trained / "tokenizer.json").read_bytes()
    assert (again / "tokenizer.json").read_bytes() == reference
    assert (resharded / "tokenizer.json").read_bytes() == reference
    # A different seed draws a different sample, hence (here) a different tokenizer.
    reseeded = train(tmp_path, "reseeded", seed=1)
    assert (reseeded / "tokenizer.json").read_bytes() != reference


def test_sample_size_bounds_the_training_text(tmp_path):
    folder = train(tmp_path, "small", sample_bytes=10_000)
    sample = json.loads((folder / "train_report.json").read_text())["sample"]
    assert sample["bytes"] >= 10_000
    assert sample["bytes"] < 10_000 + max(len(d["text"].encode()) for d in documents()) * 3
    assert sample["docs"] < len(documents()) / 2


def test_choose_buckets_takes_heldout_from_the_top_and_sample_from_the_bottom():
    histogram = np.array([5, 0, 5, 5, 5, 5, 5, 5])
    assert choose_buckets(histogram, sample_bytes=6, heldout_bytes=10) == (3, 6)
    assert choose_buckets(histogram, sample_bytes=10**9, heldout_bytes=1) == (7, 7)
    assert choose_buckets(histogram, sample_bytes=1, heldout_bytes=0) == (1, 8)


def test_too_small_a_vocab_is_a_config_error_naming_the_key(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    config = pipeline_config(corpus, tmp_path / "run", tokenizer={"vocab_size": 260})
    with pytest.raises(ConfigError, match="tokenizer.*vocab_size 260"):
        pipeline.run(config)
