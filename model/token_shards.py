"""Token shards: a versioned binary file of token ids plus a document index.

One shard holds the token ids of whole documents, back to back, and where each document
starts. The pipeline's tokenize stage writes shards with ``TokenShardWriter``; the trainer
reads them with ``TokenShard`` through ``numpy.memmap``, so nothing is copied into memory.

Byte layout (version 1, every integer little-endian)::

    offset  size  field
         0     8  magic            b"LMFTOKS\\0"
         8     4  version          uint32, 1
        12     4  token_bytes      uint32, bytes per token: 2 (uint16) or 4 (uint32)
        16     8  token_count      uint64, N
        24     8  doc_count        uint64, D
        32     8  vocab_size       uint64
        40    32  tokenizer_sha256 raw sha256 digest of the tokenizer.json bytes (zeros: none)
        72    56  reserved         zeros
       128  N*token_bytes          tokens
         .     0-7                 zero padding up to a multiple of 8
         .  (D+1)*8               document offsets, uint64: doc i is tokens[off[i]:off[i+1]];
                                   off[0] == 0 and off[D] == N

Tokens are uint16 when ``vocab_size <= 65536`` (ids 0..65535 fit), else uint32. The file size
is fully determined by the header, so truncation or a wrong count is detected on open.

Opening a shard checks everything but the token values: the header (magic, version, a
token width that matches ``vocab_size``, reserved bytes and padding zero), the file size
it implies, and the whole document index (starts at 0, never decreases, ends at the token
count, so every document lies inside the file); a failure is a ``TokenShardError`` whose
message names the file and what is wrong. That costs a read of the index, 8 bytes per
document. Token ids below ``vocab_size`` are a separate, full pass over the tokens,
``check_token_ids`` (``scan_token_ids`` for the numbers), which the trainer runs once when
its data loads and ``lmforge inspect-shards`` reports; the header records no maximum id
because the pass is what catches a corrupted token. Measured on a 1 GiB uint16 shard of
524k documents: the index check about 10 ms, the id pass 0.16-0.2 s from the page cache
(5-6 GiB/s), 0.5-3 s read cold from a VM disk.

Reading one without lmforge, numpy alone::

    header = np.memmap(path, dtype="<u8", mode="r", shape=(5,))  # magic, version|width, N, D, vocab
    width, n, d = int(header[1]) >> 32, int(header[2]), int(header[3])
    tokens = np.memmap(path, dtype=f"<u{width}", mode="r", offset=128, shape=(n,))
    offsets = np.memmap(path, dtype="<u8", mode="r", offset=128 + (n * width + 7) // 8 * 8, shape=(d + 1,))

Writing is streaming and memory-bounded: tokens go straight to a temp file, the document
offsets to a second temp file, and ``close`` appends the offsets, fills in the header,
fsyncs and renames into place (atomic: a reader never sees a half-written shard). The same
documents in the same order give a byte-identical file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from model.files import fsync

MAGIC = b"LMFTOKS\x00"
VERSION = 1
HEADER_SIZE = 128
_HEADER = struct.Struct("<8sIIQQQ32s")  # 72 bytes; the rest of the 128 are reserved zeros
_DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}


class TokenShardError(ValueError):
    """A token shard that cannot be read as the format says; the message names the file."""


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id in [0, vocab_size) fits in 16 bits, else uint32."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if vocab_size > 2**32:
        raise ValueError(f"vocab_size {vocab_size} does not fit in uint32 token ids")
    return _DTYPES[2] if vocab_size <= 2**16 else _DTYPES[4]


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file (used as the tokenizer hash: sha256 of tokenizer.json)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pad8(n: int) -> int:
    return (8 - n % 8) % 8


class TokenShardWriter:
    """Stream documents' token arrays into one shard file.

    Use as a context manager; leaving the block with an exception removes the temp files
    and leaves no shard behind.

    Args:
        path: final file name; nothing exists there until ``close`` succeeds.
        vocab_size: ids must lie in [0, vocab_size); also decides uint16 vs uint32.
        tokenizer_sha256: hex sha256 of the tokenizer.json the ids come from, or None.
    """

    def __init__(self, path: str | os.PathLike, vocab_size: int, tokenizer_sha256: str | None = None) -> None:
        self.path = Path(path)
        self.vocab_size = vocab_size
        self.dtype = token_dtype(vocab_size)
        self.tokenizer_digest = bytes.fromhex(tokenizer_sha256) if tokenizer_sha256 else bytes(32)
        if len(self.tokenizer_digest) != 32:
            raise ValueError(f"tokenizer_sha256 must be 64 hex characters, got {tokenizer_sha256!r}")
        self.token_count = 0
        self.doc_count = 0
        self._tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self._tmp_offsets = self.path.with_name(f".{self.path.name}.offsets.tmp-{os.getpid()}")
        self._tokens = open(self._tmp, "wb")
        self._tokens.write(bytes(HEADER_SIZE))  # filled in by close()
        self._offsets = open(self._tmp_offsets, "wb")
        self._offsets.write(np.zeros(1, dtype="<u8").tobytes())
        self._closed = False

    def add_document(self, tokens: Iterable[int] | np.ndarray) -> None:
        """Append one document's token ids."""
        ids = np.asarray(tokens)
        if ids.ndim != 1:
            raise ValueError(f"a document must be a 1-D array of token ids, got shape {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"token id out of range [0, {self.vocab_size}) in document {self.doc_count} "
                             f"for {self.path}: min {ids.min()}, max {ids.max()}")
        self._tokens.write(ids.astype(self.dtype, copy=False).tobytes())
        self.token_count += ids.size
        self.doc_count += 1
        self._offsets.write(np.array([self.token_count], dtype="<u8").tobytes())

    def close(self) -> Path:
        """Finish the file and move it into place; returns its path."""
        if self._closed:
            return self.path
        self._tokens.write(bytes(_pad8(self.token_count * self.dtype.itemsize)))
        self._offsets.close()
        with open(self._tmp_offsets, "rb") as offsets:
            shutil.copyfileobj(offsets, self._tokens, 1 << 20)
        os.unlink(self._tmp_offsets)
        self._tokens.seek(0)
        self._tokens.write(_HEADER.pack(MAGIC, VERSION, self.dtype.itemsize, self.token_count,
                                        self.doc_count, self.vocab_size, self.tokenizer_digest))
        self._tokens.flush()
        os.fsync(self._tokens.fileno())
        self._tokens.close()
        os.replace(self._tmp, self.path)
        fsync(self.path.parent)
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop everything written so far."""
        for f in (self._tokens, self._offsets):
            f.close()
        for p in (self._tmp, self._tmp_offsets):
            p.unlink(missing_ok=True)
        self._closed = True

    def __enter__(self) -> TokenShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


_INDEX_CHUNK = 1 << 20  # offsets compared per step when an index is checked: bounded memory
_SCAN_CHUNK = 1 << 24  # tokens per step of the id scan (32 MiB of uint16)


@dataclasses.dataclass(frozen=True)
class TokenIdScan:
    """What one pass over a shard's tokens found."""

    max_id: int | None  # None: the shard has no tokens
    out_of_range: int  # how many ids are >= the header's vocab_size
    first_out_of_range: int | None  # token position of the first of them


