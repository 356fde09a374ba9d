"""`lmforge stages [KIND]` and `lmforge schema` (pipeline/describe.py), with the program's
registry handed in as pipeline/cli.py does: one line per kind, every parameter with its
type, default and source comment, and a JSON Schema that accepts the shipped pipeline
configs and rejects a typo'd param or an unknown kind."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import Field

from pipeline import describe
from pipeline.config import ConfigError
from pipeline.stage import Params
from stages import STAGE_KINDS, stage_class_for

REPO = Path(__file__).resolve().parents[2]


class Inner(Params):
    depth: int = 2  # how deep


class Outer(Params):
    # Said above the field,
    # over two lines.
    size: int = Field(default=3, ge=1)
    name: str | None = None  # trailing wins over nothing above

    inner: Inner = Inner()
    plain: list[str] = []
    told: int = Field(default=0, description="from pydantic")  # not this


class Child(Outer):
    extra: bool = True  # added by the child


def test_field_comments_come_from_the_defining_class():
    assert describe.field_comments(Child) == {
        "size": "Said above the field, over two lines.",
        "name": "trailing wins over nothing above",
        "inner": "", "plain": "", "told": "not this",
        "extra": "added by the child",
    }
    docs = {d.key: d for d in describe.param_docs(Child)}
    assert docs["size"].type == "int (>= 1)" and docs["size"].default == "3"
    assert docs["name"].type == "str | null" and docs["name"].default == "null"
    assert docs["told"].description == "from pydantic"
    assert docs["depth"].depth == 1 and docs["depth"].description == "how deep"


def test_stages_lists_every_kind_with_one_line():
    text = describe.list_kinds(STAGE_KINDS, stage_class_for)
    lines = {line.split()[0]: line for line in text.splitlines()[:len(STAGE_KINDS)]}
    assert list(lines) == list(STAGE_KINDS)
    assert "polite web crawler" in lines["crawl"]
    assert "[composite]" in lines["minhash_dedup"] and "[composite]" not in lines["langid"]
    assert not any(line.split(None, 1)[1].startswith("`") for line in lines.values())


def test_stages_kind_shows_types_defaults_comments_and_nested_keys():
    crawl = describe.describe_kind("crawl", stage_class_for)
    assert "  max_pages: int (>= 1); default 1000\n      page requests; robots.txt" in crawl
    assert "  contact_url: str (matches ^https?://); required" in crawl
    assert "Hosts (and their subdomains) in scope" in crawl  # a comment above the field

    heuristics = describe.describe_kind("heuristic_filter", stage_class_for)
    assert "  gopher_quality: mapping; default (below)\n    min_doc_words: int | null; default 50" \
        in heuristics
    assert "'#' and ellipses per word" in heuristics

    dedup = describe.describe_kind("minhash_dedup", stage_class_for)
    assert "composite" in dedup and "words per shingle" in dedup  # inherited from a phase
    with pytest.raises(KeyError, match="unknown stage kind"):
        describe.describe_kind("extrakt", stage_class_for)


def pipeline_configs() -> list[Path]:
    return [p for p in sorted((REPO / "configs").glob("*.yaml"))
            if "stages" in (yaml.safe_load(p.read_text()) or {})]


def test_schema_checks_configs_by_kind():
    schema = describe.config_schema(STAGE_KINDS, stage_class_for)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    validator = jsonschema.Draft202012Validator(schema)
    configs = pipeline_configs()
    assert REPO / "configs" / "demo.yaml" in configs
    for path in configs:
        assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == [], path

    demo = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    demo["stages"]["langid"]["params"]["min_scor"] = 0.5  # a typo in one kind's params
    errors = list(validator.iter_errors(demo))
    assert [list(e.absolute_path) for e in errors] == [["stages", "langid", "params"]]
    assert "min_scor" in errors[0].message

    demo = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    demo["stages"]["text"]["kind"] = "extrakt"
    demo["stages"]["dedup"]["params"]["threshold"] = "high"  # the wrong type, by kind
    demo["stages"]["bad/name"] = {"kind": "pii"}
    paths = sorted(tuple(e.absolute_path) for e in validator.iter_errors(demo))
    assert ("stages", "text", "kind") in paths
    assert ("stages", "dedup", "params", "threshold") in paths
    assert any(e.instance == "bad/name" for e in validator.iter_errors(demo))  # stage name

    # Every kind's params live in $defs under a name of their own, nested models too.
    defs = schema["$defs"]
    assert {f"{k}.params" for k in STAGE_KINDS} <= set(defs)
    assert "heuristic_filter.GopherQualityParams" in defs
    assert defs["crawl.params"]["properties"]["max_pages"]["description"].startswith("page requests")


def test_commands(capsys, tmp_path):
    parser = argparse.ArgumentParser()
    describe.register(parser.add_subparsers(), STAGE_KINDS, stage_class_for)
    for argv in (["stages"], ["stages", "pii"]):
        args = parser.parse_args(argv)
        assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "langid" in out and "emails: bool; default true" in out
    args = parser.parse_args(["stages", "nope"])
    with pytest.raises(ConfigError, match="unknown stage kind 'nope'"):
        args.func(args)
    args = parser.parse_args(["schema", "--out", str(tmp_path / "s.json")])
    assert args.func(args) == 0
    assert "pii.params" in json.loads((tmp_path / "s.json").read_text())["$defs"]
