"""Words of texts, hashed, for every family that counts words in bulk (dedup, filters).

`normalize_texts` lowercases and folds every run of characters that are not letters, digits
or combining marks into one space (accents and non-Latin scripts are kept; scripts written
without spaces count as one word per run); `words_of` hashes each word of the normalized
texts with a position-weighted sum of its UTF-8 bytes (per-position 64-bit odd weights, mod
2^64) passed through the splitmix64 finalizer. Vectorized over Arrow buffers: no Python
object per word, and the same word hashes the same in any batch, on any machine. MinHash
(stages/dedup/minhash.py), exact dedup and the coherence filter all see these words.
It lives outside the families because stage families never import each other.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SPAN_BLOCK = 1 << 20  # bytes of words hashed at once (about 40 bytes of arrays per byte)
SLICE_BYTES = 4 << 20  # text per call of the stages' word hashers: MinHash signatures and
# exact fingerprints hold about 100 bytes per word of their input, so about 60 MB a slice

NON_WORD = r"[^\p{L}\p{N}\p{M}]+"

def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a bijective 64-bit mixer (uint64 in, uint64 out)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def normalize_texts(texts: pa.Array) -> pa.Array:
    """Lowercased texts in which `words_of` finds exactly the normalized words.

    ASCII documents (most of the web) take a byte-table path: Arrow's ASCII lowercase here,
    and `words_of` treats every ASCII byte but [a-z0-9] as a separator, which is what the
    Unicode regex would do on them, at a fraction of its cost. Only documents with
    non-ASCII characters pay for the Unicode lowercase and regex.
    """
    texts = texts.cast(pa.string()) if texts.type != pa.string() else texts
    ascii_mask = pc.string_is_ascii(texts).fill_null(True)
    if pc.all(ascii_mask).as_py() is not False:
        return pc.ascii_lower(texts)
    unicode_rows = np.flatnonzero(~ascii_mask.to_numpy(zero_copy_only=False))
    ascii_rows = np.flatnonzero(ascii_mask.to_numpy(zero_copy_only=False))
    folded = pc.replace_substring_regex(pc.utf8_lower(texts.take(unicode_rows)), NON_WORD, " ")
    merged = pa.concat_arrays([pc.ascii_lower(texts.take(ascii_rows)), folded])
    inverse = np.empty(len(texts), dtype=np.int64)
    inverse[np.concatenate([ascii_rows, unicode_rows])] = np.arange(len(texts))
    return merged.take(inverse)


_position_weights = np.empty(0, dtype=np.uint64)


def position_weights(length: int) -> np.ndarray:
    """Per-byte-position odd weights, a pure function of the position (cached, grown)."""
    global _position_weights
    if len(_position_weights) < length:
        size = max(length, 2 * len(_position_weights), 64)
        _position_weights = splitmix64(np.arange(size, dtype=np.uint64)) | np.uint64(1)
    return _position_weights


# ASCII bytes that are parts of words after normalization: a-z and 0-9. Bytes >= 0x80 are
# parts of words too: in a normalized text every non-word character is already a space.
_WORD_BYTE = np.zeros(256, dtype=bool)
_WORD_BYTE[ord("a"): ord("z") + 1] = True
_WORD_BYTE[ord("0"): ord("9") + 1] = True
_WORD_BYTE[0x80:] = True


def _string_buffers(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes, offsets rebased to 0) of an Arrow string array, without copying text."""
    offset_type = np.int64 if pa.types.is_large_string(strings.type) else np.int32
    n = len(strings)
    offsets = np.frombuffer(strings.buffers()[1], dtype=offset_type)[
        strings.offset: strings.offset + n + 1
    ].astype(np.int64)
    data_buffer = strings.buffers()[2]
    if data_buffer is None or n == 0:
        return np.empty(0, dtype=np.uint8), np.zeros(n + 1, dtype=np.int64)
    data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0]: offsets[-1]]
    return data, offsets - offsets[0]


