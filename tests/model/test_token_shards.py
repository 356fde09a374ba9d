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


def set_offset(path, index: int, value: int) -> None:
    """Overwrite document offset ``index`` of a shard written by ``documents``."""
    shard = TokenShard(path)
    at = HEADER_SIZE + (shard.token_count * shard.dtype.itemsize + 7) // 8 * 8 + 8 * index
    del shard
    corrupt(path, at, struct.pack("<Q", value))


@pytest.mark.parametrize("damage, message", [
    # documents(1000) has offsets [0, 5, 5, 22, 23, 323]; the file size stays right.
    (lambda p: set_offset(p, 2, 30), r"runs backwards at document 2 \(offsets 30 then 22"),
    (lambda p: set_offset(p, 3, 2**63), r"runs backwards at document 3 \(offsets 9223372036854775808 then 23"),
    (lambda p: set_offset(p, 0, 1), "starts at 1, not 0"),
    (lambda p: set_offset(p, 5, 322), "ends at 322, not at the token count 323"),
    (lambda p: corrupt(p, 32, struct.pack("<Q", 0)), "vocab_size 0 in the header"),
    (lambda p: corrupt(p, 32, struct.pack("<Q", 2**40)), "vocab_size 1099511627776 in the header"),
    (lambda p: corrupt(p, 100, b"\x01"), "reserved header bytes 72..127"),
    (lambda p: corrupt(p, HEADER_SIZE + 646, b"\x07"), "padding bytes 774..775"),
])
def test_the_whole_index_and_header_are_checked_on_open(tmp_path, damage, message):
    path = write_token_shard(tmp_path / "train-00003.bin", documents(1000), 1000)
    damage(path)
    with pytest.raises(TokenShardError, match=message) as info:
        TokenShard(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_an_index_running_backwards_across_a_chunk_boundary_is_found(tmp_path, monkeypatch):
    import model.token_shards as token_shards

    monkeypatch.setattr(token_shards, "_INDEX_CHUNK", 2)  # offsets read in chunks [0..2], [2..4], [4..5]
    path = write_token_shard(tmp_path / "s.bin", documents(1000), 1000)
    assert TokenShard(path).doc_count == 5
    set_offset(path, 2, 23)  # 0, 5, 23, 22: the fall is between offsets 2 and 3, across a chunk edge
    with pytest.raises(TokenShardError, match="runs backwards at document 2"):
        TokenShard(path)


def test_ids_outside_the_vocabulary_are_counted_and_located(tmp_path, monkeypatch):
    import model.token_shards as token_shards

    monkeypatch.setattr(token_shards, "_SCAN_CHUNK", 16)  # several chunks, the bad ids in two of them
    path = write_token_shard(tmp_path / "train-00001.bin", documents(1000), 1000)
    good = TokenShard(path)
    assert good.scan_token_ids() == token_shards.TokenIdScan(int(good.tokens.max()), 0, None)
    good.check_token_ids()
    del good
    corrupt(path, HEADER_SIZE + 2 * 20, struct.pack("<H", 1000))  # token 20 is in document 2 (tokens 5..21)
    corrupt(path, HEADER_SIZE + 2 * 300, struct.pack("<H", 65535))
    shard = TokenShard(path)  # the reader opens it: ids are a separate check
    assert shard.scan_token_ids() == token_shards.TokenIdScan(65535, 2, 20)
    with pytest.raises(TokenShardError) as info:
        shard.check_token_ids()
    assert str(info.value) == (f"{path}: 2 token ids >= vocab_size 1,000 (largest 65,535; the first at token 20, "
                               "in document 2): corrupted, or written with another tokenizer")


def test_a_width_that_holds_only_vocabulary_ids_needs_no_scan(tmp_path):
    shard = TokenShard(write_token_shard(tmp_path / "s.bin", [[0, 65535]], vocab_size=65536))
    shard.check_token_ids()
    assert shard._scan is None


def test_empty_shard_opens_and_has_no_ids(tmp_path):
    shard = TokenShard(write_token_shard(tmp_path / "empty.bin", [], vocab_size=10))
    assert (shard.token_count, shard.doc_count, shard.scan_token_ids().max_id) == (0, 0, None)
    shard.check_token_ids()
