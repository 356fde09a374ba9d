"""`train_tokenizer`: a byte-level BPE tokenizer (HF `tokenizers`) trained on a corpus sample.

One task reads every input doc shard twice, streaming one record batch at a time:

1. Each document gets a 64-bit hash of `seed:id`; the bytes of text are summed into 65,536
   buckets by the hash's top bits (a fixed 512 KB histogram, whatever the corpus size).
   The held-out set is the documents of the highest buckets holding at least
   `heldout_bytes` (at most a tenth of the corpus); the training sample is the documents
   of the lowest buckets holding at least `sample_bytes` (never overlapping the held-out
   buckets). Selection depends only on document ids and sizes, so it is the same whatever
   the shard order, the shard count or the executor.
2. The sampled texts stream into `Tokenizer.train_from_iterator`, which keeps word counts,
   not texts, in memory; the held-out texts (a few MB) are set aside on the same pass. BPE training counts words, so the result does not depend on the
   order the documents arrive in; a test checks that two trainings give identical bytes.

The tokenizer: GPT-4-family pre-tokenization (`gpt4`: cl100k's split, digits in groups of
one to three; `gpt4o`: o200k's case-aware split), then byte-level mapping, BPE with no
unknown token (every byte is in the initial alphabet), a byte-level decoder, and no
normalizer, so decode(encode(text)) == text for any Unicode text. Special tokens take the
first ids: `<|bos|>` 0, `<|eos|>` 1, `<|pad|>` 2, then the chat-role tokens in the order
configured. `vocab_size` counts them.

Outputs, under `tokenizer/` in the stage directory (a folder that
`transformers.AutoTokenizer.from_pretrained` loads):
- `tokenizer.json`: loads with `tokenizers.Tokenizer.from_file` and
  `transformers.PreTrainedTokenizerFast(tokenizer_file=...)`;
- `tokenizer_config.json`, `special_tokens_map.json`: bos/eos/pad names for transformers,
  with `clean_up_tokenization_spaces` off so decoding stays exact;
- `train_report.json`: sample sizes, bytes per token on the held-out documents, held-out
  vocabulary use and vocabulary statistics. (Training time goes to the manifest's task
  `info`, not here: committed files are byte-identical from run to run.)

Like every HF tokenizer, a plain `Tokenizer.from_file(...).encode(text)` turns the spelling
`<|eos|>` inside text into the special token (chat templates rely on that). Untrusted text
must be encoded with `tokenizer.encode_special_tokens = True` (transformers:
`split_special_tokens=True`); the `tokenize` stage does so.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from model.special_tokens import BOS, CHAT_TOKENS, EOS, PAD
from pipeline.artifacts import FileEntry, commit_artifact, open_parquet, tmp_path_for
from pipeline.stage import Counts, Params, Stage, StageInput, Task, TaskResult

SPLIT_PATTERNS = {
    # cl100k_base (GPT-4), possessive quantifiers as tiktoken writes them.
    "gpt4": (
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
        r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
    ),
    # o200k_base (GPT-4o): splits camelCase words and keeps contractions on the word.
    "gpt4o": (
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?"""
        r"""|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"""
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?"""
        r"""|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    ),
}
HASH_BUCKET_BITS = 16
READ_BATCH = 1024
HELDOUT_MAX_SHARE = 10  # held-out never takes more than 1/10 of the corpus bytes
OUTPUT_DIR = "tokenizer"
TOKENIZER_FILE = "tokenizer.json"
REPORT_FILE = "train_report.json"
BYTE_ALPHABET = 256


class TrainTokenizerParams(Params):
    vocab_size: int = Field(default=32_768, gt=BYTE_ALPHABET)  # specials included
    split_pattern: Literal["gpt4", "gpt4o"] = "gpt4"
    chat_tokens: list[str] = CHAT_TOKENS  # after <|bos|>, <|eos|>, <|pad|>
    sample_bytes: int = Field(default=100_000_000, gt=0)  # UTF-8 bytes of text trained on
    heldout_bytes: int = Field(default=1_000_000, ge=0)  # for the bytes-per-token report
    min_frequency: int = Field(default=0, ge=0)  # a pair seen fewer times is never merged
    max_token_bytes: int | None = Field(default=None, gt=0)  # cap on a merged token's length
    seed: int = 0

    @model_validator(mode="after")
    def _specials_fit(self) -> TrainTokenizerParams:
        specials = self.special_tokens()
        if len(set(specials)) != len(specials):
            raise ValueError(f"special tokens are repeated: {specials}")
        if self.vocab_size <= BYTE_ALPHABET + len(specials):
            raise ValueError(
                f"vocab_size {self.vocab_size} leaves no merges: 256 bytes and "
                f"{len(specials)} special tokens already take {BYTE_ALPHABET + len(specials)} ids"
            )
        return self

    def special_tokens(self) -> list[str]:
        return [BOS, EOS, PAD, *self.chat_tokens]