class TokenShard:
    """A shard opened for reading: header fields, ``tokens`` and ``doc_offsets`` as memmaps.

    Opening checks the header, the file size and the whole document index (see the module
    docstring); token ids are checked by ``check_token_ids``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        size = self.path.stat().st_size
        if size < HEADER_SIZE:
            raise TokenShardError(f"{self.path}: {size} bytes is shorter than the {HEADER_SIZE}-byte header (truncated?)")
        with open(self.path, "rb") as f:
            header = f.read(HEADER_SIZE)
        magic, version, token_bytes, n_tokens, n_docs, vocab_size, digest = _HEADER.unpack_from(header)
        if magic != MAGIC:
            raise TokenShardError(f"{self.path}: not a token shard (magic {magic!r}, expected {MAGIC!r})")
        if version != VERSION:
            raise TokenShardError(f"{self.path}: token shard version {version}, this reader knows {VERSION}")
        if token_bytes not in _DTYPES:
            raise TokenShardError(f"{self.path}: token width {token_bytes} bytes; expected 2 (uint16) or 4 (uint32)")
        if not 0 < vocab_size <= 2**32:
            raise TokenShardError(f"{self.path}: vocab_size {vocab_size} in the header is outside 1..2**32 (corrupted)")
        if _DTYPES[token_bytes] != token_dtype(vocab_size):
            raise TokenShardError(f"{self.path}: {token_bytes}-byte tokens do not match vocab_size {vocab_size}")
        if any(header[_HEADER.size:]):
            raise TokenShardError(f"{self.path}: reserved header bytes {_HEADER.size}..{HEADER_SIZE - 1} are not "
                                  "zero (corrupted)")
        tokens_end = HEADER_SIZE + n_tokens * token_bytes
        offsets_start = tokens_end + _pad8(n_tokens * token_bytes)
        expected = offsets_start + (n_docs + 1) * 8
        if size != expected:
            raise TokenShardError(f"{self.path}: file is {size} bytes but the header ({n_tokens} tokens, "
                                  f"{n_docs} documents) implies {expected} (truncated or corrupted)")
        with open(self.path, "rb") as f:
            f.seek(tokens_end)
            if any(f.read(offsets_start - tokens_end)):
                raise TokenShardError(f"{self.path}: padding bytes {tokens_end}..{offsets_start - 1} between the "
                                      "tokens and the document index are not zero (corrupted)")
        self.version = version
        self.dtype = _DTYPES[token_bytes]
        self.token_count = n_tokens
        self.doc_count = n_docs
        self.vocab_size = vocab_size
        self.tokenizer_sha256 = digest.hex() if any(digest) else None
        # np.memmap refuses zero-length maps, so an empty shard gets an empty array instead.
        self.tokens = (np.memmap(self.path, dtype=self.dtype, mode="r", offset=HEADER_SIZE, shape=(n_tokens,))
                       if n_tokens else np.zeros(0, dtype=self.dtype))
        self.doc_offsets = np.memmap(self.path, dtype="<u8", mode="r", offset=offsets_start, shape=(n_docs + 1,))
        self._check_index()
        self._scan: TokenIdScan | None = None

    def _check_index(self) -> None:
        """Offsets start at 0, never decrease and end at the token count, hence every document
        lies inside the tokens; checked in chunks, so memory stays bounded on any index."""
        offsets = self.doc_offsets
        if offsets[0] != 0:
            raise TokenShardError(f"{self.path}: document index starts at {int(offsets[0])}, not 0 (corrupted)")
        if offsets[-1] != self.token_count:
            raise TokenShardError(f"{self.path}: document index ends at {int(offsets[-1])}, not at the token count "
                                  f"{self.token_count} (corrupted)")
        for start in range(0, self.doc_count, _INDEX_CHUNK):
            chunk = np.asarray(offsets[start:start + _INDEX_CHUNK + 1])  # one shared with the next chunk
            backwards = np.flatnonzero(chunk[1:] < chunk[:-1])
            if backwards.size:
                i = start + int(backwards[0])
                raise TokenShardError(f"{self.path}: document index runs backwards at document {i} "
                                      f"(offsets {int(offsets[i])} then {int(offsets[i + 1])}; corrupted)")

    def scan_token_ids(self) -> TokenIdScan:
        """The largest id and the ids >= ``vocab_size``, from one pass over the tokens in
        chunks (memory: one chunk); kept, so a second call is free."""
        if self._scan is None:
            max_id, out_of_range, first = None, 0, None
            for start in range(0, self.token_count, _SCAN_CHUNK):
                chunk = self.tokens[start:start + _SCAN_CHUNK]
                top = int(chunk.max())
                max_id = top if max_id is None else max(max_id, top)
                if top >= self.vocab_size:  # only a bad chunk is searched for where
                    where = np.flatnonzero(chunk >= self.vocab_size)
                    out_of_range += where.size
                    first = start + int(where[0]) if first is None else first
            self._scan = TokenIdScan(max_id, out_of_range, first)
        return self._scan

    def token_id_problem(self) -> str | None:
        """What is wrong with the ids (``scan_token_ids``), naming the file, or None."""
        scan = self.scan_token_ids()
        if not scan.out_of_range:
            return None
        doc = int(np.searchsorted(self.doc_offsets, scan.first_out_of_range, side="right")) - 1
        return (f"{self.path}: {scan.out_of_range:,} token ids >= vocab_size {self.vocab_size:,} (largest "
                f"{scan.max_id:,}; the first at token {scan.first_out_of_range:,}, in document {doc}): "
                "corrupted, or written with another tokenizer")

    def check_token_ids(self) -> None:
        """Raise ``TokenShardError`` unless every id is below the header's ``vocab_size``."""
        if np.iinfo(self.dtype).max < self.vocab_size:
            return  # every id the width can hold is in the vocabulary
        problem = self.token_id_problem()
        if problem:
            raise TokenShardError(problem)

    def __len__(self) -> int:
        return self.token_count

    def document(self, i: int) -> np.ndarray:
        """Token ids of document i (a view into the memmap)."""
        if not 0 <= i < self.doc_count:
            raise IndexError(f"{self.path}: document {i} out of range (0..{self.doc_count - 1})")
        return self.tokens[int(self.doc_offsets[i]):int(self.doc_offsets[i + 1])]


def write_token_shard(path: str | os.PathLike, documents: Iterable[Iterable[int]], vocab_size: int,
                      tokenizer_sha256: str | None = None) -> Path:
    """Write every document of ``documents`` into one shard at ``path``."""
    with TokenShardWriter(path, vocab_size, tokenizer_sha256) as writer:
        for doc in documents:
            writer.add_document(doc)
    return writer.path
