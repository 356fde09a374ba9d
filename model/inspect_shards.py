"""`lmforge inspect-shards DIR`: what a folder of token shards holds, checked on the way.

Opens every `*.bin` token shard under DIR (a tokenize stage directory, its `shards/`, or
one file) with model/'s reader, which checks the header, the file size and the document
index; a shard it cannot read is an error that names the file. Then every token id is
compared with the shard's vocab size (one full pass over the tokens, the check the trainer
makes before training). Prints:

- one line per shard: split, version, token width, tokens, documents, vocab size, largest
  token id, tokenizer;
- totals per split (`train-*`, `val-*`) and document lengths in tokens;
- a token histogram summary over at most `HISTOGRAM_TOKENS` tokens read evenly from the
  shards (bounded time on a corpus of any size): distinct ids, EOS share, most common ids;
- the start of the first document, decoded;
- an `ERROR:` line per shard holding ids >= its vocab size (how many, the largest, the
  first's position and document); `shard_report` returns these problems too, and the
  command then ends as bad input, after the report.

The tokenizer for decoding is `--tokenizer PATH`, or else a `tokenizer.json` whose sha256
matches the shards' header: beside the shards (the tokenize stage puts a copy there) or in
a sibling stage of the run directory; without one, ids are shown.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from model.special_tokens import EOS

HISTOGRAM_TOKENS = 10_000_000
SAMPLE_CHARS = 600
TOP_IDS = 10


def inspect_shards(path: str | Path, tokenizer_path: str | Path | None = None) -> str:
    """The report for the token shards at `path` (a folder or one file), as text."""
    return shard_report(path, tokenizer_path)[0]


def shard_report(path: str | Path, tokenizer_path: str | Path | None = None) -> tuple[str, list[str]]:
    """(the report, one message per shard whose token ids exceed its vocab size)."""
    from model.token_shards import TokenShard, file_sha256

    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or directory")
    files = [root] if root.is_file() else sorted(root.rglob("*.bin"))
    if not files:
        raise FileNotFoundError(f"{root}: no token shards (*.bin) here")
    shards = [TokenShard(f) for f in files]
    base = root if root.is_dir() else root.parent

    lines = [f"token shards: {root} ({len(shards)} files)", ""]
    header = (f"{'shard':<40} {'ver':>3} {'dtype':>6} {'tokens':>14} {'docs':>10} {'vocab':>8} "
              f"{'max id':>8}  tokenizer")
    lines += [header, "-" * len(header)]
    for shard in shards:
        name = shard.path.relative_to(base).as_posix() if shard.path != root else shard.path.name
        sha = (shard.tokenizer_sha256 or "-")[:12]
        max_id = shard.scan_token_ids().max_id
        max_id = "-" if max_id is None else f"{max_id:,}"
        lines.append(f"{name:<40} {shard.version:>3} {shard.dtype.name:>6} {shard.token_count:>14,} "
                     f"{shard.doc_count:>10,} {shard.vocab_size:>8,} {max_id:>8}  {sha}")
    problems = [problem for shard in shards if (problem := shard.token_id_problem())]

    lines += ["", _splits(shards)]
    vocab_sizes = {s.vocab_size for s in shards}
    hashes = {s.tokenizer_sha256 for s in shards}
    if len(vocab_sizes) > 1 or len(hashes) > 1:
        lines.append(f"WARNING: shards disagree: vocab sizes {sorted(vocab_sizes)}, "
                     f"{len(hashes)} tokenizer hashes")

    tokenizer = _tokenizer(tokenizer_path, base, hashes, file_sha256)
    lines += ["", _histogram(shards, tokenizer), "", _sample(shards, tokenizer)]
    lines += [f"ERROR: {problem}" for problem in problems]
    return "\n".join(lines), problems


def _splits(shards: list[Any]) -> str:
    by_split: dict[str, list[Any]] = defaultdict(list)
    for shard in shards:
        by_split[shard.path.name.split("-", 1)[0] if "-" in shard.path.name else "-"].append(shard)
    lines = [f"{'split':<8} {'shards':>6} {'tokens':>14} {'docs':>10} {'tokens/doc':>11} "
             f"{'min':>7} {'median':>7} {'max':>9}"]
    for split, group in sorted(by_split.items()):
        tokens = sum(s.token_count for s in group)
        docs = sum(s.doc_count for s in group)
        lengths = np.concatenate([np.diff(np.asarray(s.doc_offsets, dtype=np.int64)) for s in group])
        if docs:
            stats = f"{tokens / docs:>11,.1f} {lengths.min():>7,} {int(np.median(lengths)):>7,} {lengths.max():>9,}"
        else:
            stats = f"{'-':>11} {'-':>7} {'-':>7} {'-':>9}"
        lines.append(f"{split:<8} {len(group):>6} {tokens:>14,} {docs:>10,} {stats}")
    return "\n".join(lines)


def _histogram(shards: list[Any], tokenizer: Any) -> str:
    total = sum(s.token_count for s in shards)
    vocab = max(s.vocab_size for s in shards)
    pieces, read = [], 0
    for shard in shards:
        share = shard.token_count if total <= HISTOGRAM_TOKENS else shard.token_count * HISTOGRAM_TOKENS // total
        if share == 0:
            continue
        # Evenly spaced chunks, so a sampled histogram sees the whole shard, not its start.
        chunks = max(1, min(64, share // 65_536))
        step = shard.token_count // chunks
        for c in range(chunks):
            piece = np.asarray(shard.tokens[c * step: c * step + share // chunks])
            read += len(piece)
            if shard.scan_token_ids().out_of_range:  # reported apart, as errors
                piece = piece[piece < shard.vocab_size]
            pieces.append(piece)
    if read == 0:
        return "token histogram: no tokens"
    # Counts of the ids present only: an array per vocabulary id could be gigabytes when a
    # damaged header claims a huge vocab_size.
    ids, counts = np.unique(np.concatenate(pieces), return_counts=True)
    scope = "all" if read == total else f"a sample of {read:,} of {total:,}"
    lines = [f"token histogram ({scope} tokens): {len(ids):,} of {vocab:,} ids seen"]
    eos = tokenizer.token_to_id(EOS) if tokenizer is not None else None
    if eos is not None:
        lines.append(f"  <|eos|> (id {eos}): {counts[ids == eos].sum() / read:.2%} of tokens")
    lines.append(f"  top {TOP_IDS} ids:")
    for i in np.argsort(-counts, kind="stable")[:TOP_IDS]:  # ties: the lower id first
        shown = repr(tokenizer.decode([int(ids[i])], skip_special_tokens=False)) if tokenizer else ""
        lines.append(f"    {int(ids[i]):>8} {counts[i] / read:>8.2%}  {shown}")
    return "\n".join(lines)


def _sample(shards: list[Any], tokenizer: Any) -> str:
    shard = next((s for s in shards if s.doc_count), None)
    if shard is None:
        return "sample: no documents"
    doc = np.asarray(shard.document(0)).tolist()
    head = f"first document of {shard.path.name} ({len(doc):,} tokens)"
    if tokenizer is None:
        return f"{head}, ids (no tokenizer found; pass --tokenizer):\n  {doc[:64]}"
    text = tokenizer.decode(doc, skip_special_tokens=False)
    cut = "..." if len(text) > SAMPLE_CHARS else ""
    return f"{head}, decoded:\n{text[:SAMPLE_CHARS]}{cut}"


def _tokenizer(explicit: str | Path | None, base: Path, hashes: set, file_sha256: Any) -> Any:
    from tokenizers import Tokenizer

    if explicit is not None:
        return Tokenizer.from_file(str(explicit))
    wanted = {h for h in hashes if h}
    if not wanted:
        return None
    # The tokenize stage copies tokenizer.json beside the shards; failing that, the
    # train_tokenizer stage is a sibling in the run directory.
    candidates = [base / "tokenizer.json", base / "shards" / "tokenizer.json"]
    for run_dir in [base, *base.parents][:4]:
        candidates += sorted(run_dir.glob("*/tokenizer/tokenizer.json"))
    for candidate in candidates:
        if candidate.is_file() and file_sha256(candidate) in wanted:
            return Tokenizer.from_file(str(candidate))
    return None
