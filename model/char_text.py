"""Character-level token shards from plain text files (the Shakespeare sanity preset).

The files are read as UTF-8 and concatenated in the given order; the last ``val_fraction``
of the characters is the validation split, the rest training (each split one document, in
``train-00000.bin`` / ``val-00000.bin``). The vocabulary is the sorted set of characters of
the whole text, as in nanoGPT's shakespeare_char. A ``tokenizer.json`` (HF ``tokenizers``:
one token per character, ``Fuse`` decoder) is written beside the shards, so generation,
HF export and the shard tokenizer hash work exactly as for a trained BPE tokenizer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from model.token_shards import file_sha256, write_token_shard


def char_tokenizer(chars: list[str]) -> Tokenizer:
    """A tokenizer with one id per character of ``chars`` (in that order)."""
    tokenizer = Tokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(chars)}, unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    return tokenizer


def prepare_char_shards(files: list[str | Path], out_dir: str | Path, val_fraction: float) -> Path:
    """Write tokenizer.json, train-00000.bin and val-00000.bin under ``out_dir``; returns it.

    Deterministic, so re-running over the same files rewrites identical bytes.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = "".join(Path(f).read_text(encoding="utf-8") for f in files)
    chars = sorted(set(text))
    tokenizer_path = out_dir / "tokenizer.json"
    tmp = tokenizer_path.with_name(f".tokenizer.json.tmp-{os.getpid()}")
    # Tokenizer.save's JSON is stable, but re-serialise sorted so the hash never depends on it.
    tmp.write_text(json.dumps(json.loads(char_tokenizer(chars).to_str()), sort_keys=True, ensure_ascii=False))
    os.replace(tmp, tokenizer_path)
    digest = file_sha256(tokenizer_path)
    lookup = {c: i for i, c in enumerate(chars)}
    # A dict lookup per character is much faster than the tokenizer's regex split and gives the same ids.
    ids = np.fromiter((lookup[c] for c in text), dtype=np.int64, count=len(text))
    split = int(len(ids) * (1 - val_fraction))
    write_token_shard(out_dir / "train-00000.bin", [ids[:split]], len(chars), digest)
    write_token_shard(out_dir / "val-00000.bin", [ids[split:]], len(chars), digest)
    return out_dir
