"""Composite stages: expansion at config load, naming rules, errors, a run through phases."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import ConfigError, config_from_dict
from pipeline.documents import Document
from pipeline.executors import LocalExecutor
from pipeline.runner import run_config, stage_cache_keys
from pipeline.stage import CompositeStage, DocStage, Params, Phase, phase_name
from pipeline.status import format_status, run_status
from stages import stage_class_for
from tests.pipeline.conftest import write_corpus


class Tag(DocStage):
    """Appends its `mark` param to the document's `marks` column."""

    class Params(Params):
        mark: str

    kind = "tag"
    score_columns = {"marks": pa.string()}

    def apply(self, doc: Document) -> Document:
        doc.columns["marks"] = doc.columns.get("marks", "") + self.params.mark
        return doc


class TwiceParams(Params):
    first: str = "a"
    second: str = "b"


class Twice(CompositeStage):
    """Two `tag` phases: NAME.first then NAME."""

    kind = "twice"
    Params = TwiceParams

    @classmethod
    def expand(cls, name, params, inputs):
        first = phase_name(name, "first")
        return [Phase(first, "tag", tuple(inputs), {"mark": params.first}),
                Phase(name, "tag", (first,), {"mark": params.second})]


class Misnamed(Twice):
    kind = "misnamed"

    @classmethod
    def expand(cls, name, params, inputs):
        return [Phase(name, "tag", tuple(inputs), {"mark": "x"}),
                Phase(f"{name}_last", "tag", (name,), {"mark": "y"})]


class Unrelated(Twice):
    kind = "unrelated"

    @classmethod
    def expand(cls, name, params, inputs):
        return [Phase("elsewhere", "tag", tuple(inputs), {"mark": "x"}),
                Phase(name, "tag", ("elsewhere",), {"mark": "y"})]


TEST_KINDS = {cls.kind: cls for cls in (Tag, Twice, Misnamed, Unrelated)}


def kinds(kind: str) -> type:
    return TEST_KINDS[kind] if kind in TEST_KINDS else stage_class_for(kind)


def config(tmp_path, **twice):
    corpus = tmp_path / "corpus"
    if not corpus.exists():
        write_corpus(corpus, files=2, docs_per_file=10)
    return {
        "name": "c",
        "run_dir": str(tmp_path / "run"),
        "stages": {
            "after": {"kind": "tag", "inputs": ["both"], "params": {"mark": "z"}},
            "both": {"kind": "twice", "inputs": ["ingest"], "max_error_fraction": 0.5, **twice},
            "ingest": {"kind": "ingest", "params": {"paths": [str(corpus / "*.jsonl")],
                                                    "id_field": "id"}},
        },
    }


def test_composite_expands_into_phases_in_dag_order(tmp_path):
    loaded = config_from_dict(config(tmp_path, params={"second": "B"}), kinds, "c.yaml")
    assert list(loaded.stages) == ["ingest", "both.first", "both", "after"]
    first, last = loaded.stages["both.first"], loaded.stages["both"]
    assert (first.config.kind, first.inputs, first.params.mark) == ("tag", ["ingest"], "a")
    assert (last.config.kind, last.inputs, last.params.mark) == ("tag", ["both.first"], "B")
    assert first.part_of == last.part_of == "both"
    assert loaded.stages["after"].part_of is None
    assert first.config.max_error_fraction == last.config.max_error_fraction == 0.5


def test_phase_cache_keys_equal_the_same_stages_written_by_hand(tmp_path):
    composite = config_from_dict(config(tmp_path), kinds, "c.yaml")
    by_hand = config(tmp_path)
    by_hand["stages"]["both.first"] = {"kind": "tag", "inputs": ["ingest"], "params": {"mark": "a"}}
    by_hand["stages"]["both"] = {"kind": "tag", "inputs": ["both.first"], "params": {"mark": "b"}}
    # Written by hand, the '.' name is refused; the keys are compared with another name.
    by_hand["stages"]["both_first"] = by_hand["stages"].pop("both.first")
    by_hand["stages"]["both"]["inputs"] = ["both_first"]
    hand = stage_cache_keys(config_from_dict(by_hand, kinds, "h.yaml"))
    keys = stage_cache_keys(composite)
    assert keys["both.first"] == hand["both_first"] and keys["both"] == hand["both"]
    assert keys["after"] == hand["after"]


def test_composite_runs_its_phases_and_downstream_reads_the_last(tmp_path):
    loaded = config_from_dict(config(tmp_path), kinds, "c.yaml")
    outcomes = run_config(loaded, LocalExecutor())
    assert [o.name for o in outcomes] == ["ingest", "both.first", "both", "after"]
    marks = pq.read_table(tmp_path / "run" / "after" / "shards").column("marks").to_pylist()
    assert marks == ["abz"] * 20
    status = run_status(tmp_path / "run")
    assert [s["stage"] for s in status["stages"]] == ["ingest", "both.first", "both", "after"]
    assert {s["units"] for s in status["stages"]} == {"documents"}
    manifest = json.loads((tmp_path / "run" / "both.first" / "manifest.json").read_text())
    assert manifest["kind"] == "tag" and manifest["units"] == "documents"
    assert "both.first" in format_status(status)


@pytest.mark.parametrize(("change", "expected"), [
    (lambda s: s["both"].update(params={"secnd": "x"}),
     "c.yaml: stage 'both': params.secnd: unknown key"),
    (lambda s: s["both"].update(params={"first": 3}),
     "c.yaml: stage 'both': params.first: Input should be a valid string"),
    (lambda s: s.update({"my.stage": s.pop("after")}),
     "c.yaml: stage 'my.stage': a stage name may not contain '.'"),
    (lambda s: s["both"].update(kind="misnamed"),
     "c.yaml: stage 'both': kind 'misnamed': its last phase must be named 'both'"),
    (lambda s: s["both"].update(kind="unrelated"),
     "c.yaml: stage 'both': kind 'unrelated': phase name 'elsewhere' is not a unique 'both.PART'"),
    (lambda s: s["both"].update(inputs=["nowhere"]),
     "c.yaml: stage 'both': inputs: 'nowhere' is not a stage in this config"),
])
def test_composite_mistakes_name_file_stage_and_key(tmp_path, change, expected):
    raw = config(tmp_path)
    change(raw["stages"])
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, kinds, "c.yaml")
    assert str(info.value).startswith(expected)
