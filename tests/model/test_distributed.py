"""DDP and FSDP2 on CPU (gloo, 2 processes via torchrun) match a 1-process run with the same global batch."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from model.checkpoint import load_model
from model.trainer import Trainer

from .conftest import REPO, tiny_run_config, write_shards


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("single")
    data = write_shards(tmp / "data")
    trainer = Trainer(tiny_run_config(tmp / "run", data, batch_size=4, max_steps=4, batch_tokens=256))
    records = trainer.train()
    return data, records, trainer.model


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_process_run_matches_one_process(tmp_path, single_process_run, mode):
    data, expected, single_model = single_process_run
    config = tiny_run_config(tmp_path / "run", data, batch_size=2, max_steps=4, batch_tokens=256, parallel=mode)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(dataclasses.asdict(config)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "model.train", str(config_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    for got, want in zip(log, expected):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5, abs=1e-6)
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-4, abs=1e-6)
        assert (got.get("val_loss") is None) == (want.get("val_loss") is None)
        if want.get("val_loss") is not None:
            assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-5)
    # The checkpoint is a plain full state dict whatever the wrapping, and holds the same weights.
    merged = load_model(tmp_path / "run")
    for name, weight in single_model.state_dict().items():
        assert torch.allclose(merged.state_dict()[name], weight, atol=1e-5), name
