"""dpo: one YAML runs pretrain -> sft -> dpo; the DPO stage aligns the SFT stage's model,
commits it, and a re-run of the unchanged config runs nothing."""

from __future__ import annotations

import json

import pytest
import yaml

import pipeline
from pipeline.config import ConfigError, config_from_dict
from stages import stage_class_for

from tests.stages.training.conftest import DATA, TRAIN, pretrained_stages

# The local executor trains in this process: torch on one thread (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


def config(tmp_path, **dpo):
    data = {"train_file": DATA, "max_examples": 80, "seq_len": 128, "val_fraction": 0.2}
    return {
        "name": "p",
        "run_dir": str(tmp_path / "run"),
        "stages": {
            **pretrained_stages(),
            "sft": {"kind": "sft", "inputs": ["lm"], "params": {
                "preset": "configs/sft.yaml", "data": {**data, "packing": True},
                "train": {**TRAIN, "max_steps": 6, "eval_every": 0}}},
            "dpo": {"kind": "dpo", "inputs": ["sft"], "params": {
                "preset": "configs/dpo.yaml", "data": data, "dpo": {"beta": 0.5},
                "train": {**TRAIN, "lr": 1e-3, "max_steps": 6, "eval_every": 3}, **dpo}},
        },
    }


def test_pretrain_sft_dpo_from_one_config(tmp_path):
    outcomes = pipeline.run(config(tmp_path))
    assert [o.status for o in outcomes] == ["ran"] * 6
    stage = tmp_path / "run" / "dpo"
    manifest = json.loads((stage / "manifest.json").read_text())
    info = manifest["tasks"]["dpo"]["info"]
    assert info["steps"] == 6 and info["train_examples"] == 64
    # Policy == reference at step 0 (held-out loss log 2): it falls below, and keeps falling.
    assert info["final_val_loss"] < info["first_val_loss"] < 0.693147
    assert info["final_val_reward_margin"] > 0 and info["final_val_reward_accuracy"] > 0.5
    committed = sorted(f["path"] for f in manifest["tasks"]["dpo"]["files"])
    assert committed == ["model/model.json", "model/model.safetensors", "model/tokenizer.json", "train_log.jsonl"]
    assert manifest["report_files"]["training_log"][0] == "train_log.jsonl"
    # The model moved away from the SFT model it started from, which stays as committed.
    sft_weights = (tmp_path / "run" / "sft" / "model" / "model.safetensors").read_bytes()
    dpo_weights = (stage / "model" / "model.safetensors").read_bytes()
    assert dpo_weights != sft_weights
    log = [json.loads(line) for line in (stage / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 7)) and "reward_margin" in log[-1]

    # Unchanged config: nothing runs, nothing is rewritten. A new beta re-runs dpo alone.
    assert [o.status for o in pipeline.run(config(tmp_path))] == ["skipped"] * 6
    assert (stage / "model" / "model.safetensors").read_bytes() == dpo_weights
    again = pipeline.run(config(tmp_path, dpo={"beta": 0.1}))
    assert [o.status for o in again] == ["skipped"] * 5 + ["ran"]


def test_dpo_reference_is_the_upstream_model(tmp_path):
    bad = config(tmp_path, dpo={"reference": "elsewhere/model"})
    with pytest.raises(ConfigError, match=r"stage 'dpo'.*dpo.reference is set by the stage"):
        config_from_dict(bad, stage_class_for)
    bad = config(tmp_path)
    bad["stages"]["dpo"]["params"]["data"]["packing"] = True
    with pytest.raises(ConfigError, match=r"stage 'dpo'.*data.packing is for SFT"):
        config_from_dict(bad, stage_class_for)


def test_posttrain_config_loads():
    raw = yaml.safe_load(open("configs/posttrain.yaml"))
    loaded = config_from_dict(raw, stage_class_for)
    kinds = [loaded.stages[name].stage_class.kind for name in ("pretrain", "sft", "dpo")]
    assert kinds == ["pretrain", "sft", "dpo"]


def test_on_an_object_store_checkpoints_are_uploaded(tmp_path, monkeypatch):
    fsspec = pytest.importorskip("fsspec")
    # The trainer's local scratch is named after the stage URL: keep it out of other runs'.
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    memory = fsspec.filesystem("memory")
    root = f"/{tmp_path.name}"
    run = config(tmp_path)
    run["run_dir"] = f"memory://{root}"
    run["stages"]["dpo"]["params"]["train"]["checkpoint_every"] = 3
    try:
        assert [o.status for o in pipeline.run(run)] == ["ran"] * 6
        files = {p.removeprefix(f"{root}/dpo/") for p in memory.find(f"{root}/dpo")}
        assert {"model/model.safetensors", "model/model.json", "model/tokenizer.json", "train_log.jsonl",
                "train/checkpoints/step-00000003.done", "train/checkpoints/step-00000006.done",
                "train/checkpoints/step-00000006/model.safetensors"} <= files
        assert [o.status for o in pipeline.run(run)] == ["skipped"] * 6
    finally:
        memory.rm(root, recursive=True)
