"""`lmforge inspect-shards`: headers, counts, histogram, decoded sample; bad shards named."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

import pipeline
from model.token_shards import TokenShard
from model.cli import BAD_INPUT, register
from model.inspect_shards import inspect_shards
from tests.stages.tokens.conftest import documents, pipeline_config, write_corpus


@pytest.fixture(scope="module")
def stage_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("inspect")
    config = pipeline_config(write_corpus(tmp / "corpus"), tmp / "run",
                             tokenize={"tokens": {"val_fraction": 0.2}})
    pipeline.run(config)
    return tmp / "run" / "tokens"


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_report_lists_every_shard_with_its_header_and_the_split_totals(stage_dir):
    report = inspect_shards(stage_dir)
    files = sorted((stage_dir / "shards").glob("*.bin"))
    assert f"({len(files)} files)" in report
    for path in files:
        shard = TokenShard(path)
        line = next(l for l in report.splitlines() if l.startswith(f"shards/{path.name}"))
        assert line.split()[1:6] == ["1", "uint16", f"{shard.token_count:,}", f"{shard.doc_count:,}", "600"]
    for split in ("train", "val"):
        shards = [TokenShard(p) for p in files if p.name.startswith(split)]
        line = next(l for l in report.splitlines() if l.startswith(split + " "))
        assert line.split()[1:4] == [str(len(shards)), f"{sum(s.token_count for s in shards):,}",
                                     f"{sum(s.doc_count for s in shards):,}"]


def test_histogram_and_decoded_sample_use_the_tokenizer_found_by_hash(stage_dir):
    report = inspect_shards(stage_dir / "shards")
    total = sum(TokenShard(p).token_count for p in (stage_dir / "shards").glob("*.bin"))
    docs = len(documents())
    assert "token histogram (all tokens)" in report
    eos_share = float(re.search(r"<\|eos\|> \(id 1\): ([\d.]+)%", report).group(1))
    assert eos_share == pytest.approx(100 * docs / total, abs=0.01)
    first = TokenShard(sorted((stage_dir / "shards").glob("train-*.bin"))[0])
    text_start = next(d["text"] for d in documents() if d["text"])[:40]
    assert f"first document of {first.path.name}" in report
    assert text_start in report


def test_without_a_tokenizer_ids_are_shown(tmp_path, stage_dir):
    lone = tmp_path / "train-x.bin"
    source = sorted((stage_dir / "shards").glob("train-*.bin"))[0]
    lone.write_bytes(source.read_bytes())
    report = inspect_shards(lone)
    assert "no tokenizer found" in report
    assert str(TokenShard(lone).document(0).tolist()[:5])[:-1] in report


def test_cli_exit_codes_and_a_bad_shard_named_in_the_error(tmp_path, stage_dir, capsys):
    assert cli(["inspect-shards", str(stage_dir)]) == 0
    assert "token shards:" in capsys.readouterr().out
    bad = tmp_path / "shards"
    bad.mkdir()
    good = sorted((stage_dir / "shards").glob("train-*.bin"))[0]
    (bad / "train-good.bin").write_bytes(good.read_bytes())
    (bad / "train-cut.bin").write_bytes(good.read_bytes()[:-20])
    with pytest.raises(BAD_INPUT, match="train-cut.bin"):
        cli(["inspect-shards", str(bad)])
    with pytest.raises(BAD_INPUT, match="missing"):
        cli(["inspect-shards", str(tmp_path / "missing")])
