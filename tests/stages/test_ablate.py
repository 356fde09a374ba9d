"""`lmforge ablate` (stages/ablate.py): arms as one run whose shared stages run once, equal
token budgets, held-out bits per byte per arm and seed, a re-run that does nothing."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import yaml

from stages import ablate

REPO = Path(__file__).resolve().parents[2]
KJV = REPO / "demo" / "corpus" / "kjv-chapters.jsonl.gz"


def write_project(tmp_path: Path, arms: dict, seeds=(0,), decontaminate=True, tokens=4096) -> Path:
    """A JSONL corpus of KJV chapters (the first 30), a held-out file (two later chapters,
    one of them also planted in the corpus), a base pipeline and an ablation file."""
    lines = gzip.decompress(KJV.read_bytes()).decode().splitlines()
    docs = [json.loads(line) for line in lines[:30]]
    held = [json.loads(line) for line in lines[40:42]]
    (tmp_path / "corpus.jsonl").write_text(
        "".join(json.dumps(d) + "\n" for d in docs + [held[0]]))  # a leak into the crawl
    (tmp_path / "heldout").mkdir()
    for i, doc in enumerate(held):
        (tmp_path / "heldout" / f"h{i}.txt").write_text(doc["text"])
    base = {"name": "base", "stages": {
        "ingest": {"kind": "ingest", "params": {"paths": [str(tmp_path / "corpus.jsonl")]}},
        "short": {"kind": "filter", "inputs": ["ingest"], "params": {"min_words": 5}},
        "long": {"kind": "filter", "inputs": ["short"], "params": {"max_words": 100_000}},
        "tokenizer": {"kind": "train_tokenizer", "inputs": ["long"], "params": {"vocab_size": 300}},
        "tokens": {"kind": "tokenize", "inputs": ["long", "tokenizer"],
                   "params": {"val_fraction": 0.05}},
        "pretrain": {"kind": "pretrain", "inputs": ["tokens"], "params": {"model": {"dim": 8}}},
    }}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    ablation = {"name": "t", "base": "base.yaml", "run_dir": "run",
                "heldout": {"kjv": ["heldout/*.txt"]},
                "proxy": {"model": {"dim": 32, "n_layers": 1, "n_heads": 2, "hidden_dim": 64,
                                    "max_seq_len": 32},
                          "data": {"seq_len": 32},
                          "train": {"batch_size": 4, "lr": 3.0e-3, "warmup_steps": 1,
                                    "eval_every": 0, "log_every": 1, "checkpoint_every": 0}},
                "tokens": tokens, "seeds": list(seeds), "decontaminate": decontaminate,
                "arms": arms}
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump(ablation))
    return path


ARMS = {"default": {}, "raw": {"raw": "ingest"},
        "strict": {"params": {"long": {"max_words": 400}}}}


def test_arms_become_one_run_with_shared_stages_named_once(tmp_path):
    path = write_project(tmp_path, ARMS, seeds=(0, 1), decontaminate=False)
    ablation, config, names, heldout = ablate.build_run(path)
    stages = config["stages"]
    assert config["run_dir"] == str(tmp_path / "run")
    # ingest and short are the same stage in every arm; `long` differs in `strict`
    assert names["default"]["ingest"] == names["raw"]["ingest"] == names["strict"]["ingest"] == "ingest"
    assert names["default"]["short"] == names["strict"]["short"] == "short"
    assert names["default"]["long"] == "long" and names["strict"]["long"] == "long__strict"
    assert stages["long__strict"]["params"] == {"max_words": 400}
    assert stages["long__strict"]["inputs"] == ["short"]
    # raw trains on ingest's documents: nothing after it, its own tokenizer
    assert "short" not in names["raw"] and stages[names["raw"]["tokenizer"]]["inputs"] == ["ingest"]
    assert names["default"]["tokenizer"] == "tokenizer__default"
    assert stages["tokenizer__default"]["inputs"] == ["long"]
    # the base's training tail is replaced: one pretrain per arm and seed, equal budgets
    pretrains = [n for n, s in stages.items() if s["kind"] == "pretrain"]
    assert len(pretrains) == 6 and "pretrain" not in stages
    assert {stages[n]["params"]["train"]["max_steps"] for n in pretrains} == {4096 // (4 * 32)}
    assert sorted(stages[n]["params"]["train"]["seed"] for n in pretrains) == [0, 0, 0, 1, 1, 1]
    assert stages[names["strict"]["tokenizer"]]["params"] == {"vocab_size": 300}  # the base's
    assert heldout == {"kjv": sorted((tmp_path / "heldout").glob("*.txt"))}


def test_decontamination_goes_before_each_arms_tokenizer(tmp_path):
    path = write_project(tmp_path, ARMS)
    _, config, names, heldout = ablate.build_run(path)
    for arm, stage_names in names.items():
        decon = config["stages"][stage_names["decontaminate"]]
        assert decon["kind"] == "decontaminate"
        assert decon["params"]["paths"] == [str(p) for p in heldout["kjv"]]
        assert config["stages"][stage_names["tokenizer"]]["inputs"] == [stage_names["decontaminate"]]


@pytest.mark.parametrize("arms, message", [
    ({"a": {"remove": ["nope"]}}, "arms.a: remove: 'nope' is not a stage of the base"),
    ({"a": {"params": {"nope": {}}}}, "arms.a: params: 'nope' is not a stage of this arm"),
    ({"a": {"raw": "nope"}}, "arms.a: 'nope' is not a stage of this arm"),
    ({"a__b": {}}, "arms: 'a__b'"),
    ({}, "arms: at least one arm"),
])
def test_mistakes_name_the_file_and_the_key(tmp_path, arms, message):
    path = write_project(tmp_path, arms)
    with pytest.raises(ablate.AblationError, match=message.replace("(", r"\(")):
        ablate.build_run(path)


def test_remove_rewires_consumers(tmp_path):
    path = write_project(tmp_path, {"a": {"remove": ["short"]}}, decontaminate=False)
    _, config, names, _ = ablate.build_run(path)
    assert config["stages"][names["a"]["long"]]["inputs"] == ["ingest"]
    assert "short" not in names["a"]


def test_a_subset_of_arms_keeps_the_whole_files_stage_names(tmp_path):
    # `strict2` shares `long__strict` with `strict`; run alone it must find that folder,
    # not commit the same stage again as `long__strict2`
    arms = {**ARMS, "strict2": {"params": {"long": {"max_words": 400}}}}
    path = write_project(tmp_path, arms, decontaminate=False)
    _, whole, all_names, _ = ablate.build_run(path)
    _, config, names, _ = ablate.build_run(path, ["strict2", "raw"])
    assert list(names) == ["raw", "strict2"]  # the file's order
    assert names["strict2"]["long"] == "long__strict" == all_names["strict"]["long"]
    assert names == {arm: all_names[arm] for arm in ("raw", "strict2")}
    used = {n for arm in names.values() for n in arm.values()}
    assert set(config["stages"]) == used
    assert "tokenizer__default" not in config["stages"] and "short" in config["stages"]
    assert all(config["stages"][n] == whole["stages"][n] for n in used)
    with pytest.raises(ablate.AblationError, match=r"no arm named 'nope' \(arms: default, raw"):
        ablate.build_run(path, ["nope"])


def test_two_arms_end_to_end_shared_stages_once_and_a_rerun_is_a_noop(tmp_path, capsys):
    from pipeline.cli import main

    path = write_project(tmp_path, {"default": {}, "raw": {"raw": "ingest"}}, seeds=(0, 1))
    assert main(["ablate", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    run = tmp_path / "run"
    ran = json.loads((run / "run.json").read_text())["stages"]
    assert ran.count("ingest") == 1 and "ingest__raw" not in ran  # one ingest for both arms
    for arm in ("default", "raw"):
        row = summary["arms"][arm]
        assert set(row["seeds"]) == {"0", "1"}
        for seed in row["seeds"].values():
            assert seed["train_tokens"] == 4096 // (4 * 32) * 4 * 32  # the same budget
            assert 0 < seed["kjv"] < 20
        assert row["kjv"]["mean"] == sum(row["kjv"]["values"]) / 2
        assert row["kjv"]["spread"] == max(row["kjv"]["values"]) - min(row["kjv"]["values"])
    # the held-out chapter planted in the corpus was removed before any arm trained on it
    assert summary["arms"]["default"]["composition"]["decontaminate: decontaminate:ngram"] == 1
    assert summary["arms"]["raw"]["composition"] == {"decontaminate: decontaminate:ngram": 1}
    assert summary["arms"]["default"]["docs"] == 30 - summary["arms"]["default"]["composition"].get(
        "short: filter:min_words", 0)
    assert (run / "ablation" / "ablation.html").read_text().count("<table") >= 2

    manifests = {p: p.stat().st_mtime_ns for p in run.glob("*/manifest.json")}
    assert main(["ablate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| default |" in out and "| raw |" in out and "kjv bits/byte" in out
    assert {p: p.stat().st_mtime_ns for p in run.glob("*/manifest.json")} == manifests


INDENTED = ("SCENE II. A Room.\n\n\n\nLEONTES.\nToo hot, too hot!\n"
            "                   Stay your thanks a while,\n  [Exit CURIO.  Music.]\t \n\n"
            "        SONG\n  O, mistress mine, where are you roaming?\n")


def test_collapsed_held_out_text_is_what_extraction_gives_for_the_page():
    from demo.site import _article_page
    from stages.ingest.extract import extract_text

    collapsed = ablate.collapse_whitespace(INDENTED)
    assert collapsed == ("SCENE II. A Room.\n\nLEONTES.\nToo hot, too hot!\nStay your thanks "
                         "a while,\n[Exit CURIO. Music.]\n\nSONG\nO, mistress mine, where are "
                         "you roaming?")
    # the demo site's page of the same text, through the pipeline's extractor
    blocks = [b for b in INDENTED.split("\n\n") if b.strip()]
    page = _article_page({"slug": "p", "title": "Play", "tags": ["fiction"], "date": "1623-11-01",
                          "paragraphs": blocks}, [])
    extracted = extract_text({"engine": "resiliparse"}, page)
    assert collapsed in extracted
    assert ablate.collapse_whitespace(collapsed) == collapsed


def test_a_collapsed_set_is_scored_collapsed_and_decontaminates_once(tmp_path):
    path = write_project(tmp_path, {"default": {}})
    spec = yaml.safe_load(path.read_text())
    (tmp_path / "heldout" / "h0.txt").write_text(INDENTED)
    spec["heldout"] = {"kjv": {"files": ["heldout/*.txt"], "whitespace": "collapse"},
                       "kjv_as_given": ["heldout/h0.txt"]}
    path.write_text(yaml.safe_dump(spec))
    ablation, config, names, heldout = ablate.build_run(path)
    decon = config["stages"][names["default"]["decontaminate"]]
    assert decon["params"]["paths"] == [str(p) for p in heldout["kjv"]]  # h0 once
    docs = ablate.heldout_documents(heldout["kjv"], ablation.heldout["kjv"].whitespace)
    assert docs[0] == ablate.collapse_whitespace(INDENTED) != INDENTED
    assert ablation.heldout["kjv_as_given"].whitespace == "keep"
    assert ablate.heldout_documents(heldout["kjv_as_given"]) == [INDENTED]
    spec["heldout"]["kjv"]["whitespace"] = "squash"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ablate.AblationError, match="heldout.kjv.whitespace: Input should be 'keep' or 'collapse'"):
        ablate.build_run(path)
