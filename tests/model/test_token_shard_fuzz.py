"""Fuzz: 500 seeded mutations of a small valid token shard (byte flips, truncations, insertions),
each opened by the reader and run through inspect-shards' function. Each must succeed or raise
``TokenShardError`` with one line that names the file: no other exception, no hang."""

from __future__ import annotations

import time

import numpy as np
import pytest

from model.inspect_shards import shard_report
from model.token_shards import HEADER_SIZE, TokenShard, TokenShardError, write_token_shard

CASES = 500
# Every way a damaged shard may be refused; a message matching none of them fails the test.
REFUSALS = ("shorter than the 128-byte header", "not a token shard", "token shard version", "token width",
            "in the header is outside", "do not match vocab_size", "reserved header bytes", "implies",
            "padding bytes", "document index starts at", "document index ends at", "document index runs backwards")


def valid_shard(path, vocab_size: int, seed: int) -> bytes:
    """About 1 KB: 40 short documents (some empty), so the index is a good share of the file."""
    rng = np.random.default_rng(seed)
    docs = [rng.integers(0, vocab_size, rng.integers(0, 12)) for _ in range(40)]
    return write_token_shard(path, docs, vocab_size, tokenizer_sha256=None).read_bytes()


def mutate(data: bytes, rng: np.random.Generator, index_start: int) -> tuple[str, bytes]:
    """One random damage; byte flips aim at the header, the index or anywhere, a third each."""
    raw = bytearray(data)
    kind = ["flip", "flip", "flips", "truncate", "insert"][rng.integers(5)]
    if kind in ("flip", "flips"):
        for _ in range(1 if kind == "flip" else rng.integers(2, 9)):
            region = [(0, HEADER_SIZE), (index_start, len(raw)), (0, len(raw))][rng.integers(3)]
            raw[rng.integers(*region)] ^= int(rng.integers(1, 256))
    elif kind == "truncate":
        del raw[rng.integers(0, len(raw)):]
    else:
        at = rng.integers(0, len(raw) + 1)
        raw[at:at] = rng.integers(0, 256, rng.integers(1, 17)).astype(np.uint8).tobytes()
    return kind, bytes(raw)


@pytest.mark.timeout(60)
def test_damaged_shards_end_in_success_or_a_one_line_error_naming_the_file(tmp_path):
    # Deep enough that inspect-shards' tokenizer search (a few parent folders) stays in tmp_path.
    folder = tmp_path / "a" / "b" / "c" / "d"
    folder.mkdir(parents=True)
    originals = {}
    for vocab_size in (300, 70_000):  # uint16 and uint32 tokens
        data = valid_shard(tmp_path / f"{vocab_size}.bin", vocab_size, seed=vocab_size)
        shard = TokenShard(tmp_path / f"{vocab_size}.bin")
        originals[vocab_size] = (data, shard.doc_offsets.offset)
    outcomes: dict[str, int] = {}
    slowest = 0.0
    for seed in range(CASES):
        rng = np.random.default_rng(seed)
        data, index_start = originals[(300, 70_000)[seed % 2]]
        kind, damaged = mutate(data, rng, index_start)
        path = folder / "train-00000.bin"
        path.write_bytes(damaged)
        started = time.perf_counter()
        try:
            report, problems = shard_report(path)
            shard = TokenShard(path)
            assert sum(len(shard.document(i)) for i in range(shard.doc_count)) == shard.token_count
            if problems:
                with pytest.raises(TokenShardError, match="token ids >= vocab_size"):
                    shard.check_token_ids()
            else:
                shard.check_token_ids()
            outcome = "ids out of range" if problems else "read"
            del shard
        except TokenShardError as error:
            message = str(error)
            assert message.startswith(f"{path}: ") and "\n" not in message, (seed, kind, message)
            outcome = next((r for r in REFUSALS if r in message), None)
            assert outcome is not None, f"seed {seed} ({kind}): unexpected refusal {message!r}"
        except Exception as error:  # noqa: BLE001 - anything else is the bug this test looks for
            pytest.fail(f"seed {seed} ({kind}): {type(error).__name__}: {error}")
        slowest = max(slowest, time.perf_counter() - started)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert sum(outcomes.values()) == CASES
    assert slowest < 2.0, f"slowest case took {slowest:.2f} s"
    # The mutations reach the checks: clean reads, bad ids, and refusals of header, size and index.
    for expected in ("read", "ids out of range", "not a token shard", "implies", "reserved header bytes",
                     "document index runs backwards"):
        assert outcomes.get(expected, 0) > 0, (expected, outcomes)
