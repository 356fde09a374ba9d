"""train_quality_classifier + quality_filter: determinism, held-out quality, exact top percent.

Positives are paragraphs of the King James Bible and Shakespeare (the "reference corpus"),
negatives paragraphs of the CPython documentation and the vim tutorial (the "crawl"), all
from tests/data/filter_docs.jsonl.gz: two real, distinguishable styles of text.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import run

pytest.importorskip("fasttext")

FIXTURE = Path(__file__).parents[2] / "data" / "filter_docs.jsonl.gz"


def paragraphs(prefixes: tuple[str, ...]) -> list[dict]:
    out = []
    with gzip.open(FIXTURE, "rt", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            if not doc["id"].startswith(prefixes):
                continue
            words = doc["text"].split()
            for i in range(0, len(words) - 30, 60):  # 60-word passages
                out.append({"id": f"{doc['id']}#{i}", "text": " ".join(words[i:i + 60])})
    return out


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpora")
    paths = {}
    for name, prefixes in (("reference", ("kjv/", "shakespeare/")), ("crawl", ("pydoc/", "tutor/"))):
        paths[name] = root / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(p) + "\n" for p in paragraphs(prefixes)))
    # the crawl to filter is a mix: mostly low-quality, some text like the reference
    mixed = paragraphs(("pydoc/", "tutor/"))[:300] + paragraphs(("kjv/",))[:100]
    paths["mixed"] = root / "mixed.jsonl"
    paths["mixed"].write_text("".join(json.dumps(p) + "\n" for p in mixed))
    return paths


def config(run_dir: Path, corpora: dict[str, Path], quality_params: dict, seed: int = 0) -> dict:
    ingest = lambda path: {"kind": "ingest", "params": {"paths": [str(path)], "id_field": "id",  # noqa: E731
                                                        "shard_size": 150}}
    return {
        "name": "quality",
        "run_dir": str(run_dir),
        "stages": {
            "reference": ingest(corpora["reference"]),
            "crawl": ingest(corpora["crawl"]),
            "mixed": ingest(corpora["mixed"]),
            "model": {
                "kind": "train_quality_classifier",
                "inputs": ["crawl", "reference"],
                # a few hundred examples need more epochs and a higher rate than fastText's defaults
                "params": {"positive_input": "reference", "seed": seed, "epoch": 25, "lr": 0.5,
                           "dim": 32, "bucket": 100_000,  # a small model, fast to write
                           "holdout_fraction": 0.2},
            },
            "quality": {"kind": "quality_filter", "inputs": ["mixed", "model"],
                        "params": quality_params},
        },
    }


def test_training_is_deterministic_and_beats_chance(tmp_path, corpora):
    run(config(tmp_path / "a", corpora, {"threshold": 0.5}))
    run(config(tmp_path / "b", corpora, {"threshold": 0.5}))
    model_a = (tmp_path / "a" / "model" / "model" / "quality.bin").read_bytes()
    model_b = (tmp_path / "b" / "model" / "model" / "quality.bin").read_bytes()
    assert model_a == model_b  # same seed, same data: the same model, byte for byte
    metrics = json.loads((tmp_path / "a" / "model" / "model" / "metrics.json").read_text())
    assert metrics["held_out"] >= 50
    assert metrics["precision"] >= 0.85 and metrics["recall"] >= 0.85, metrics
    assert metrics["accuracy"] >= 0.85  # chance is about 0.5
    manifest = json.loads((tmp_path / "a" / "model" / "manifest.json").read_text())
    assert manifest["tasks"]["train"]["info"]["precision"] == metrics["precision"]

    # another seed samples, holds out and initialises differently
    run(config(tmp_path / "c", corpora, {"threshold": 0.5}, seed=1))
    assert (tmp_path / "c" / "model" / "model" / "quality.bin").read_bytes() != model_a

    # the threshold filter keeps what scores >= 0.5, and mostly the Bible passages
    kept = [r for s in sorted((tmp_path / "a" / "quality" / "shards").glob("*.parquet"))
            for r in pq.read_table(s).to_pylist()]
    assert all(r["quality_score"] >= 0.5 for r in kept)
    assert sum(r["id"].startswith("kjv/") for r in kept) >= 0.8 * len(kept)


@pytest.mark.parametrize("percent", [10, 25])
def test_top_percent_keeps_exactly_the_best(tmp_path, corpora, percent):
    outcomes = run(config(tmp_path, corpora, {"top_percent": percent}))
    counts = {o.name: o.counts for o in outcomes}["quality"]
    assert counts.n_in == 400
    assert counts.kept == round(400 * percent / 100)
    assert dict(counts.dropped) == {"quality_filter:below_top_percent": 400 - counts.kept}
    stage_dir = tmp_path / "quality"
    kept = [r for s in sorted((stage_dir / "shards").glob("*.parquet")) for r in pq.read_table(s).to_pylist()]
    rejected = [r for s in sorted((stage_dir / "rejected").glob("*.parquet"))
                for r in pq.read_table(s).to_pylist()]
    assert min(r["quality_score"] for r in kept) >= max(r["quality_score"] for r in rejected)
    assert len({Path(s).name for s in (stage_dir / "shards").glob("*.parquet")}) == 3  # 3 shards


def test_config_errors(tmp_path, corpora):
    bad = config(tmp_path, corpora, {"threshold": 0.5})
    bad["stages"]["model"]["params"]["positive_input"] = "nope"
    with pytest.raises(ValueError, match="positive_input 'nope'"):
        run(bad)
    both = config(tmp_path / "x", corpora, {"threshold": 0.5, "top_percent": 3})
    with pytest.raises(ValueError, match="exactly one of threshold and top_percent"):
        run(both)


@pytest.mark.slow
def test_local_and_dask_runs_are_byte_identical(tmp_path, corpora):
    from tests.conftest import shard_bytes

    run(config(tmp_path / "a", corpora, {"top_percent": 20}), executor="local")
    run(config(tmp_path / "b", corpora, {"top_percent": 20}), executor="dask", workers=2)
    for stage in ("model", "quality.scores", "quality.cut", "quality"):  # every phase
        a, b = tmp_path / "a" / stage, tmp_path / "b" / stage
        files = lambda d: {p.relative_to(d).as_posix(): p.read_bytes()  # noqa: E731
                           for p in sorted(d.rglob("*")) if p.is_file() and p.parent != d}
        assert files(a) and files(a) == files(b)
    assert shard_bytes(tmp_path / "a" / "quality") == shard_bytes(tmp_path / "b" / "quality")


def test_positives_from_curated_files(tmp_path, corpora):
    curated = tmp_path / "curated"
    curated.mkdir()
    reference = [json.loads(line) for line in corpora["reference"].read_text().splitlines()]
    (curated / "a.jsonl").write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in reference[:200]))
    for i, r in enumerate(reference[200:260]):
        (curated / f"passage{i:02d}.txt").write_text(r["text"])
    cfg = config(tmp_path / "run", corpora, {"threshold": 0.5})
    cfg["stages"]["model"]["inputs"] = ["crawl"]
    params = cfg["stages"]["model"]["params"]
    del params["positive_input"]
    params["positive_paths"] = [str(curated / "*.jsonl"), str(curated / "*.txt")]
    run(cfg, until="model")
    metrics = json.loads((tmp_path / "run" / "model" / "model" / "metrics.json").read_text())
    assert metrics["positives"] == 260
    assert metrics["accuracy"] >= 0.85