class TrainTokenizer(Stage):
    kind = "train_tokenizer"
    version = 1
    report_files = {"tokenizer_report": (f"tokenizer/{REPORT_FILE}",)}
    Params = TrainTokenizerParams
    needs_documents = True  # an upstream stage that kept nothing fails it
    units = "documents -> trained on"
    samples = True  # held out and not sampled are set aside, not dropped from the corpus

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        shards = tuple(s for inp in inputs for s in inp.shards)
        if not shards:
            names = ", ".join(i.name for i in inputs) or "none"
            raise ValueError(f"stage '{self.name}': no doc shards in its inputs ({names})")
        return [Task(name="tokenizer", inputs=shards)]

    def run_task(self, task: Task) -> TaskResult:
        p = self.params
        histogram, counts = self._bucket_bytes(task.inputs)
        heldout_bytes = min(p.heldout_bytes, counts.bytes_in // HELDOUT_MAX_SHARE)
        sample_below, heldout_from = choose_buckets(histogram, p.sample_bytes, heldout_bytes)

        sampled = Counts()
        heldout: list[str] = []
        tokenizer = build_tokenizer(p.split_pattern)
        train_start = time.perf_counter()
        tokenizer.train_from_iterator(
            self._sample(task.inputs, sample_below, heldout_from, sampled, heldout),
            trainer=self._trainer(),
        )
        train_seconds = time.perf_counter() - train_start
        if sampled.kept == 0:
            raise ValueError(f"stage '{self.name}': the input shards hold no text to train on")

        report = {
            "sample": {
                "docs": sampled.kept,
                "bytes": sampled.bytes_out,
                "corpus_docs": counts.n_in,
                "corpus_bytes": counts.bytes_in,
                "sample_bytes_target": p.sample_bytes,
                "hash_buckets": [0, sample_below],
                "seed": p.seed,
            },
            "heldout": evaluate_heldout(tokenizer, heldout),
            "vocab": vocab_statistics(tokenizer, p.special_tokens()),
        }
        report["heldout"]["hash_buckets"] = [heldout_from, len(histogram)]
        files = self._write_outputs(tokenizer, report)
        # The funnel reads: in = trained on + held out + left out of the sample.
        counts.kept = sampled.kept
        counts.bytes_out = sampled.bytes_out
        left_out = {"tokenizer:heldout": len(heldout),
                    "tokenizer:not_sampled": counts.n_in - sampled.kept - len(heldout)}
        counts.dropped.update({reason: n for reason, n in left_out.items() if n})
        info = {
            "vocab_size": tokenizer.get_vocab_size(),
            "bytes_per_token_heldout": report["heldout"]["bytes_per_token"],
            "train_seconds": round(train_seconds, 3),
        }
        return TaskResult(files, counts, info=info)

    def _trainer(self) -> Any:
        from tokenizers import pre_tokenizers, trainers

        p = self.params
        return trainers.BpeTrainer(
            vocab_size=p.vocab_size,
            min_frequency=p.min_frequency,
            special_tokens=p.special_tokens(),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            max_token_length=p.max_token_bytes,
            show_progress=False,
        )

    def _batches(self, shards: tuple[str, ...]) -> Iterator[tuple[np.ndarray, Any, np.ndarray]]:
        """(hash buckets, text column, byte lengths) per record batch of every shard."""
        shift = 64 - HASH_BUCKET_BITS
        for path in shards:
            try:
                with open_parquet(path) as parquet:
                    for batch in parquet.iter_batches(batch_size=READ_BATCH, columns=["id", "text"]):
                        ids = batch.column("id").to_pylist()
                        buckets = np.fromiter(
                            (doc_hash(self.params.seed, i) >> shift for i in ids), np.int64, len(ids)
                        )
                        texts = batch.column("text")
                        lengths = pc.binary_length(texts).to_numpy(zero_copy_only=False)
                        yield buckets, texts, lengths
            except (OSError, KeyError, ValueError) as exc:
                raise ValueError(f"stage '{self.name}': cannot read doc shard {path}: {exc}") from exc

    def _bucket_bytes(self, shards: tuple[str, ...]) -> tuple[np.ndarray, Counts]:
        histogram = np.zeros(1 << HASH_BUCKET_BITS, dtype=np.int64)
        counts = Counts()
        for buckets, _, lengths in self._batches(shards):
            np.add.at(histogram, buckets, lengths)
            counts.n_in += len(buckets)
            counts.bytes_in += int(lengths.sum())
        return histogram, counts

    def _sample(self, shards: tuple[str, ...], sample_below: int, heldout_from: int,
                counts: Counts, heldout: list[str]) -> Iterator[str]:
        """Yield the training sample's texts; collect the held-out texts (a few MB) aside."""
        for buckets, texts, lengths in self._batches(shards):
            train = buckets < sample_below
            if train.any():
                counts.kept += int(train.sum())
                counts.bytes_out += int(lengths[train].sum())
                yield from texts.filter(pa.array(train)).to_pylist()
            held = buckets >= heldout_from
            if held.any():
                heldout += texts.filter(pa.array(held)).to_pylist()

    def _write_outputs(self, tokenizer: Any, report: dict[str, Any]) -> list[FileEntry]:
        directory = self.stage_dir / OUTPUT_DIR
        special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
                   "additional_special_tokens": list(self.params.chat_tokens)}
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **special,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 1_000_000_000,
        }
        contents = {
            TOKENIZER_FILE: tokenizer.to_str(pretty=True),
            "tokenizer_config.json": _json(config),
            "special_tokens_map.json": _json(special),
            REPORT_FILE: _json(report),
        }
        entries = []
        for name, text in contents.items():
            final = directory / name
            tmp = tmp_path_for(final)
            tmp.write_text(text, encoding="utf-8")
            docs = report["sample"]["docs"] if name == TOKENIZER_FILE else 0
            entries.append(commit_artifact(self.stage_dir, tmp, final, docs))
        return entries


