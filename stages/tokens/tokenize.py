"""`tokenize`: doc shards -> train/val token shards the trainer memory-maps directly.

Inputs: a doc stage and a `train_tokenizer` stage (its `tokenizer.json` is found among the
input files). The shard format is `model/token_shards.py`'s (versioned header with magic,
version, token width, token and document counts, vocab size and the sha256 of
tokenizer.json; uint16 tokens when the vocab fits, else uint32; a document-offset index);
the stage writes through its `TokenShardWriter`.

Choices that matter:
- **EOS after every document, BOS off by default.** `<|eos|>` closes each document, so a
  packed window that crosses a boundary shows the model where one document ends and the
  next starts (GPT-2 / nanoGPT convention). `bos: true` also opens each document with
  `<|bos|>` (Llama convention); either way the shard header and index are unchanged.
- **Special tokens never come out of text.** Documents are encoded with
  `encode_special_tokens`, so text that spells `<|eos|>` is tokenized as plain characters;
  the only special ids in a shard are the EOS/BOS the stage adds.
- **Train/validation split by document**: a document is in `val` when a hash of
  `seed` and its id falls below `val_fraction`. It depends on nothing but the id, so it is
  the same whatever the sharding, the executor or the worker count.
- **Output shards.** Without `shuffle`, one task per input doc shard writes
  `shards/train-<shard>.bin` and `shards/val-<shard>.bin`, documents in input order.
  With `shuffle: true`, the input's Parquet row groups (1,024 documents each) are put in a
  seeded random order and dealt round-robin to `num_shards` tasks (default: as many as
  input shards), so each output shard mixes every source and the sizes stay within one
  row group; inside a shard, documents are then ordered by a seeded hash of their id. Each
  row group is read once. A split with no document writes no file.
- **The shard folder is self-contained**, as model/data.py reads it: `shards/` holds
  `train-*.bin`, `val-*.bin` and a copy of `tokenizer.json` (one extra small task), whose
  sha256 is the one in every shard header.
- **Memory is bounded by `batch_size`**, not by shard size: documents are read, encoded
  (`encode_batch_fast`, Rust threads) and appended to the shard `batch_size` at a time;
  shuffling reorders through a temporary shard on disk via numpy.memmap.
- **Threads.** `encode_batch` runs on a Rayon pool. `threads` defaults to the process's
  `OMP_NUM_THREADS` when set (dask sets it to 1 in each worker process, whose tasks already
  run in parallel) and otherwise to every core of the CPU affinity (the local executor runs
  one task at a time). One thread turns Rust parallelism off for the task
  (TOKENIZERS_PARALLELISM=false); more threads size Rayon's pool if the process has not
  used it yet (RAYON_NUM_THREADS; the pool is process-wide).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from model.special_tokens import BOS, EOS
from model.token_shards import TokenShard, TokenShardWriter, file_sha256
from pipeline import storage
from pipeline.artifacts import FileEntry, commit_artifact, commit_copy, open_parquet, tmp_path_for
from pipeline.stage import Counts, Params, Stage, StageInput, Task, TaskResult

TOKENIZER_FILE = "tokenizer.json"
COPY_TASK = "tokenizer"
SPLITS = ("train", "val")
UINT64_RANGE = float(2**64)


class TokenizeParams(Params):
    val_fraction: float = Field(default=0.005, ge=0.0, lt=1.0)
    bos: bool = False  # also open every document with bos_token
    eos_token: str = EOS
    bos_token: str = BOS
    shuffle: bool = False
    num_shards: int | None = Field(default=None, ge=1)  # with shuffle: output shards per split
    seed: int = 0
    batch_size: int = Field(default=1024, ge=1)  # documents per encode call: bounds memory
    threads: int | None = Field(default=None, ge=1)  # None: OMP_NUM_THREADS, else all cores

    @model_validator(mode="after")
    def _num_shards_needs_shuffle(self) -> TokenizeParams:
        if self.num_shards is not None and not self.shuffle:
            raise ValueError("num_shards applies only with shuffle: true "
                             "(without it, each input shard gives one output shard)")
        return self


class Tokenize(Stage):
    kind = "tokenize"
    version = 1
    Params = TokenizeParams

    def tasks(self, inputs: list[StageInput]) -> list[Task]:
        tokenizer = self._tokenizer_file(inputs)
        doc_inputs = [inp for inp in inputs if str(tokenizer) not in inp.files]
        shards = [(inp.name, s) for inp in doc_inputs for s in inp.shards]
        if not shards:
            names = ", ".join(i.name for i in doc_inputs) or "none"
            raise ValueError(f"stage '{self.name}': no doc shards in its inputs ({names})")
        common = (("tokenizer", str(tokenizer)),
                  ("tokenizer_sha256", file_sha256(storage.local_copy(str(tokenizer)))))
        copy = Task(name=COPY_TASK, inputs=(str(tokenizer),), payload=(("copy", True),))
        if self.params.shuffle:
            return [copy, *self._shuffled_tasks(shards, common)]
        stems = [Path(s).stem for _, s in shards]
        unique = len(set(stems)) == len(stems)
        return [copy] + [
            Task(name=stem if unique else f"{stage}-{stem}", inputs=(path,),
                 payload=(*common, ("pieces", ((path, None),))))
            for (stage, path), stem in zip(shards, stems)
        ]

    def _tokenizer_file(self, inputs: list[StageInput]) -> str:
        found = [f for inp in inputs for f in inp.files if Path(f).name == TOKENIZER_FILE]
        if len(found) != 1:
            raise ValueError(
                f"stage '{self.name}': needs exactly one {TOKENIZER_FILE} among its inputs "
                f"(a train_tokenizer stage), found {len(found)}: {found}"
            )
        return found[0]

    def _shuffled_tasks(self, shards: list[tuple[str, str]], common: tuple) -> list[Task]:
        """Row groups in a seeded random order, dealt round-robin to the output shards."""
        pieces = []
        for stage, path in shards:
            with open_parquet(path) as parquet:
                groups = parquet.metadata.num_row_groups
            for group in range(groups):
                key = _hash64("rowgroup", self.params.seed, f"{stage}/{Path(path).name}/{group}")
                pieces.append((key, path, group))
        pieces.sort()
        count = self.params.num_shards or len(shards)
        tasks = []
        for j in range(count):
            mine = tuple((path, group) for _, path, group in pieces[j::count])
            inputs = tuple(sorted({path for path, _ in mine}))
            tasks.append(Task(name=f"{j:05d}", inputs=inputs, payload=(*common, ("pieces", mine))))
        return tasks

    def run_task(self, task: Task) -> TaskResult:
        if task.get("copy"):
            return TaskResult([self._copy_tokenizer(task.inputs[0])], Counts())
        tokenizer = self._load_tokenizer(task.get("tokenizer"))
        vocab_size = tokenizer.get_vocab_size()
        prefix = [self._special_id(tokenizer, self.params.bos_token)] if self.params.bos else []
        suffix = [self._special_id(tokenizer, self.params.eos_token)]
        counts = Counts()
        writers = _SplitWriters(self.stage_dir, task.name, vocab_size, task.get("tokenizer_sha256"),
                                ordered=self.params.shuffle)
        try:
            with _encode_threads(self._threads()):
                for ids, texts in self._batches(task.get("pieces")):
                    counts.n_in += len(ids)
                    counts.bytes_in += sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
                    encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
                    for doc_id, encoding in zip(ids, encodings):
                        tokens = np.array([*prefix, *encoding.ids, *suffix], dtype=np.uint32)
                        writers.add(self._split_of(doc_id), tokens, self._order_key(doc_id))
            files, info = writers.close()
        except BaseException:
            writers.abort()
            raise
        counts.kept = counts.n_in
        counts.bytes_out = sum(f.bytes for f in files)
        info.update(vocab_size=vocab_size, tokenizer_sha256=task.get("tokenizer_sha256"))
        return TaskResult(files, counts, info=info)

    def _copy_tokenizer(self, source: str) -> FileEntry:
        """tokenizer.json beside the shards, so their folder is all a trainer needs."""
        return commit_copy(self.stage_dir, source, f"shards/{TOKENIZER_FILE}")

    def _batches(self, pieces: tuple[tuple[str, int | None], ...]) -> Iterator[tuple[list, list]]:
        for path, group in pieces:
            try:
                with open_parquet(path) as parquet:
                    batches = parquet.iter_batches(
                        batch_size=self.params.batch_size, columns=["id", "text"],
                        row_groups=None if group is None else [group],
                    )
                    for batch in batches:
                        yield batch.column("id").to_pylist(), batch.column("text").to_pylist()
            except (OSError, KeyError, ValueError) as exc:
                raise ValueError(f"stage '{self.name}': cannot read doc shard {path}: {exc}") from exc

    def _split_of(self, doc_id: str) -> str:
        if self.params.val_fraction <= 0.0:
            return "train"
        key = _hash64("split", self.params.seed, doc_id)
        return "val" if key < self.params.val_fraction * UINT64_RANGE else "train"

    def _order_key(self, doc_id: str) -> int:
        return _hash64("order", self.params.seed, doc_id) if self.params.shuffle else 0

    def _threads(self) -> int:
        if self.params.threads is not None:
            return self.params.threads
        omp = os.environ.get("OMP_NUM_THREADS", "")
        return int(omp) if omp.isdigit() and int(omp) > 0 else len(os.sched_getaffinity(0))

    def _load_tokenizer(self, path: str) -> Any:
        """Once per worker process (never pickled), with special-token matching off."""
        cached = getattr(self, "_tokenizer", None)
        if cached is None or cached[0] != path:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(storage.local_copy(path)))
            tokenizer.encode_special_tokens = True
            self._tokenizer = (path, tokenizer)
        return self._tokenizer[1]

    def _special_id(self, tokenizer: Any, token: str) -> int:
        token_id = tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"stage '{self.name}': the tokenizer has no {token!r} token "
                             f"(set params.eos_token / params.bos_token to its name)")
        return token_id


class _SplitWriters:
    """One token shard per split, created on its first document; `ordered` sorts documents
    by key on close, through a temporary shard on disk."""

    def __init__(self, stage_dir: Path, name: str, vocab_size: int, tokenizer_sha256: str,
                 ordered: bool):
        self.stage_dir = stage_dir
        self.directory = stage_dir / "shards"
        self.name = name
        self.vocab_size = vocab_size
        self.sha = tokenizer_sha256
        self.ordered = ordered
        self.writers: dict[str, TokenShardWriter] = {}
        self.keys: dict[str, list[int]] = {split: [] for split in SPLITS}
        self.tokens: dict[str, int] = {split: 0 for split in SPLITS}

    def final(self, split: str) -> Path:
        return self.directory / f"{split}-{self.name}.bin"

    def _target(self, split: str) -> Path:
        final = self.final(split)
        return final.with_name(final.name + ".unordered") if self.ordered else final

    def add(self, split: str, tokens: np.ndarray, key: int) -> None:
        writer = self.writers.get(split)
        if writer is None:
            writer = TokenShardWriter(tmp_path_for(self._target(split)), self.vocab_size, self.sha)
            self.writers[split] = writer
        writer.add_document(tokens)
        self.tokens[split] += len(tokens)
        if self.ordered:
            self.keys[split].append(key)

    def close(self) -> tuple[list[FileEntry], dict[str, Any]]:
        files = []
        info = {}
        for split in SPLITS:
            writer = self.writers.get(split)
            info[split] = {"docs": writer.doc_count if writer else 0, "tokens": self.tokens[split]}
            if writer is None:
                continue
            tmp = writer.close()
            if self.ordered:
                tmp = self._reorder(split, tmp)
            docs = writer.doc_count
            files.append(commit_artifact(self.stage_dir, tmp, self.final(split), docs))
        self.writers.clear()
        return files, info

    def _reorder(self, split: str, unordered: Path) -> Path:
        """Rewrite a shard with its documents sorted by key; memory: the keys and one document."""
        order = np.argsort(np.array(self.keys[split], dtype=np.uint64), kind="stable")
        source = TokenShard(unordered)
        tmp = tmp_path_for(self.final(split))
        with TokenShardWriter(tmp, self.vocab_size, self.sha) as writer:
            for i in order:
                writer.add_document(source.document(int(i)))
        del source
        unordered.unlink()
        return tmp

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()
        self.writers.clear()


@contextmanager
def _encode_threads(threads: int) -> Iterator[None]:
    """Rust-side parallelism for the duration of a task (see the module docstring)."""
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    if threads == 1:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    else:
        os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved


def _hash64(salt: str, seed: int, key: str) -> int:
    digest = hashlib.blake2b(f"{salt}:{seed}:{key}".encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(digest.digest(), "big")
