"""Evaluation of a language model: held-out bits per byte, and multiple-choice accuracy.

``lmforge eval CKPT --text NAME=PATH --task NAME=PATH.jsonl`` and the trainer's
``train.eval_text`` / ``train.eval_tasks`` both go through ``Evaluator``; ``bench/ablation.py``
uses ``bits_per_byte``. The definitions, exactly:

**Bits per byte** of a set of documents is the summed negative log-likelihood, in bits, of
every token of every document, divided by the summed UTF-8 bytes of the documents' text.
A document is encoded without added special tokens (special-token strings in the text are
encoded as plain text) and preceded by ``<|eos|>``, the separator every pretraining document
ends with, so its first token is predicted too and every byte is paid for; the ``<|eos|>``
itself is context, neither scored nor counted as a byte. A tokenizer without ``<|eos|>`` (the
character-level one) has nothing to put in front: the first token is then context only, and
the bytes it covers are left out of the count. Since the numerator is the model's code length
for the text and the denominator the text's size, the figure does not depend on the
tokenizer, so models with different vocabularies compare. A document longer than the model's
context ``C`` is scored in windows of ``C`` tokens that start every ``stride`` tokens; each
window scores only the tokens no earlier window scored, so every token is scored exactly once,
with at least ``C - stride`` tokens of context once past the first window. The default
stride is ``C``: windows side by side, no overlap (a token's context is what precedes it in
its window); a smaller stride costs ``C / stride`` times the compute and gives a lower,
more faithful figure.

**Multiple choice** (the way lm-evaluation-harness scores HellaSwag and ARC): for each item,
each choice's continuation is scored as the summed log-likelihood of its tokens given
``<|eos|>`` + the context; the continuation is the choice after one space (lm-evaluation-
harness's target delimiter), with no space when the context is empty, ends in whitespace or
the choice starts with whitespace. ``acc``: the choice with the highest summed
log-likelihood is the label's. ``acc_norm``: the same with each log-likelihood divided by the
UTF-8 bytes of the choice text (per byte, as the harness divides by the characters of the
choice; the two agree on ASCII). Ties go to the first choice. Context and continuation are
encoded separately, so the continuation's tokens do not depend on the context's last word;
when the two exceed ``C + 1`` tokens the context loses its oldest tokens.

A task file is JSONL, one item per line: ``{"context": str, "choices": [str, ...], "label":
int}``. Rows in HellaSwag's layout (``ctx``, ``endings``, ``label``) and ARC's (``question``,
``choices: {"text": [...], "label": [...]}``, ``answerKey``; the context becomes
``"Question: {question}\\nAnswer:"``) are read as well, with their text used as written (no
further preprocessing, so HellaSwag figures can differ slightly from the harness's). A text
set is a ``.jsonl`` file of ``{"text": ...}`` documents (one per line), or any other file,
read whole as one UTF-8 document. Bad files raise ``EvalDataError`` naming the file and line.

Batching: sequences are sorted by length and each batch is padded to its longest member (the
padding is after the scored positions of a causal model, so it changes nothing); each batch's
losses stay on the device and the host reads one sum per set or task. Autocast, if any, is the
caller's: ``lmforge eval`` and the bench run in fp32, the trainer in its own precision.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from model.special_tokens import EOS


class EvalDataError(ValueError):
    """A text set or task file that cannot be read or scored; the message names the file (and line)."""


@dataclass(frozen=True)
class Item:
    """One multiple-choice question."""

    context: str
    choices: tuple[str, ...]
    label: int


@dataclass(frozen=True)
class TextScore:
    nats: float
    tokens: int  # tokens scored
    bytes: int  # UTF-8 bytes of the text they encode

    @property
    def bits_per_byte(self) -> float:
        return self.nats / math.log(2) / self.bytes


@dataclass(frozen=True)
class TaskScore:
    acc: float
    acc_norm: float  # per UTF-8 byte of the choice
    items: int
    log_likelihoods: tuple[tuple[float, ...], ...]  # per item, per choice (summed, in nats)


# -- reading ----------------------------------------------------------------------------------


def _lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line of a JSONL file."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EvalDataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise EvalDataError(f"{path}:{number}: not valid JSON ({e})") from None
        if not isinstance(row, dict):
            raise EvalDataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append((number, row))
    if not rows:
        raise EvalDataError(f"{path}: no records")
    return rows


def read_text_set(path: str | Path) -> list[str]:
    """The documents of a text set: a ``.jsonl`` (or ``.jsonl.gz``) file's ``text`` fields,
    else the whole file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such text set file")
    if not path.name.endswith((".jsonl", ".jsonl.gz")):
        try:
            return [path.read_text(encoding="utf-8")]
        except UnicodeDecodeError as e:
            raise EvalDataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    documents = []
    for number, row in _lines(path):
        if not isinstance(row.get("text"), str):
            raise EvalDataError(f"{path}:{number}: needs a string 'text' field")
        documents.append(row["text"])
    return documents


