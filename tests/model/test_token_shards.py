"""Token shard format: round trip, determinism, dtype choice, and errors that name the file."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from model.token_shards import HEADER_SIZE, TokenShard, TokenShardError, TokenShardWriter, write_token_shard

DIGEST = "ab" * 32


def documents(vocab_size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab_size, size=n) for n in (5, 0, 17, 1, 300)]


def test_round_trip_header_and_documents(tmp_path):
    docs = documents(1000)
    path = write_token_shard(tmp_path / "train-00000.bin", docs, vocab_size=1000, tokenizer_sha256=DIGEST)
    shard = TokenShard(path)
    assert (shard.version, shard.vocab_size, shard.tokenizer_sha256) == (1, 1000, DIGEST)
    assert shard.dtype == np.uint16 and isinstance(shard.tokens, np.memmap)
    assert (shard.token_count, shard.doc_count) == (323, 5)
    for i, doc in enumerate(docs):
        assert shard.document(i).tolist() == doc.tolist()
    assert shard.tokens.tolist() == np.concatenate(docs).tolist()
    # Layout as documented: tokens right after the 128-byte header, offsets 8-aligned after them.
    raw = path.read_bytes()
    assert raw[:8] == b"LMFTOKS\x00"
    assert np.frombuffer(raw[HEADER_SIZE:HEADER_SIZE + 2 * 323], dtype="<u2").tolist() == shard.tokens.tolist()
    offsets_at = HEADER_SIZE + 646 + 2  # 646 bytes of tokens padded to 648
    assert np.frombuffer(raw[offsets_at:], dtype="<u8").tolist() == [0, 5, 5, 22, 23, 323]


def test_same_input_gives_identical_bytes_and_no_temp_files_remain(tmp_path):
    a = write_token_shard(tmp_path / "a.bin", documents(500), 500, DIGEST)
    b = write_token_shard(tmp_path / "b.bin", documents(500), 500, DIGEST)
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]


def test_vocab_above_65536_uses_uint32(tmp_path):
    docs = [np.array([0, 65535, 65536, 69999])]
    shard = TokenShard(write_token_shard(tmp_path / "big.bin", docs, vocab_size=70000))
    assert shard.dtype == np.uint32
    assert shard.tokens.tolist() == [0, 65535, 65536, 69999]
    assert TokenShard(write_token_shard(tmp_path / "edge.bin", [[65535]], vocab_size=65536)).dtype == np.uint16


def test_out_of_range_id_is_refused_and_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="out of range"):
        with TokenShardWriter(tmp_path / "x.bin", vocab_size=10) as writer:
            writer.add_document([1, 2, 3])
            writer.add_document([9, 10])
    assert list(tmp_path.iterdir()) == []


def corrupt(path, offset: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset:offset + len(data)] = data
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage, message", [
    (lambda p: corrupt(p, 0, b"NOTASHRD"), "not a token shard"),
    (lambda p: corrupt(p, 8, struct.pack("<I", 99)), "version 99"),
    (lambda p: corrupt(p, 12, struct.pack("<I", 3)), "token width 3"),
    (lambda p: corrupt(p, 12, struct.pack("<I", 4)), "do not match vocab_size"),
    (lambda p: p.write_bytes(p.read_bytes()[:-5]), "truncated"),
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "shorter than"),
    (lambda p: corrupt(p, 16, struct.pack("<Q", 9999)), "implies"),
    (lambda p: corrupt(p, 24, struct.pack("<Q", 2)), "implies"),
])
def test_damaged_shards_raise_errors_naming_the_file(tmp_path, damage, message):
    path = write_token_shard(tmp_path / "val-00007.bin", documents(1000), 1000)
    damage(path)
    with pytest.raises(TokenShardError, match=message) as info:
        TokenShard(path)
    assert "val-00007.bin" in str(info.value)


def test_readable_with_numpy_memmap_alone_as_documented(tmp_path):
    docs = documents(70000)
    path = write_token_shard(tmp_path / "s.bin", docs, vocab_size=70000)
    header = np.memmap(path, dtype="<u8", mode="r", shape=(5,))
    width, n, d = int(header[1]) >> 32, int(header[2]), int(header[3])
    tokens = np.memmap(path, dtype=f"<u{width}", mode="r", offset=128, shape=(n,))
    offsets = np.memmap(path, dtype="<u8", mode="r", offset=128 + (n * width + 7) // 8 * 8, shape=(d + 1,))
    assert (width, int(header[4])) == (4, 70000)
    assert [tokens[offsets[i]:offsets[i + 1]].tolist() for i in range(d)] == [doc.tolist() for doc in docs]
