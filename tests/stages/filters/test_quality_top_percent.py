"""quality_filter with top_percent, spread over workers, against the one-pass computation.

The reference in this file is the plain algorithm: score every document, sort the
(score, id) pairs best first, keep the first round(N * p / 100). The phases
(quality_scores -> quality_cut -> quality_top) must keep exactly that set and write the
bytes the one-pass filter would, for one shard or many, local or dask, on corpora where
many documents share a score, and whether the cut's bin is sorted or merged.

Two kinds of corpus: synthetic shards whose text is the score itself (a number), so the
test places ties and bin edges where it wants, run through the phase classes directly;
and real passages (tests/data/filter_docs.jsonl.gz, each repeated under several ids) run
through the pipeline with a fastText classifier trained in the test.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import run
from pipeline.artifacts import DocShardWriter, read_doc_shard, shard_schema
from pipeline.documents import Document, Rejected, doc_schema, score_columns_of
from pipeline.stage import StageInput, Task
from stages.filters import quality_cut
from stages.filters.quality import SCORE_BINS, QualityScorer
from stages.filters.quality_cut import QualityCut, QualityCutParams
from stages.filters.quality_scores import QualityScores, QualityScoresParams
from stages.filters.quality_top import QualityTop, QualityTopParams
from tests.conftest import shard_bytes

REASON = "quality_filter:below_top_percent"


def one_pass_cut(scored: list[tuple[float, str]], percent: float) -> tuple[float, str] | None:
    """The reference: sort every (score, id) best first; the keep-th pair is the cut."""
    keep = round(len(scored) * percent / 100)
    return sorted(scored, reverse=True)[keep - 1] if keep else None


def write_reference(out: Path, shards: list[Path], scores: dict[str, float],
                    cut: tuple[float, str] | None) -> None:
    """What a one-pass filter writes: each shard's documents with `quality_score`, kept
    when (score, id) >= cut, else rejected, through the engine's shard writer."""
    for shard in shards:
        columns = {**score_columns_of(shard_schema(shard)), "quality_score": pa.float64()}
        writer = DocShardWriter(out, "quality", lambda i, s=shard: f"{s.stem}.parquet", columns)
        for doc in read_doc_shard(shard):
            doc.columns["quality_score"] = scores[doc.id]
            if cut is not None and (scores[doc.id], doc.id) >= cut:
                writer.keep(doc)
            else:
                writer.reject(Rejected(doc, REASON))
        writer.close()


# ---- synthetic scores: the phases run directly, the text is the score ----------------------

class NumberScorer:
    """Stands in for the classifier: a document's score is its text read as a number."""

    settings: dict = {}

    def score(self, text: str) -> float:
        return float(text)


