"""Writes configs/evals/shakespeare_cloze.jsonl: a small multiple-choice task from real text.

    python -m bench.shakespeare_cloze [--items-per-play 50] [--seed 0] [--out PATH]

The plays are the three that bench/ablation.py holds out of every training corpus
(``HELDOUT_PLAYS``, Project Gutenberg texts in the shared data folder, public domain). An item
is the opening of one speech, the speaker's name line and at least two lines of verse or
prose, ending in a newline; the answer is the speech's next line, and the three distractors
are lines of other speeches of the same play whose UTF-8 length is within 0.8-1.25 times the
answer's, so that length alone says little. The answer's position is drawn at random.
Everything is drawn from ``random.Random(seed)`` over the files in a fixed order: the same
seed writes the same bytes. The shipped file is ``--seed 0 --items-per-play 50`` (150 items,
chance 0.25); ``lmforge eval CKPT --task cloze=configs/evals/shakespeare_cloze.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from bench.ablation import HELDOUT_PLAYS, SHAKESPEARE

OUT = Path(__file__).resolve().parents[1] / "configs" / "evals" / "shakespeare_cloze.jsonl"
SPEAKER = re.compile(r"^[A-Z][A-Z .,'-]*\.$")  # "SIR TOBY.", "FIRST CITIZEN."
MIN_ANSWER_CHARS = 20


def speeches(text: str) -> list[tuple[str, list[str]]]:
    """(speaker line, spoken lines) of every speech; stage directions left out."""
    found = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.strip("\n").splitlines()]
        if len(lines) < 2 or not SPEAKER.match(lines[0]):
            continue
        spoken = [line for line in lines[1:] if line and not line.startswith("[") and "_" not in line]
        found.append((lines[0], spoken))
    return found


def play_items(play: str, count: int, rng: random.Random) -> list[dict]:
    all_speeches = speeches((SHAKESPEARE / f"{play}_gut.txt").read_text(encoding="utf-8"))
    candidates = [(s, k) for s, (_, spoken) in enumerate(all_speeches) for k in range(2, len(spoken))
                  if len(spoken[k]) >= MIN_ANSWER_CHARS]
    items = []
    for s, k in rng.sample(candidates, len(candidates)):
        if len(items) == count:
            break
        speaker, spoken = all_speeches[s]
        answer = spoken[k]
        size = len(answer.encode("utf-8"))
        pool = sorted({line for t, (_, other) in enumerate(all_speeches) if t != s for line in other
                       if 0.8 * size <= len(line.encode("utf-8")) <= 1.25 * size and line != answer})
        if len(pool) < 3:
            continue
        choices = rng.sample(pool, 3)
        label = rng.randrange(4)
        choices.insert(label, answer)
        items.append({"id": f"{play}-{s}-{k}", "context": "\n".join([speaker, *spoken[:k]]) + "\n",
                      "choices": choices, "label": label})
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items-per-play", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    items = [item for play in HELDOUT_PLAYS for item in play_items(play, args.items_per_play, rng)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items), encoding="utf-8")
    print(f"wrote {len(items)} items to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
