"""Tensor and pipeline parallelism (with FSDP2) on CPU: gloo, torchrun, a tiny model.

Every layout trains the same global batch as one process, so its per-step losses match the
one-process run to round-off; its checkpoints hold the plain layout, so they load in one
process and resume under another layout. The torchrun runs are slow (process start-up
dominates); one short TP=2 run stays in the default suite.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from model.checkpoint import load_model
from model.config import ParallelConfig, TrainConfigError, load_pretrain_config
from model.parallel import _check_tensor_parallel, deinterleave_parts, interleave_parts
from model.trainer import Trainer

from .conftest import REPO, tiny_model_config, tiny_run_config, write_shards

STEPS = 10
# Global batch: 4 sequences of 32 tokens per step; with dp = 2 each rank reads 2 of them.
LAYOUTS = {
    "tp2": dict(world=2, parallel={"tp": 2}, train={"batch_size": 4}),
    "pp2_1f1b": dict(world=2, parallel={"pp": 2}, train={"batch_size": 4}),
    "pp2_interleaved": dict(world=2, parallel={"pp": 2, "pp_schedule": "interleaved_1f1b", "pp_microbatches": 4},
                            train={"batch_size": 4}, model={"n_layers": 4}),
    "fsdp2_x_tp2": dict(world=4, parallel={"dp": 2, "tp": 2}, train={"batch_size": 2, "parallel": "fsdp"}),
}


def run_config(out_dir: Path, data: Path, steps: int = STEPS, model: dict | None = None, **train):
    fields = dict(max_steps=steps, batch_tokens=128, eval_every=5, checkpoint_every=5, keep_checkpoints=3, batch_size=4)
    config = tiny_run_config(out_dir, data, **{**fields, **train})
    if model:
        config.model = tiny_model_config(vocab_size=None, **model)
    return config


def torchrun(tmp: Path, name: str, config, world: int, parallel: dict, timeout: int = 600) -> list[dict]:
    """Train ``config`` under torchrun with ``world`` processes; returns its log records."""
    raw = dataclasses.asdict(config)
    raw["parallel"].update(parallel)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world),
         "-m", "model.train", str(path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    log = Path(config.train.out_dir) / "log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()]


def assert_same_run(got: list[dict], want: list[dict], name: str) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in want]
    diff = max(abs(g["loss"] - w["loss"]) for g, w in zip(got, want))
    print(f"{name}: max |loss - one-process loss| over {len(got)} steps = {diff:.2e}")
    for g, w in zip(got, want):
        assert g["loss"] == pytest.approx(w["loss"], rel=1e-5, abs=1e-6), name
        assert g["grad_norm"] == pytest.approx(w["grad_norm"], rel=1e-4, abs=1e-6), name
        if w.get("val_loss") is not None:
            assert g["val_loss"] == pytest.approx(w["val_loss"], rel=1e-5), name


def assert_same_weights(checkpoint: Path, model: torch.nn.Module) -> None:
    loaded = load_model(checkpoint).state_dict()
    for name, weight in model.state_dict().items():
        assert torch.allclose(loaded[name], weight, atol=2e-5), name


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("tp_pp") / "data")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, data):
    """name of a model override -> (records, trained model, out_dir) of the one-process run."""
    runs = {}

    def run(model: dict | None = None):
        key = json.dumps(model or {}, sort_keys=True)
        if key not in runs:
            out = tmp_path_factory.mktemp("one")
            trainer = Trainer(run_config(out / "run", data, model=model))
            runs[key] = (trainer.train(), trainer.model, out / "run")
        return runs[key]

    return run


# -- fast: layout helpers and config --------------------------------------------------------


def test_interleaved_rows_give_each_rank_its_own_heads_of_each_part():
    q, k, v = torch.arange(8.0), 100 + torch.arange(4.0), 200 + torch.arange(4.0)
    fused = torch.cat([q, k, v])[:, None]
    reordered = interleave_parts(fused, [8, 4, 4], 2)
    rank0, rank1 = reordered.chunk(2)  # what ColwiseParallel's Shard(0) hands each rank
    assert torch.equal(rank0[:, 0], torch.cat([q[:4], k[:2], v[:2]]))
    assert torch.equal(rank1[:, 0], torch.cat([q[4:], k[2:], v[2:]]))
    assert torch.equal(deinterleave_parts(reordered, [8, 4, 4], 2), fused)


def test_tensor_parallel_refuses_a_model_it_cannot_split():
    with pytest.raises(ValueError, match="n_kv_heads 1"):
        _check_tensor_parallel(tiny_model_config(n_kv_heads=1), tp=2, seq_len=32)
    with pytest.raises(ValueError, match="data.seq_len 33"):
        _check_tensor_parallel(tiny_model_config(), tp=2, seq_len=33)
    _check_tensor_parallel(tiny_model_config(), tp=2, seq_len=32)


def test_parallel_degrees_must_multiply_to_the_world_size(tmp_path):
    assert ParallelConfig(tp=2).degrees(8) == (4, 2, 1)
    assert ParallelConfig(dp=2, tp=2, pp=2).degrees(8) == (2, 2, 2)
    with pytest.raises(TrainConfigError, match=r"dp 2 x tp 2 x pp 1 must equal WORLD_SIZE 2"):
        ParallelConfig(dp=2, tp=2).degrees(2)
    with pytest.raises(TrainConfigError, match=r"WORLD_SIZE 3"):
        ParallelConfig(tp=2).degrees(3)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"data": {"dir": "d"}, "parallel": {"tp": 2, "pp_schedule": "gpipe"}}))
    with pytest.raises(TrainConfigError, match="parallel: pp_schedule must be one of"):
        load_pretrain_config(path)
    path.write_text(yaml.safe_dump({"data": {"dir": "d"}, "parallel": {"tp": 2, "pp": 2}}))
    assert load_pretrain_config(path).parallel == ParallelConfig(tp=2, pp=2)


# -- torchrun ----------------------------------------------------------------------------


def test_tensor_parallel_smoke_two_processes(tmp_path, data):
    """Three steps under TP=2 (sequence parallel norms) match one process."""
    config = run_config(tmp_path / "one", data, steps=3, eval_every=0, checkpoint_every=0)
    expected = Trainer(config).train()
    got = torchrun(tmp_path, "tp2", run_config(tmp_path / "tp2", data, steps=3, eval_every=0, checkpoint_every=0),
                   world=2, parallel={"tp": 2})
    assert_same_run(got, expected, "tp2 smoke")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_layout_matches_one_process_and_its_checkpoint_resumes_in_one(tmp_path, data, one_process, name):
    layout = LAYOUTS[name]
    expected, model, _ = one_process(layout.get("model"))
    out = tmp_path / name
    got = torchrun(tmp_path, name, run_config(out, data, model=layout.get("model"), **layout["train"]),
                   layout["world"], layout["parallel"])
    assert_same_run(got, expected, name)
    assert_same_weights(out, model)

    # The layout's step-5 checkpoint (weights and optimizer state) resumes in one process.
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(out / "checkpoints" / "step-00000005", resumed_dir / "checkpoints" / "step-00000005")
    resumed = Trainer(run_config(resumed_dir, data, model=layout.get("model")))
    assert resumed.step == 5
    assert_same_run(resumed.train(), expected[5:], f"{name} -> one process")


@pytest.mark.slow
def test_checkpoint_of_one_layout_resumes_under_another(tmp_path, data, one_process):
    """One process -> FSDP2 x TP (4 ranks), and TP=2 -> PP=2, from step 5 to 10."""
    expected, model, single_dir = one_process()
    fsdp_tp = tmp_path / "fsdp_tp"
    shutil.copytree(single_dir / "checkpoints" / "step-00000005", fsdp_tp / "checkpoints" / "step-00000005")
    got = torchrun(tmp_path, "fsdp_tp", run_config(fsdp_tp, data, batch_size=2, parallel="fsdp"),
                   world=4, parallel={"dp": 2, "tp": 2})
    assert_same_run(got, expected[5:], "one process -> fsdp2 x tp2")
    assert_same_weights(fsdp_tp, model)

    tp = tmp_path / "tp"
    torchrun(tmp_path, "tp", run_config(tp, data), world=2, parallel={"tp": 2})
    pp = tmp_path / "pp"
    shutil.copytree(tp / "checkpoints" / "step-00000005", pp / "checkpoints" / "step-00000005")
    got = torchrun(tmp_path, "pp", run_config(pp, data), world=2, parallel={"pp": 2})
    assert_same_run(got, expected[5:], "tp2 -> pp2")
    assert_same_weights(pp, model)