def synthetic_scores(n: int, seed: int = 0) -> list[tuple[str, float]]:
    """(id, score) with heavy ties: a few repeated values, bin edges, 0.0 and 1.0."""
    rng = random.Random(seed)
    values = [0.0, 1.0, 0.5, 0.5 - 1e-12, 3 / SCORE_BINS, 0.999, 0.25]
    values += [round(rng.random(), 2) for _ in range(40)]
    alphabet = "abcXYZ09-é中𝄞"  # ids order by code point, as Python compares them
    ids = set()
    while len(ids) < n:
        ids.add("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))))
    ids = sorted(ids)
    rng.shuffle(ids)
    return [(i, rng.choice(values)) for i in ids]


def write_doc_shards(directory: Path, docs: list[tuple[str, float]], per_shard: int) -> list[Path]:
    (directory / "shards").mkdir(parents=True)
    paths = []
    for start in range(0, len(docs), per_shard):
        rows = [Document(id=i, text=repr(s)).to_row() for i, s in docs[start:start + per_shard]]
        path = directory / "shards" / f"part-{start // per_shard:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=doc_schema({})), path)
        paths.append(path)
    return paths


def run_phases(root: Path, shards: list[Path], percent: float) -> tuple[dict, list[str]]:
    """quality_scores, quality_cut and quality_top as the engine runs them: cut.json, kept ids."""
    def entries(stage_dir: Path, results) -> tuple[str, ...]:
        return tuple(sorted(str(stage_dir / e.path) for r in results for e in r.files))

    docs = StageInput("docs", "ingest", shards[0].parent.parent, tuple(map(str, shards)))
    scorer_dir = root / "q.scores"
    scorer = QualityScores("q.scores", QualityScoresParams(), scorer_dir)
    scorer._scorer = NumberScorer()
    scored = [scorer.run_task(Task(s.stem, (str(s),))) for s in shards]
    assert [r.counts.n_in for r in scored] == [pq.read_metadata(s).num_rows for s in shards]
    scores = StageInput("q.scores", "quality_scores", scorer_dir, entries(scorer_dir, scored))

    cut_stage = QualityCut("q.cut", QualityCutParams(top_percent=percent), root / "q.cut")
    [task] = cut_stage.tasks([scores])
    cut_result = cut_stage.run_task(task)
    cut = StageInput("q.cut", "quality_cut", root / "q.cut", entries(root / "q.cut", [cut_result]))

    top = QualityTop("q", QualityTopParams(), root / "q")
    for task in top.tasks([docs, scores, cut]):
        result = top.run_task(task)
        assert result.counts.balanced()
    summary = json.loads((root / "q.cut" / "meta" / "cut.json").read_text())
    kept = [r["id"] for p in sorted((root / "q" / "shards").glob("*.parquet"))
            for r in pq.read_table(p, columns=["id"]).to_pylist()]
    return summary, kept


@pytest.mark.parametrize("per_shard", [2000, 170])
@pytest.mark.parametrize("merge", [False, True], ids=["sorted-bin", "merged-bin"])
def test_phases_keep_what_sorting_all_scores_keeps(tmp_path, monkeypatch, per_shard, merge):
    if merge:  # a bin too large to sort: the score files are merged a row group at a time
        monkeypatch.setattr(quality_cut, "MAX_SORT_ROWS", 5)
    docs = synthetic_scores(2000)
    shards = write_doc_shards(tmp_path / "docs", docs, per_shard)
    pairs = [(s, i) for i, s in docs]
    by_id = dict(docs)
    straddled = 0
    for n, percent in enumerate([0, 0.04, 1, 12.5, 33.3, 50, 97, 100]):
        summary, kept = run_phases(tmp_path / f"p{n}", shards, percent)
        cut = one_pass_cut(pairs, percent)
        keep = round(len(docs) * percent / 100)
        assert summary["documents"] == len(docs) and summary["keep"] == keep
        assert (tuple(summary["cut"]) if summary["cut"] else None) == cut
        assert len(kept) == keep
        assert set(kept) == {i for _, i in sorted(pairs, reverse=True)[:keep]}
        if cut is not None:
            assert summary["bin_rows"] < len(docs)  # one bin read, not the corpus
            rejected_ties = [i for i, s in docs if s == cut[0] and i not in set(kept)]
            kept_ties = [i for i in kept if by_id[i] == cut[0]]
            if rejected_ties and kept_ties:  # a tie straddles the cut: the ids decide
                assert min(kept_ties) > max(rejected_ties)
                straddled += 1
    assert straddled >= 4  # the corpus tests tie-breaking, not only bin boundaries


def test_sharding_changes_nothing_but_file_names(tmp_path):
    docs = synthetic_scores(900, seed=3)
    one = run_phases(tmp_path / "one", write_doc_shards(tmp_path / "d1", docs, 900), 30)
    many = run_phases(tmp_path / "many", write_doc_shards(tmp_path / "d9", docs, 100), 30)
    assert one[0] == many[0]  # the same cut.json
    assert one[1] == many[1]  # the same kept ids, in corpus order


def test_top_refuses_a_shard_that_changed_after_scoring(tmp_path):
    docs = synthetic_scores(50, seed=5)
    shards = write_doc_shards(tmp_path / "docs", docs, 50)
    run_phases(tmp_path / "r", shards, 10)
    swapped = [Document(id=i, text=repr(s)).to_row() for i, s in [docs[1], docs[0], *docs[2:]]]
    pq.write_table(pa.Table.from_pylist(swapped, schema=doc_schema({})), shards[0])
    inputs = [
        StageInput("docs", "ingest", tmp_path / "docs", (str(shards[0]),)),
        StageInput("q.scores", "quality_scores", tmp_path / "r" / "q.scores",
                   (str(tmp_path / "r" / "q.scores" / "scores" / "part-00000.parquet"),)),
        StageInput("q.cut", "quality_cut", tmp_path / "r" / "q.cut",
                   (str(tmp_path / "r" / "q.cut" / "meta" / "cut.json"),)),
    ]
    top = QualityTop("q", QualityTopParams(), tmp_path / "again")
    [task] = top.tasks(inputs)
    with pytest.raises(ValueError, match="changed after it was scored"):
        top.run_task(task)


# ---- real classifier, real pipeline ----------------------------------------------------------

FIXTURE = Path(__file__).parents[2] / "data" / "filter_docs.jsonl.gz"


def passages(prefixes: tuple[str, ...], limit: int) -> list[dict]:
    import gzip

    out = []
    with gzip.open(FIXTURE, "rt", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            if doc["id"].startswith(prefixes):
                words = doc["text"].split()
                out += [{"id": f"{doc['id']}#{i}", "text": " ".join(words[i:i + 60])}
                        for i in range(0, len(words) - 30, 60)]
    return out[:limit]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A run directory with the classifier trained once, and a corpus full of ties."""
    pytest.importorskip("fasttext")
    root = tmp_path_factory.mktemp("quality_top")
    files = {}
    for name, prefixes, limit in (("reference", ("kjv/", "shakespeare/"), 600),
                                  ("crawl", ("pydoc/", "tutor/"), 600)):
        files[name] = root / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(p) + "\n" for p in passages(prefixes, limit)))
    # 90 passages, each under 5 ids, shuffled: every score is shared by at least 5 documents
    distinct = passages(("pydoc/", "tutor/"), 60) + passages(("kjv/",), 30)
    mixed = [{"id": f"copy{c}/{p['id']}", "text": p["text"]} for p in distinct for c in range(5)]
    random.Random(0).shuffle(mixed)
    files["mixed"] = root / "mixed.jsonl"
    files["mixed"].write_text("".join(json.dumps(p) + "\n" for p in mixed))
    cfg = config(root / "run", files, shard_size=1000, percent=10)
    run(cfg, until="model")
    return {"root": root, "files": files}


def config(run_dir: Path, files: dict, shard_size: int, percent: float) -> dict:
    def ingest(path: Path, size: int = 1000) -> dict:
        return {"kind": "ingest", "params": {"paths": [str(path)], "id_field": "id",
                                             "shard_size": size}}
    return {
        "name": "quality_top",
        "run_dir": str(run_dir),
        "stages": {
            "reference": ingest(files["reference"]),
            "crawl": ingest(files["crawl"]),
            "mixed": ingest(files["mixed"], shard_size),
            "model": {"kind": "train_quality_classifier", "inputs": ["crawl", "reference"],
                      "params": {"positive_input": "reference", "seed": 0, "epoch": 25,
                                 "lr": 0.5, "dim": 32, "bucket": 100_000}},
            "quality": {"kind": "quality_filter", "inputs": ["mixed", "model"],
                        "params": {"top_percent": percent}},
        },
    }


def one_pass(run_dir: Path, percent: float, out: Path) -> tuple[tuple[float, str] | None, dict]:
    """Score every document of `mixed` with the trained model, sort, write what to expect."""
    metrics = json.loads((run_dir / "model" / "model" / "metrics.json").read_text())
    scorer = QualityScorer({"model": str(run_dir / "model" / "model" / "quality.bin"),
                            "label": f"__label__{metrics['labels']['positive']}",
                            "lowercase": metrics["lowercase"]})
    shards = sorted((run_dir / "mixed" / "shards").glob("*.parquet"))
    scores = {d.id: scorer.score(d.text) for s in shards for d in read_doc_shard(s)}
    cut = one_pass_cut([(s, i) for i, s in scores.items()], percent)
    write_reference(out, shards, scores, cut)
    return cut, scores


@pytest.mark.parametrize("executor", ["local", "dask"])
def test_pipeline_matches_the_one_pass_filter(tmp_path, trained, executor):
    run_dir = trained["root"] / "run"  # the model is trained: only mixed and quality run
    kept_by_sharding = {}
    for shard_size, percent in ((1000, 17), (37, 17), (37, 3)):
        outcomes = run(config(run_dir, trained["files"], shard_size, percent),
                       executor=executor, workers=2, force=["quality.scores"])
        ran = {o.name for o in outcomes if o.status == "ran"}
        assert {"quality.scores", "quality.cut", "quality"} <= ran and "model" not in ran
        expected = tmp_path / f"expected-{shard_size}-{percent}"
        cut, scores = one_pass(run_dir, percent, expected)
        n_shards = len(list((run_dir / "mixed" / "shards").glob("*.parquet")))
        assert n_shards == (1 if shard_size == 1000 else 13)
        got = shard_bytes(run_dir / "quality")
        assert got == shard_bytes(expected)  # the same kept set, the same bytes
        kept = {r["id"] for p in (run_dir / "quality" / "shards").glob("*.parquet")
                for r in pq.read_table(p, columns=["id"]).to_pylist()}
        assert len(kept) == round(450 * percent / 100)
        tied = [i for i, s in scores.items() if s == cut[0]]
        assert any(i in kept for i in tied) and any(i not in kept for i in tied)  # ids decide
        kept_by_sharding.setdefault(percent, []).append(kept)
    assert kept_by_sharding[17][0] == kept_by_sharding[17][1]