def doc_hash(seed: int, doc_id: str) -> int:
    """A 64-bit hash of a document id, salted by seed: the same on every machine."""
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


def choose_buckets(histogram: np.ndarray, sample_bytes: int, heldout_bytes: int) -> tuple[int, int]:
    """(sample buckets are [0, s), held-out buckets are [h, n)), each holding at least its
    target bytes (or all there is); held-out first, so a small corpus still has one."""
    n = len(histogram)
    heldout_from = n
    if heldout_bytes > 0:
        from_top = np.cumsum(histogram[::-1])
        heldout_from = n - min(int(np.searchsorted(from_top, heldout_bytes)) + 1, n)
    from_bottom = np.cumsum(histogram[:heldout_from])
    if len(from_bottom) == 0:
        return 0, heldout_from
    sample_below = min(int(np.searchsorted(from_bottom, sample_bytes)) + 1, heldout_from)
    return sample_below, heldout_from


def build_tokenizer(split_pattern: str) -> Any:
    """An untrained byte-level BPE with a GPT-4-family split and no normalizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE(byte_fallback=False, unk_token=None, fuse_unk=False))
    tokenizer.normalizer = None
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERNS[split_pattern]), behavior="isolated"),
        # The split above already isolates words; ByteLevel only maps bytes to symbols.
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def evaluate_heldout(tokenizer: Any, texts: list[str]) -> dict[str, Any]:
    """Bytes and characters per token on held-out documents, and how much of the vocab they use."""
    vocab_size = tokenizer.get_vocab_size()
    used = np.zeros(vocab_size, dtype=np.int64)
    docs = n_bytes = chars = tokens = 0
    batch: list[str] = []

    def flush() -> None:
        nonlocal tokens
        for encoding in tokenizer.encode_batch(batch, add_special_tokens=False):
            ids = np.asarray(encoding.ids, dtype=np.int64)
            tokens += len(ids)
            used[:] += np.bincount(ids, minlength=vocab_size)
        batch.clear()

    tokenizer.encode_special_tokens = True
    try:
        for text in texts:
            docs += 1
            n_bytes += len(text.encode("utf-8", "surrogatepass"))
            chars += len(text)
            batch.append(text)
            if len(batch) >= READ_BATCH:
                flush()
        flush()
    finally:
        tokenizer.encode_special_tokens = False
    return {
        "docs": docs,
        "bytes": n_bytes,
        "tokens": tokens,
        "bytes_per_token": round(n_bytes / tokens, 4) if tokens else None,
        "chars_per_token": round(chars / tokens, 4) if tokens else None,
        "vocab_used_fraction": round(float((used > 0).mean()), 4),
    }


def vocab_statistics(tokenizer: Any, specials: list[str]) -> dict[str, Any]:
    """Sizes, special ids and the byte-length profile of the learned tokens."""
    byte_of = {ch: b for b, ch in _bytes_to_unicode().items()}
    vocab = tokenizer.get_vocab(with_added_tokens=False)
    special_ids = {t: tokenizer.token_to_id(t) for t in specials}
    learned = {tok: i for tok, i in vocab.items() if tok not in special_ids}
    token_bytes = {tok: bytes(byte_of[c] for c in tok) for tok in learned}
    lengths = np.array([len(b) for b in token_bytes.values()])
    edges = [1, 2, 3, 4, 5, 9, 17]
    labels = ["1", "2", "3", "4", "5-8", "9-16", "17+"]
    histogram = np.histogram(lengths, bins=[*edges, max(int(lengths.max()), 17) + 1])[0]
    longest = sorted(token_bytes.values(), key=lambda b: (-len(b), b))[:10]
    return {
        "size": tokenizer.get_vocab_size(),
        "merges": len(learned) - BYTE_ALPHABET,
        "special_tokens": special_ids,
        "token_bytes_mean": round(float(lengths.mean()), 3),
        "token_bytes_histogram": dict(zip(labels, (int(n) for n in histogram))),
        "leading_space_fraction": round(
            float(np.mean([b.startswith(b" ") for b in token_bytes.values()])), 4),
        "non_ascii_fraction": round(float(np.mean([max(b) > 127 for b in token_bytes.values()])), 4),
        "longest": [b.decode("utf-8", "replace") for b in longest],
    }


def _bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table of byte-level BPE (GPT-2's, as HF uses it)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
