"""`lmforge inspect-shards` on damaged shards: ids outside the vocabulary reported, a bad index refused."""

from __future__ import annotations

import argparse
import struct

import numpy as np
import pytest

from model import cli
from model.inspect_shards import inspect_shards, shard_report
from model.token_shards import HEADER_SIZE, TokenShardError, write_token_shard


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def poke(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def shard_line(report: str, name: str) -> list[str]:
    return next(line for line in report.splitlines() if line.startswith(name)).split()


@pytest.fixture
def shards(tmp_path):
    """train-00000.bin (clean) and train-00001.bin whose token 7 is 900, beyond its vocab of 500."""
    rng = np.random.default_rng(0)
    for i in range(2):
        write_token_shard(tmp_path / f"train-{i:05d}.bin", [rng.integers(0, 400, n) for n in (4, 10, 6)], 500)
    poke(tmp_path / "train-00001.bin", HEADER_SIZE + 2 * 7, struct.pack("<H", 900))
    return tmp_path


def test_ids_outside_the_vocabulary_are_reported_and_the_command_ends_as_bad_input(shards, capsys):
    bad = shards / "train-00001.bin"
    report, problems = shard_report(shards)
    assert problems == [f"{bad}: 1 token ids >= vocab_size 500 (largest 900; the first at token 7, in document 1): "
                        "corrupted, or written with another tokenizer"]
    assert f"ERROR: {problems[0]}" in report.splitlines()
    # Columns: name, ver, dtype, tokens, docs, vocab, max id, tokenizer.
    assert shard_line(report, "train-00001.bin")[5:7] == ["500", "900"]
    assert int(shard_line(report, "train-00000.bin")[6]) < 400
    assert inspect_shards(shards) == report

    with pytest.raises(cli.BAD_INPUT) as info:
        run_cli(["inspect-shards", str(shards)])
    assert str(info.value) == problems[0]
    assert capsys.readouterr().out.strip() == report  # the report is printed first, in full
    assert run_cli(["inspect-shards", str(shards / "train-00000.bin")]) == 0


def test_a_huge_id_in_a_uint32_shard_is_reported_without_a_histogram_that_size(tmp_path):
    path = write_token_shard(tmp_path / "val-00000.bin", [[1, 2, 70_000], [3]], vocab_size=70_001)
    poke(path, HEADER_SIZE + 4 * 1, struct.pack("<I", 2**32 - 1))
    report, problems = shard_report(path)
    assert shard_line(report, "val-00000.bin")[6] == "4,294,967,295"
    assert "largest 4,294,967,295; the first at token 1, in document 0" in problems[0]
    assert "3 of 70,001 ids seen" in report  # the bad id is left out of the histogram


def test_an_index_that_runs_backwards_is_refused_not_shown_as_a_negative_length(shards):
    # Offsets of train-00000.bin: [0, 4, 14, 20] after 20 uint16 tokens (40 bytes, no padding).
    path = shards / "train-00000.bin"
    poke(path, HEADER_SIZE + 40 + 8 * 1, struct.pack("<Q", 17))
    with pytest.raises(TokenShardError, match=f"^{path}: document index runs backwards at document 1 "
                                              r"\(offsets 17 then 14"):
        inspect_shards(shards)
