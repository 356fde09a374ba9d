"""Our rule sets decide like datatrove's filter classes on a shared fixture of real documents.

The fixture (tests/data/filter_docs.jsonl.gz) holds 200 real documents: CPython
documentation pages extracted from HTML, Shakespeare scenes, King James Bible chapters and
vim tutorial lessons in 16 languages. datatrove splits words with spaCy, we with
`stages.filters.text.split_words`; where the two disagree on a word the scores can differ, so
the decisions must agree on at least 98% of documents here (bench/filters.py measures the
same on 3,000 documents).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from pipeline.documents import Document
from stages.filters.heuristic_filter import HeuristicFilter, HeuristicFilterParams

pytest.importorskip("spacy")
filters = pytest.importorskip("datatrove.pipeline.filters")

FIXTURE = Path(__file__).parents[2] / "data" / "filter_docs.jsonl.gz"


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    with gzip.open(FIXTURE, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


REFERENCES = {
    "gopher_quality": "GopherQualityFilter",
    "gopher_repetition": "GopherRepetitionFilter",
    "c4": "C4QualityFilter",
    "fineweb_quality": "FineWebQualityFilter",
}


@pytest.fixture(scope="module")
def datatrove_keeps(docs) -> dict[str, list[bool]]:
    """datatrove's keep/drop per rule set; document by document, so that its word-split
    cache (keyed by the text) serves every filter after the first."""
    from datatrove.data import Document as DTDocument

    references = {name: getattr(filters, cls)() for name, cls in REFERENCES.items()}
    decisions: dict[str, list[bool]] = {name: [] for name in references}
    for d in docs:
        for name, reference in references.items():
            result = reference.filter(DTDocument(text=d["text"], id=d["id"]))
            decisions[name].append(result is True or (isinstance(result, tuple) and result[0]))
    return decisions


def our_keeps(rule_set: str, docs: list[dict], **params) -> list[bool]:
    stage = HeuristicFilter(
        "h", HeuristicFilterParams(rule_sets=[rule_set], **({rule_set: params} if params else {})),
        None,
    )
    return [isinstance(stage.apply(Document(id=d["id"], text=d["text"])), Document) for d in docs]


@pytest.mark.parametrize(
    "rule_set, params",
    [
        ("gopher_quality", {}),
        ("gopher_repetition", {}),
        ("c4", {"badwords": False}),  # datatrove's bad-words filter is a separate class
        ("fineweb_quality", {}),
    ],
)
def test_decisions_agree_with_datatrove(docs, datatrove_keeps, rule_set, params):
    theirs = datatrove_keeps[rule_set]
    ours = our_keeps(rule_set, docs, **params)
    agree = sum(a == b for a, b in zip(theirs, ours)) / len(docs)
    assert agree >= 0.98, f"{rule_set}: {agree:.1%} identical decisions"
    # The fixture exercises both outcomes, so agreement is not trivially "keep everything".
    assert 0 < sum(ours) < len(docs)