def _span_hashes(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Hash of each non-empty byte span of `data` (spans given in order, not overlapping).

    The bytes of the spans are taken SPAN_BLOCK at a time (a long word across blocks adds up
    its parts: the sum is position-weighted, so it splits), which bounds the per-byte arrays
    at about 40 bytes x SPAN_BLOCK whatever the input.
    """
    if len(starts) == 0:
        return np.empty(0, dtype=np.uint64)
    total = int(lengths.sum())
    span_first = np.cumsum(lengths) - lengths  # where each span's bytes start, compacted
    weights = position_weights(int(lengths.max()))
    with np.errstate(over="ignore"):
        sums = lengths.astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93)
        for lo in range(0, total, SPAN_BLOCK):
            hi = min(lo + SPAN_BLOCK, total)
            first = int(np.searchsorted(span_first, lo, side="right")) - 1
            spans = np.arange(first, int(np.searchsorted(span_first, hi, side="left")))
            seg_start = np.maximum(span_first[spans], lo)
            seg_len = np.minimum(span_first[spans] + lengths[spans], hi) - seg_start
            owner = np.repeat(spans, seg_len)
            position = np.arange(lo, hi, dtype=np.int64) - span_first[owner]
            byte = data[starts[owner] + position].astype(np.uint64)
            terms = (byte + np.uint64(1)) * weights[position]
            sums[spans] += np.add.reduceat(terms, seg_start - lo)
    return splitmix64(sums)


def groups_under(sizes: list[int], limit: int) -> Iterator[tuple[int, int]]:
    """[lo, hi) ranges of consecutive items whose sizes add up to at most `limit` (an item
    larger than that alone), in order: how the bulk word hashers cut their input."""
    lo, size = 0, 0
    for i, n in enumerate(sizes):
        if i > lo and size + n > limit:
            yield lo, i
            lo, size = i, 0
        size += n
    if lo < len(sizes):
        yield lo, len(sizes)


def text_slices(texts: pa.Array, max_bytes: int = SLICE_BYTES) -> Iterator[pa.Array]:
    """Consecutive slices of `texts` holding at most `max_bytes` of UTF-8 each (a longer text
    alone): what the bulk word hashers take at once, so their arrays stay bounded."""
    if not len(texts):
        yield texts
        return
    sizes = pc.binary_length(texts).fill_null(0).to_numpy(zero_copy_only=False)
    for lo, hi in groups_under(sizes.tolist(), max_bytes):
        yield texts.slice(lo, hi - lo)


def hash_strings(strings: pa.Array) -> np.ndarray:
    """A 64-bit hash of every string of an Arrow string array (nulls and "" hash to 0)."""
    data, offsets = _string_buffers(strings)
    lengths = np.diff(offsets)
    out = np.zeros(len(strings), dtype=np.uint64)
    nonempty = lengths > 0
    out[nonempty] = _span_hashes(data, offsets[:-1][nonempty], lengths[nonempty])
    return out


def words_of(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Word hashes of normalized texts: (hashes in document order, words per document)."""
    data, offsets = _string_buffers(texts)
    is_word = _WORD_BYTE[data]
    # A word starts at a word byte whose predecessor is a separator or a document boundary.
    edges = np.diff(np.concatenate([[False], is_word, [False]]).astype(np.int8))
    starts = np.flatnonzero(edges[:-1] == 1)
    ends = np.flatnonzero(edges[1:] == -1) + 1
    # A word cannot cross a document boundary: split runs at every boundary inside them.
    inner = offsets[(offsets > 0) & (offsets < len(data))]
    inner = inner[np.concatenate([[True], inner[1:] != inner[:-1]])] if len(inner) else inner
    inner = inner[is_word[inner] & is_word[inner - 1]]
    if len(inner):
        starts = np.sort(np.concatenate([starts, inner]))
        ends = np.sort(np.concatenate([ends, inner]))
    counts = np.bincount(np.searchsorted(offsets, starts, side="right") - 1,
                         minlength=len(texts)).astype(np.int64)
    return _span_hashes(data, starts, ends - starts), counts
