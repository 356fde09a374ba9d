"""Held-out evaluation (model/eval.py): bits per byte, multiple choice, `lmforge eval`, the trainer hook."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model.char_text import char_tokenizer
from model.checkpoint import load_model, resolve_checkpoint
from model.config import DataConfig
from model.eval import EvalDataError, Evaluator, Item, bits_per_byte, load_evaluator, read_task
from model.llama import ModelConfig, Transformer
from model.special_tokens import EOS
from model.trainer import Trainer

from .conftest import HAMLET, REPO, tiny_run_config, write_model_dir
from .test_cli import run_cli

CLOZE = REPO / "configs" / "evals" / "shakespeare_cloze.jsonl"
TEXTS = ["Good night, sweet prince, and flights of angels sing thee to thy rest.",
         "O, that this too too ssolid flesh would melt, thaw, and resolve itself into a dew! " * 12,
         "Naïve café façade — “quoted” ünïcödé."]


def bpe_model_dir(directory: Path, tokenizer, uniform: bool = False, seed: int = 0) -> Path:
    """A tiny model with the chat tokenizer (which has <|eos|>); ``uniform``: all logits zero."""
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                         hidden_dim=64, max_seq_len=48)
    model = Transformer(config)
    if uniform:
        with torch.no_grad():
            model.output.weight.zero_()
    return write_model_dir(directory, model, tokenizer)


def test_uniform_model_costs_log2_vocab_bits_per_token(tmp_path, chat_tokenizer):
    model_dir = bpe_model_dir(tmp_path / "m", chat_tokenizer, uniform=True)
    tokens = sum(len(chat_tokenizer.encode(t, add_special_tokens=False).ids) for t in TEXTS)
    size = sum(len(t.encode("utf-8")) for t in TEXTS)
    assert tokens > 48  # the long document takes several windows
    expected = math.log2(chat_tokenizer.get_vocab_size()) * tokens / size
    assert bits_per_byte(model_dir, TEXTS) == pytest.approx(expected, rel=1e-6)
    evaluator = load_evaluator(model_dir)
    for stride in (48, 20, 1):  # every token scored exactly once, whatever the overlap
        score = evaluator.text(TEXTS, stride)
        assert (score.tokens, score.bytes) == (tokens, size)
        assert score.bits_per_byte == pytest.approx(expected, rel=1e-6)


def test_uniform_char_model_scores_all_but_the_first_character(tmp_path):
    # No <|eos|> to put in front: the first character is context only, its byte not counted.
    chars = sorted(set("".join(TEXTS)))
    tokenizer = char_tokenizer(chars)
    model = Transformer(ModelConfig(vocab_size=len(chars), dim=16, n_layers=1, n_heads=2, max_seq_len=32))
    with torch.no_grad():
        model.output.weight.zero_()
    score = Evaluator(model, tokenizer, 32, "cpu").text(TEXTS)
    assert score.tokens == sum(len(t) - 1 for t in TEXTS)
    assert score.bytes == sum(len(t[1:].encode("utf-8")) for t in TEXTS)
    assert score.bits_per_byte == pytest.approx(math.log2(len(chars)) * score.tokens / score.bytes, rel=1e-6)


def test_windows_side_by_side_match_the_plain_definition(tmp_path, chat_tokenizer):
    # The definition bench/ablation.py used before it imported model/eval.py: <|eos|> + ids,
    # cut every C tokens, each window's cross-entropy summed.
    model_dir = bpe_model_dir(tmp_path / "m", chat_tokenizer)
    model = load_model(model_dir)
    eos, context = chat_tokenizer.token_to_id(EOS), model.config.max_seq_len
    nats = 0.0
    for text in TEXTS:
        ids = [eos, *chat_tokenizer.encode(text, add_special_tokens=False).ids]
        for start in range(0, len(ids) - 1, context):
            window = torch.tensor([ids[start:start + context + 1]])
            nats += F.cross_entropy(model(window[:, :-1])[0], window[0, 1:], reduction="sum").item()
    expected = nats / math.log(2) / sum(len(t.encode("utf-8")) for t in TEXTS)
    assert bits_per_byte(model_dir, TEXTS, batch_size=2) == pytest.approx(expected, rel=1e-5)
    # Overlapping windows give every token more context: a different, finite figure.
    assert load_evaluator(model_dir).text(TEXTS, stride=12).bits_per_byte != pytest.approx(expected, rel=1e-5)


class SuccessorModel(torch.nn.Module):
    """Logits ``boost`` for the id after each input id (mod vocab), 0 elsewhere; ``boost`` 0: uniform."""

    def __init__(self, vocab: int, boost: float) -> None:
        super().__init__()
        self.vocab, self.boost = vocab, boost

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.one_hot((tokens + 1) % self.vocab, self.vocab).float() * self.boost


ALPHABET = list("abc defghijklmnopqrstuvwxyzé")  # ' ' follows 'c', 'd' follows ' '


def test_multiple_choice_picks_the_likeliest_continuation():
    vocab, boost = len(ALPHABET), 5.0
    evaluator = Evaluator(SuccessorModel(vocab, boost), char_tokenizer(ALPHABET), 16, "cpu", batch_size=3)
    items = [Item("abc", ("def", "dxe", "zz"), 0),  # " def" follows the order: the answer
             Item("ab", ("zz", "c de"), 1),  # "c de": the choice is scored as written, after one space
             Item("abc", ("def", "xyz"), 1)]  # labelled wrong on purpose: the model answers 0
    score = evaluator.task(items)
    hi = boost - math.log(math.exp(boost) + vocab - 1)  # log p of the successor
    lo = -math.log(math.exp(boost) + vocab - 1)
    expected = [(4 * hi, 2 * hi + 2 * lo, hi + 2 * lo),
                (3 * lo, 2 * lo + 3 * hi),  # ' ' after 'b' and 'c' after ' ' are not successors
                (4 * hi, 3 * hi + lo)]  # "xyz" is in order after its first letter
    for got, want in zip(score.log_likelihoods, expected):
        assert got == pytest.approx(want, rel=1e-5)
    assert (score.acc, score.acc_norm, score.items) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3)


def test_acc_norm_divides_by_the_bytes_of_the_choice():
    # A uniform model: every token costs log(vocab). Raw sums favour the fewest tokens; per
    # byte, " abcd" (5 tokens, 4 bytes) beats " ab" (3 tokens, 2 bytes), and "éé" (4 bytes)
    # beats "ab" (2 bytes) at the same number of tokens. Ties go to the first choice.
    evaluator = Evaluator(SuccessorModel(len(ALPHABET), 0.0), char_tokenizer(ALPHABET), 16, "cpu")
    score = evaluator.task([Item("x", ("ab", "abcd"), 0), Item("x", ("ab", "abcd"), 1), Item("x", ("ab", "éé"), 1)])
    per_token = -math.log(len(ALPHABET))
    assert score.log_likelihoods[0] == pytest.approx((3 * per_token, 5 * per_token))
    assert score.acc == pytest.approx(1 / 3)  # item 1 only (item 3 is a tie: choice 0)
    assert score.acc_norm == pytest.approx(2 / 3)  # items 2 and 3


def test_task_files_in_lmforge_hellaswag_and_arc_layouts(tmp_path):
    path = tmp_path / "task.jsonl"
    rows = [{"context": "A", "choices": ["b", "c"], "label": 1, "id": "extra keys are ignored"},
            {"ctx": "The man", "endings": ["sits.", "runs.", "flies.", "eats."], "label": "2"},
            {"question": "Which?", "choices": {"text": ["x", "y", "z"], "label": ["A", "B", "C"]}, "answerKey": "C"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert read_task(path) == [Item("A", ("b", "c"), 1), Item("The man", ("sits.", "runs.", "flies.", "eats."), 2),
                               Item("Question: Which?\nAnswer:", ("x", "y", "z"), 2)]
    shipped = read_task(CLOZE)
    assert len(shipped) == 150 and all(len(item.choices) == 4 for item in shipped)


@pytest.mark.parametrize("line, message", [
    ({"context": "A", "choices": ["b", "c"]}, r"bad\.jsonl:2: missing key 'label'"),
    ({"context": "A", "label": 0}, r"bad\.jsonl:2: missing key 'choices'"),
    ({"context": "A", "choices": ["b", "c"], "label": 2}, r"bad\.jsonl:2: label 2 is not an index into the 2"),
    ({"context": "A", "choices": ["b", "c"], "label": True}, r"bad\.jsonl:2: label True"),
    ({"context": "A", "choices": ["b"], "label": 0}, r"bad\.jsonl:2: choices must be a list of at least 2"),
    ("not json", r"bad\.jsonl:2: not valid JSON"),
])
def test_bad_task_file_is_one_line_of_bad_input_naming_file_and_line(tmp_path, chat_tokenizer, capsys, line,
                                                                      message):
    from pipeline.cli import main

    model_dir = bpe_model_dir(tmp_path / "m", chat_tokenizer)
    path = tmp_path / "bad.jsonl"
    good = {"context": "A", "choices": ["b", "c"], "label": 0}
    path.write_text(json.dumps(good) + "\n" + (line if isinstance(line, str) else json.dumps(line)) + "\n")
    with pytest.raises(EvalDataError, match=message):
        read_task(path)
    capsys.readouterr()
    assert main(["eval", str(model_dir), "--task", f"bad={path}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lmforge: bad input: ") and str(path) in err


def test_cli_prints_bits_per_byte_and_accuracy_and_json(tmp_path, chat_tokenizer, capsys):
    model_dir = bpe_model_dir(tmp_path / "m", chat_tokenizer)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    argv = ["eval", str(model_dir), "--text", f"hamlet={HAMLET}", "--text", f"lines={docs}",
            "--task", f"cloze={CLOZE}", "--device", "cpu"]
    assert run_cli(argv) == 0
    out = capsys.readouterr().out
    assert "bits/byte" in out and "acc_norm" in out and "chance 0.2500" in out
    assert run_cli([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    evaluator = load_evaluator(model_dir)
    assert result["text"]["lines"]["bits_per_byte"] == pytest.approx(evaluator.text(TEXTS).bits_per_byte)
    assert result["text"]["hamlet"]["bytes"] == len(HAMLET.read_bytes())
    cloze = evaluator.task(read_task(CLOZE))
    assert (result["tasks"]["cloze"]["acc"], result["tasks"]["cloze"]["acc_norm"]) == (cloze.acc, cloze.acc_norm)
    assert result["tasks"]["cloze"]["items"] == 150 and result["stride"] == 48
    assert f"{result['text']['lines']['bits_per_byte']:.4f} bits/byte" in out


def char_level_config(out_dir: Path, **train):
    config = tiny_run_config(out_dir, out_dir / "unused", **train)
    return dataclasses.replace(config, data=DataConfig(text_files=[str(HAMLET)], seq_len=32))


def test_trainer_logs_held_out_scores_at_their_steps_and_training_lowers_bits_per_byte(tmp_path):
    # Character level on the Hamlet excerpt; the held-out text is its last tenth, the
    # validation split the trainer never trains on.
    text = HAMLET.read_text(encoding="utf-8")
    held_out = tmp_path / "held_out.txt"
    held_out.write_text(text[int(len(text) * 0.9):], encoding="utf-8")
    lines = [line for line in text.splitlines() if len(line) > 20]
    task = tmp_path / "lines.jsonl"
    task.write_text("".join(json.dumps({"context": lines[i] + "\n", "choices": [lines[i + 1], lines[i + 40]],
                                        "label": 0}) + "\n" for i in range(0, 200, 10)))
    trainer = Trainer(char_level_config(tmp_path / "run", max_steps=30, eval_every=0, checkpoint_every=0, lr=3e-3,
                                        min_lr=3e-4, log_every=100, eval_sets_every=12,
                                        eval_text={"hamlet": str(held_out)}, eval_tasks={"lines": str(task)}))
    untrained = trainer.evaluate_sets()
    trainer.train()
    trainer.close()
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    with_scores = [r for r in records if "bpb/hamlet" in r]
    assert [r["step"] for r in with_scores] == [12, 24, 30]
    assert all(0 <= r["acc/lines"] <= 1 and 0 <= r["acc_norm/lines"] <= 1 for r in with_scores)
    final = with_scores[-1]["bpb/hamlet"]
    assert final < untrained["bpb/hamlet"] - 1.0  # an untrained model pays about log2(vocab) per character
    checkpoint = resolve_checkpoint(tmp_path / "run")
    assert bits_per_byte(checkpoint, [held_out.read_text(encoding="utf-8")]) == pytest.approx(final, rel=1e-5)


def test_trainer_refuses_a_bad_task_file_before_training(tmp_path):
    task = tmp_path / "task.jsonl"
    task.write_text('{"context": "a", "choices": ["b", "c"], "label": 5}\n')
    with pytest.raises(EvalDataError, match=r"task\.jsonl:1: label 5"):
        Trainer(char_level_config(tmp_path / "run", eval_tasks={"t": str(task)}))
    assert not (tmp_path / "run" / "log.jsonl").exists()
