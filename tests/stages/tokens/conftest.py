"""Tokenizer and token-shard test helpers: a multilingual corpus and configs.

The corpus is the vim tutorial excerpts in tests/data/multilingual (16 languages, Latin,
Cyrillic, Greek, CJK and Hangul scripts) cut into paragraphs, plus documents that stress
byte-level BPE: emoji with joiners, combining marks, right-to-left scripts, CRLF and tabs,
an empty document, and text that spells the special tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "data" / "multilingual"

EDGE_TEXTS = [
    "Family: 👨‍👩‍👧‍👦, flags 🇫🇷🇯🇵, skin tone 👋🏽 and a ZWJ sequence.",
    "Combining: e\u0301 vs é, Å vs A\u030a, Hangul jamo \u1100\u1161\u11a8.",
    "RTL: العربية لغة جميلة. עברית גם. Mixed ← arrows → and ‏marks‎.",
    "Windows line\r\nendings\r\n\ttabs\tand   runs of    spaces \u00a0nbsp\u2009thin.",
    "Digits 1234567890 3.14159 1e-9 0xDEADBEEF and math ∑∫√∞ ≠ ≤.",
    "",
    "Spells the specials: <|bos|> <|eos|><|pad|> <|user|>hi<|end|> <|assistant|> <|system|>",
    "Private use \ue000, astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𠜎𠜱, a BOM \ufeff and NUL \x00 inside.",
]


def fixture_texts() -> dict[str, str]:
    """Language code -> the whole fixture text."""
    return {p.name.split(".")[1]: p.read_text(encoding="utf-8") for p in sorted(DATA.glob("tutor.*.txt"))}


def documents() -> list[dict[str, str]]:
    """Every test document as {id, text}: fixture paragraphs, then the edge cases."""
    docs = []
    for lang, text in fixture_texts().items():
        for i, paragraph in enumerate(p for p in text.split("\n\n") if p.strip()):
            docs.append({"id": f"{lang}-{i}", "text": paragraph})
    docs += [{"id": f"edge-{i}", "text": t} for i, t in enumerate(EDGE_TEXTS)]
    return docs


def write_corpus(root: Path, files: int = 3) -> Path:
    """The documents as `files` jsonl files (round-robin); returns the folder."""
    root.mkdir(parents=True, exist_ok=True)
    lines: list[list[str]] = [[] for _ in range(files)]
    for i, doc in enumerate(documents()):
        lines[i % files].append(json.dumps(doc, ensure_ascii=False))
    for f, part in enumerate(lines):
        (root / f"part-{f}.jsonl").write_text("\n".join(part) + "\n", encoding="utf-8")
    return root


def pipeline_config(corpus: Path, run_dir: Path, shard_size: int = 40,
                    tokenizer: dict[str, Any] | None = None,
                    tokenize: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """ingest -> train_tokenizer, then one tokenize stage per entry of `tokenize`
    (stage name -> params)."""
    stages: dict[str, Any] = {
        "ingest": {
            "kind": "ingest",
            "params": {"paths": [str(corpus / "*.jsonl")], "id_field": "id",
                       "shard_size": shard_size},
        },
        "tokenizer": {
            "kind": "train_tokenizer",
            "inputs": ["ingest"],
            "params": {"vocab_size": 600, "heldout_bytes": 4000, **(tokenizer or {})},
        },
    }
    for name, params in (tokenize or {}).items():
        stages[name] = {"kind": "tokenize", "inputs": ["ingest", "tokenizer"], "params": params}
    return {"name": "tok-test", "run_dir": str(run_dir), "stages": stages}
