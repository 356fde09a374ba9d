"""heuristic_filter presets: each loads and validates, overrides merge as documented, an
unknown name is a config error, and the cache key follows the preset file's contents."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pipeline import run
from pipeline.config import ConfigError, config_from_dict
from pipeline.runner import stage_cache_keys
from stages import stage_class_for
from stages.filters import heuristic_filter
from stages.filters.heuristic_filter import HeuristicFilterParams, preset_names
from tests.stages.filters.test_heuristic_stage import DOCS, write_corpus

DEMO = Path(__file__).parents[3] / "configs" / "demo.yaml"


def resolved(**params) -> HeuristicFilterParams:
    return HeuristicFilterParams.model_validate(params)


def config(tmp_path, params) -> dict:
    corpus = tmp_path / "docs.jsonl"
    if not corpus.exists():  # written once: its modification time is in ingest's cache key
        tmp_path.mkdir(parents=True, exist_ok=True)
        write_corpus(tmp_path)
    return {
        "name": "presets",
        "run_dir": str(tmp_path / "run"),
        "stages": {
            "ingest": {"kind": "ingest", "params": {"paths": [str(corpus)], "id_field": "id"}},
            "clean": {"kind": "heuristic_filter", "inputs": ["ingest"], "params": params},
        },
    }


def clean_key(tmp_path, params) -> str:
    return stage_cache_keys(config_from_dict(config(tmp_path, params), stage_class_for))["clean"]


def test_every_preset_loads_and_validates():
    assert preset_names() == ["c4", "fineweb", "gopher", "lmforge"]
    for name in preset_names():
        params = resolved(preset=name)
        assert params.rule_sets and params.preset == name


def test_presets_say_what_their_recipes_ran():
    fineweb = resolved(preset="fineweb")
    assert fineweb.rule_sets == ["url_blocklist", "gopher_repetition", "gopher_quality", "c4",
                                 "fineweb_quality"]
    # datatrove's examples/fineweb.py: C4QualityFilter(filter_no_terminal_punct=False), no
    # C4BadWordsFilter; every other rule at its default
    assert not fineweb.c4.badwords and not fineweb.c4.filter_no_terminal_punct
    assert fineweb.c4.min_num_sentences == 5 and fineweb.c4.min_words_per_line == 3
    assert fineweb.gopher_quality.alpha_words == "tokens"
    assert fineweb.fineweb_quality.min_line_punct_ratio == 0.12

    gopher = resolved(preset="gopher")
    assert gopher.rule_sets == ["gopher_quality", "gopher_repetition"]
    assert gopher.gopher_quality.alpha_words == "whitespace"

    c4 = resolved(preset="c4")
    assert c4.rule_sets == ["c4"] and c4.c4.badwords and c4.c4.filter_no_terminal_punct

    # lmforge: what configs/demo.yaml runs, FineWeb's rules with the three the ablation
    # showed cost dialogue and verse changed
    demo = yaml.safe_load(DEMO.read_text())["stages"]["heuristics"]["params"]
    assert demo == {"preset": "lmforge"}
    lmforge = resolved(preset="lmforge")
    assert lmforge.rule_sets == fineweb.rule_sets
    assert lmforge.gopher_quality.alpha_words == "whitespace"
    assert lmforge.c4.min_words_per_line is None and not lmforge.c4.badwords
    assert not lmforge.c4.filter_no_terminal_punct
    assert lmforge.fineweb_quality.max_char_dup_ratio is None
    assert lmforge.gopher_repetition == fineweb.gopher_repetition


def test_unknown_preset_is_a_config_error_listing_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"stage 'clean': params\.preset: .*unknown preset "
                                          r"'nope' \(known: c4, fineweb, gopher, lmforge\)"):
        config_from_dict(config(tmp_path, {"preset": "nope"}), stage_class_for)


def test_explicit_params_override_the_preset():
    params = resolved(preset="fineweb", c4={"min_num_sentences": 3},
                      gopher_quality={"min_doc_words": 30})
    # a rule set's block merges key by key: FineWeb's C4 choices stay
    assert params.c4.min_num_sentences == 3
    assert not params.c4.badwords and not params.c4.filter_no_terminal_punct
    assert params.gopher_quality.min_doc_words == 30
    assert params.gopher_quality.max_doc_words == 100_000
    # any other key replaces the preset's value
    assert resolved(preset="fineweb", rule_sets=["c4"]).rule_sets == ["c4"]
    # an override that breaks a rule is reported like any param
    with pytest.raises(ValueError, match="min_num_sentencs"):
        resolved(preset="fineweb", c4={"min_num_sentencs": 3})


def test_presets_decide_through_the_engine(tmp_path):
    outcomes = run(config(tmp_path / "fineweb", {"preset": "fineweb"}))
    fineweb = {o.name: o.counts for o in outcomes}["clean"]
    outcomes = run(config(tmp_path / "c4", {"preset": "c4"}))
    c4 = {o.name: o.counts for o in outcomes}["clean"]
    assert fineweb.n_in == c4.n_in == len(DOCS)
    # FineWeb runs no bad-words filter; C4 drops the page holding one
    assert "c4:badwords" not in fineweb.dropped and c4.dropped["c4:badwords"] == 1


def test_cache_key_hashes_the_resolved_params(tmp_path, monkeypatch):
    presets = tmp_path / "presets"
    shutil.copytree(heuristic_filter.PRESETS, presets)
    monkeypatch.setattr(heuristic_filter, "PRESETS", presets)

    key = clean_key(tmp_path, {"preset": "fineweb"})
    assert key == clean_key(tmp_path, {"preset": "fineweb"})
    # the name is not hashed: a preset and the same params written out share a key
    assert clean_key(tmp_path, resolved(preset="fineweb").model_dump()) == key
    # a comment changes nothing the stage runs with
    path = presets / "fineweb.yaml"
    path.write_text("# edited\n" + path.read_text())
    assert clean_key(tmp_path, {"preset": "fineweb"}) == key
    # a threshold does: the stage re-runs
    path.write_text(path.read_text().replace("min_doc_words: 50", "min_doc_words: 80"))
    assert resolved(preset="fineweb").gopher_quality.min_doc_words == 80
    assert clean_key(tmp_path, {"preset": "fineweb"}) != key


def test_a_broken_preset_file_names_itself(tmp_path, monkeypatch):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "mine.yaml").write_text("rule_sets: [c4]\nc4: {badwordz: false}\n")
    monkeypatch.setattr(heuristic_filter, "PRESETS", presets)
    with pytest.raises(ValueError, match=r"preset 'mine' \(.*mine\.yaml\): c4\.badwordz: Extra"):
        resolved(preset="mine")