def _item_fields(row: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(context, choices, label) of a row in lmforge's, HellaSwag's or ARC's layout."""
    if "ctx" in row and "endings" in row:  # HellaSwag
        label = row.get("label")
        return row["ctx"], row["endings"], int(label) if isinstance(label, str) and label.isdigit() else label
    if "question" in row and "answerKey" in row and isinstance(row.get("choices"), dict):  # ARC
        choices = row["choices"]
        keys = choices.get("label", [])
        label = keys.index(row["answerKey"]) if row["answerKey"] in keys else f"answerKey {row['answerKey']!r}"
        return f"Question: {row['question']}\nAnswer:", choices.get("text"), label
    missing = [key for key in ("context", "choices", "label") if key not in row]
    if missing:
        raise KeyError(", ".join(repr(k) for k in missing))
    return row["context"], row["choices"], row["label"]


def read_task(path: str | Path) -> list[Item]:
    """The items of a multiple-choice JSONL file (see the module docstring for the layouts)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such task file")
    items = []
    for number, row in _lines(path):
        where = f"{path}:{number}"
        try:
            context, choices, label = _item_fields(row)
        except KeyError as e:
            raise EvalDataError(f"{where}: missing key {e.args[0]} (an item needs context, choices, label)") from None
        if not isinstance(context, str):
            raise EvalDataError(f"{where}: context must be a string, got {type(context).__name__}")
        if (not isinstance(choices, list) or len(choices) < 2
                or not all(isinstance(c, str) and c for c in choices)):
            raise EvalDataError(f"{where}: choices must be a list of at least 2 non-empty strings")
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
            raise EvalDataError(f"{where}: label {label!r} is not an index into the {len(choices)} choices")
        items.append(Item(context, tuple(choices), label))
    return items


def named_paths(specs: Sequence[str]) -> dict[str, str]:
    """``NAME=PATH`` strings as {name: path}; a bare PATH is named by its file stem."""
    named: dict[str, str] = {}
    for spec in specs:
        name, _, path = spec.partition("=") if "=" in spec else (Path(spec).stem, "", spec)
        if not name or not path:
            raise EvalDataError(f"{spec!r}: expected NAME=PATH")
        if name in named:
            raise EvalDataError(f"{spec!r}: the name {name!r} is given twice")
        named[name] = path
    return named


# -- scoring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    """Token ids fed to the model (all but the last) and scored from position ``first`` on."""

    ids: list[int]  # inputs followed by the last target: scored targets are ids[1:][first:]
    first: int  # index of the first scored target among ids[1:]


class Evaluator:
    """Scores text sets and tasks with one model and tokenizer.

    ``model`` maps a (B, T) id tensor to (B, T, vocab) logits (a ``Transformer``, or the
    trainer's wrapped one: every rank then runs the same batches, as FSDP needs).
    ``context``: the longest input the model takes (its ``max_seq_len``).
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], tokenizer: Tokenizer, context: int,
                 device: torch.device | str, batch_size: int = 8) -> None:
        self.model, self.context, self.device, self.batch_size = model, context, torch.device(device), batch_size
        self.tokenizer = tokenizer
        self.tokenizer.encode_special_tokens = True  # evaluated text is data, never control tokens
        self.eos = tokenizer.token_to_id(EOS)

    def _encode(self, text: str, source: str) -> Any:
        try:
            return self.tokenizer.encode(text, add_special_tokens=False)
        except Exception as e:  # tokenizers raises a bare Exception (a character a char vocab lacks)
            raise EvalDataError(f"{source}: cannot encode {text[:40]!r} with the model's tokenizer: {e}") from None

    def _nll(self, sequences: list[_Window]) -> torch.Tensor:
        """Summed negative log-likelihood (nats, float64, on the device) of each sequence's scored targets."""
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i].ids))
        out = torch.zeros(len(sequences), dtype=torch.float64, device=self.device)
        for start in range(0, len(order), self.batch_size):
            rows = [sequences[i] for i in order[start:start + self.batch_size]]
            width = len(rows[0].ids) - 1
            inputs = torch.zeros(len(rows), width, dtype=torch.long)
            targets = torch.full((len(rows), width), -100, dtype=torch.long)
            for r, seq in enumerate(rows):
                n = len(seq.ids) - 1
                inputs[r, :n] = torch.tensor(seq.ids[:-1])
                targets[r, seq.first:n] = torch.tensor(seq.ids[1 + seq.first:])
            inputs, targets = inputs.to(self.device), targets.to(self.device)
            logits = self.model(inputs)
            nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100,
                                  reduction="none").view(len(rows), width)
            index = torch.tensor(order[start:start + self.batch_size], device=self.device)
            out[index] = nll.sum(dim=1).double()
        return out

    @torch.no_grad()
    def text(self, documents: Sequence[str], stride: int | None = None, source: str = "text") -> TextScore:
        """Bits-per-byte ingredients of ``documents`` (windows of ``context`` tokens every
        ``stride``, default ``context``: see the module docstring)."""
        stride = stride or self.context
        if not 1 <= stride <= self.context:
            raise ValueError(f"stride must lie in [1, {self.context}], got {stride}")
        windows: list[_Window] = []
        tokens = n_bytes = 0
        for text in documents:
            encoding = self._encode(text, source)
            if not encoding.ids:
                continue
            if self.eos is not None:
                ids, skipped_chars = [self.eos, *encoding.ids], 0
            else:  # the first token is context only, so its text is not counted
                ids, skipped_chars = encoding.ids, encoding.offsets[1][0] if len(encoding.ids) > 1 else len(text)
            n_bytes += len(text[skipped_chars:].encode("utf-8"))
            tokens += len(ids) - 1
            scored = 0  # targets ids[1..scored] are done
            for begin in range(0, len(ids) - 1, stride):
                end = min(begin + self.context, len(ids) - 1)  # this window's last target
                if end > scored:
                    windows.append(_Window(ids[begin:end + 1], scored - begin))
                    scored = end
        if not n_bytes:
            raise EvalDataError(f"{source}: no text to score")
        return TextScore(self._nll(windows).sum().item(), tokens, n_bytes)

    @torch.no_grad()
    def task(self, items: Sequence[Item], source: str = "task") -> TaskScore:
        """Accuracy of ``items`` by summed and by per-byte log-likelihood."""
        prefix = [] if self.eos is None else [self.eos]
        sequences = []
        for n, item in enumerate(items):
            context = prefix + (self._encode(item.context, source).ids if item.context else [])
            for choice in item.choices:
                gap = "" if not item.context or item.context[-1].isspace() or choice[0].isspace() else " "
                continuation = self._encode(gap + choice, source).ids
                if not context or len(continuation) > self.context:
                    raise EvalDataError(f"{source}: item {n + 1} choice {choice[:40]!r}: needs a context and at "
                                        f"most {self.context} tokens of continuation, has {len(continuation)}")
                ids = (context + continuation)[-(self.context + 1):]
                sequences.append(_Window(ids, len(ids) - 1 - len(continuation)))
        nll = self._nll(sequences).tolist()
        scores, acc, acc_norm, k = [], 0, 0, 0
        for item in items:
            ll = tuple(-x for x in nll[k:k + len(item.choices)])
            k += len(item.choices)
            per_byte = [v / len(c.encode("utf-8")) for v, c in zip(ll, item.choices)]
            acc += max(range(len(ll)), key=ll.__getitem__) == item.label
            acc_norm += max(range(len(ll)), key=per_byte.__getitem__) == item.label
            scores.append(ll)
        return TaskScore(acc / len(items), acc_norm / len(items), len(items), tuple(scores))

    def scores(self, texts: dict[str, Sequence[str]], tasks: dict[str, Sequence[Item]],
               stride: int | None = None) -> dict[str, float]:
        """Flat scalars for a log: ``bpb/NAME`` per text set, ``acc/NAME`` and ``acc_norm/NAME`` per task."""
        out: dict[str, float] = {}
        for name, documents in texts.items():
            out[f"bpb/{name}"] = self.text(documents, stride, source=name).bits_per_byte
        for name, items in tasks.items():
            score = self.task(items, source=name)
            out[f"acc/{name}"], out[f"acc_norm/{name}"] = score.acc, score.acc_norm
        return out


def load_evaluator(checkpoint: str | Path, device: torch.device | str = "cpu", batch_size: int = 8) -> Evaluator:
    """An ``Evaluator`` for a checkpoint directory (or the newest under a run), in eval mode."""
    from model.checkpoint import CheckpointError, load_model, resolve_checkpoint

    ckpt = resolve_checkpoint(checkpoint)
    if not (ckpt / "tokenizer.json").is_file():
        raise CheckpointError(f"{ckpt}: no tokenizer.json beside the weights, cannot encode text")
    model = load_model(ckpt, device).eval()
    return Evaluator(model, Tokenizer.from_file(str(ckpt / "tokenizer.json")), model.config.max_seq_len,
                     device, batch_size)


def bits_per_byte(model_dir: str | Path, documents: Sequence[str], stride: int | None = None,
                  batch_size: int = 32) -> float:
    """Bits per byte of ``documents`` under the checkpoint in ``model_dir`` (CPU, fp32)."""
    return load_evaluator(model_dir, "cpu", batch_size).text(documents, stride).bits_per_byte
