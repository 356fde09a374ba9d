"""tokenize: shards that decode back to the exact documents, EOS/BOS policy, the
deterministic split, shuffling, the uint32 path, bad shards, local == dask."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

import pipeline
from model.token_shards import TokenShard, TokenShardError, file_sha256
from pipeline.artifacts import read_doc_shard
from pipeline.stage import StageInput
from stages.tokens.tokenize import Tokenize, TokenizeParams
from tests.conftest import shard_bytes
from tests.stages.tokens.conftest import documents, pipeline_config, write_corpus

N_SPECIALS = 7
BOS_ID, EOS_ID = 0, 1
STAGES = {
    "tokens": {"val_fraction": 0.2},
    "bos": {"val_fraction": 0.2, "bos": True, "batch_size": 3},
    "shuffled": {"val_fraction": 0.2, "shuffle": True, "num_shards": 2},
}


def run(tmp: Path, name: str, shard_size: int = 40, executor: str = "local",
        stages: dict | None = None) -> Path:
    corpus = write_corpus(tmp / "corpus")
    run_dir = tmp / name
    config = pipeline_config(corpus, run_dir, shard_size=shard_size,
                             tokenize=STAGES if stages is None else stages)
    pipeline.run(config, executor=executor, workers=2)
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return run(tmp_path_factory.mktemp("tokenize"), "run")


def shards(stage_dir: Path, split: str) -> list[TokenShard]:
    return [TokenShard(p) for p in sorted((stage_dir / "shards").glob(f"{split}-*.bin"))]


def decoded(run_dir: Path, stage: str, split: str) -> list[list[int]]:
    return [s.document(i).tolist() for s in shards(run_dir / stage, split) for i in range(s.doc_count)]


def tokenizer_of(run_dir: Path) -> Tokenizer:
    return Tokenizer.from_file(str(run_dir / "tokenizer" / "tokenizer" / "tokenizer.json"))


def input_texts(run_dir: Path) -> list[str]:
    return [d.text for p in sorted((run_dir / "ingest" / "shards").glob("*.parquet"))
            for d in read_doc_shard(p)]


def test_shards_decode_to_the_exact_documents_with_eos_after_each(run_dir):
    tokenizer = tokenizer_of(run_dir)
    sha = file_sha256(run_dir / "tokenizer" / "tokenizer" / "tokenizer.json")
    for shard in shards(run_dir / "tokens", "train") + shards(run_dir / "tokens", "val"):
        assert shard.vocab_size == 600 and shard.dtype == np.uint16
        assert shard.tokenizer_sha256 == sha
    train, val = decoded(run_dir, "tokens", "train"), decoded(run_dir, "tokens", "val")
    texts = input_texts(run_dir)
    assert len(train) + len(val) == len(texts) == len(documents())
    for doc in train + val:
        assert doc[-1] == EOS_ID
        # The only special id is the EOS the stage adds: spelled specials stay text.
        assert min(doc[:-1], default=N_SPECIALS) >= N_SPECIALS
    got = sorted(tokenizer.decode(d[:-1], skip_special_tokens=False) for d in train + val)
    assert got == sorted(texts)
    # Without shuffle each split keeps the input order.
    in_order = [tokenizer.decode(d[:-1]) for d in train]
    assert in_order == [t for t in texts if t in set(in_order)]


def test_manifest_counts_match_the_shard_headers(run_dir):
    manifest = json.loads((run_dir / "tokens" / "manifest.json").read_text())
    tokens = {"train": 0, "val": 0}
    docs = {"train": 0, "val": 0}
    assert manifest["tasks"]["tokenizer"]["files"][0]["path"] == "shards/tokenizer.json"
    for name, task in manifest["tasks"].items():
        if name == "tokenizer":
            continue
        assert task["counts"]["in"] == task["counts"]["kept"]
        for split in tokens:
            tokens[split] += task["info"][split]["tokens"]
            docs[split] += task["info"][split]["docs"]
    for split in tokens:
        assert tokens[split] == sum(s.token_count for s in shards(run_dir / "tokens", split))
        assert docs[split] == sum(s.doc_count for s in shards(run_dir / "tokens", split))
    assert 0.1 < docs["val"] / (docs["val"] + docs["train"]) < 0.3


def test_bos_option_opens_every_document_and_batching_changes_nothing(run_dir):
    plain = decoded(run_dir, "tokens", "train")
    with_bos = decoded(run_dir, "bos", "train")
    assert with_bos == [[BOS_ID, *d] for d in plain]


def test_split_is_the_same_whatever_the_sharding(tmp_path, run_dir):
    other = run(tmp_path, "resharded", shard_size=7, stages={"tokens": STAGES["tokens"]})
    assert len(list((other / "tokens" / "shards").glob("train-*.bin"))) > len(
        list((run_dir / "tokens" / "shards").glob("train-*.bin")))
    for split in ("train", "val"):
        assert decoded(other, "tokens", split) == decoded(run_dir, "tokens", split)


def test_shuffle_mixes_input_shards_and_keeps_every_document(run_dir):
    for split in ("train", "val"):
        plain = decoded(run_dir, "tokens", split)
        mixed = decoded(run_dir, "shuffled", split)
        assert sorted(map(tuple, mixed)) == sorted(map(tuple, plain))
        assert mixed != plain
    # Each output shard holds documents from several input shards (languages).
    tokenizer = tokenizer_of(run_dir)
    origin = {d["text"]: d["id"].split("-")[0] for d in documents()}
    out = shards(run_dir / "shuffled", "train")
    assert len(out) == 2
    for shard in out:
        langs = {origin[tokenizer.decode(shard.document(i).tolist()[:-1])] for i in range(shard.doc_count)}
        assert len(langs) > 5
    # Sizes are balanced to within a couple of row groups.
    assert abs(out[0].doc_count - out[1].doc_count) < 100


def test_uint32_tokens_when_the_vocab_exceeds_65535(tmp_path, run_dir):
    tokenizer = tokenizer_of(run_dir)
    tokenizer.add_tokens([f"w{i:05d}x" for i in range(66_000)])
    big = tmp_path / "big" / "tokenizer.json"
    big.parent.mkdir()
    tokenizer.save(str(big))
    docs = StageInput("ingest", "ingest", run_dir / "ingest",
                      tuple(str(p) for p in sorted((run_dir / "ingest" / "shards").glob("*.parquet"))))
    stage = Tokenize("big", TokenizeParams(val_fraction=0.0), tmp_path / "big-tokens")
    tasks = stage.tasks([docs, StageInput("tok", "train_tokenizer", big.parent, (str(big),))])
    for task in tasks:
        stage.run_task(task)
    out = shards(tmp_path / "big-tokens", "train")
    assert all(s.dtype == np.uint32 and s.vocab_size == 66_000 + 600 for s in out)
    loaded = Tokenizer.from_file(str(big))
    texts = [loaded.decode(s.document(i).tolist()[:-1]) for s in out for i in range(s.doc_count)]
    assert texts == input_texts(run_dir)

    # Ids above 65,535 survive the round trip (uint16 would wrap them).
    doc = np.array([loaded.token_to_id("w65999x"), EOS_ID])
    assert doc[0] > 65_535
    from model.token_shards import write_token_shard

    path = write_token_shard(tmp_path / "one.bin", [doc], loaded.get_vocab_size())
    assert TokenShard(path).document(0).tolist() == doc.tolist()


def test_corrupted_or_truncated_shard_is_an_error_naming_the_file(tmp_path, run_dir):
    source = sorted((run_dir / "tokens" / "shards").glob("train-*.bin"))[0]
    data = source.read_bytes()
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(data[:-12])
    bad_magic = tmp_path / "bad-magic.bin"
    bad_magic.write_bytes(b"XXXXXXXX" + data[8:])
    bad_count = tmp_path / "bad-count.bin"
    bad_count.write_bytes(data[:16] + (10**6).to_bytes(8, "little") + data[24:])
    for path in (truncated, bad_magic, bad_count):
        with pytest.raises(TokenShardError, match=path.name):
            TokenShard(path)


def test_a_tokenize_stage_without_a_tokenizer_input_is_refused(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    config = pipeline_config(corpus, tmp_path / "run")
    config["stages"]["tokens"] = {"kind": "tokenize", "inputs": ["ingest"]}
    with pytest.raises(ValueError, match="stage 'tokens'.*tokenizer.json"):
        pipeline.run(config)


def test_num_shards_without_shuffle_is_a_config_error():
    with pytest.raises(ValueError, match="num_shards applies only with shuffle"):
        TokenizeParams(num_shards=4)


def test_local_and_dask_executors_write_identical_bytes(tmp_path, run_dir):
    dask_dir = run(tmp_path, "dask", executor="dask")
    for stage in ("tokens", "bos", "shuffled"):
        local = shard_bytes(run_dir / stage)
        assert local and shard_bytes(dask_dir / stage) == local, stage
    folder = Path("tokenizer") / "tokenizer"
    files = sorted(p.name for p in (run_dir / folder).iterdir())
    assert "tokenizer.json" in files and "train_report.json" in files
    for name in files:
        assert (dask_dir / folder / name).read_bytes() == (run_dir / folder / name).read_bytes(), name


def test_the_trainer_reads_the_shard_folder_as_it_is(run_dir):
    from model.data import ShardDataset, describe_shards

    folder = run_dir / "tokens" / "shards"
    described = describe_shards(folder)
    assert described["vocab_size"] == 600
    assert described["tokenizer"] == folder / "tokenizer.json"
    assert described["tokenizer_sha256"] == file_sha256(run_dir / "tokenizer" / "tokenizer" / "tokenizer.json")
    first = shards(run_dir / "tokens", "train")[0]
    data = ShardDataset(folder, "train", seq_len=16, batch_size=2, sampling="sequential")
    inputs, targets = data.batch(0)
    assert inputs[0].tolist() == first.tokens[:16].tolist()
    assert targets[0].tolist() == first.tokens[1:17].tolist()
    assert inputs[1].tolist() == first.tokens[16:32].tolist()
    val = ShardDataset(folder, "val", seq_len=16, batch_size=4, sampling="random")
    inputs, _ = val.batch(0)
    assert inputs.shape == (4, 16) and int(inputs.max()) < 600
