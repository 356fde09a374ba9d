"""`lmforge plan`: Chinchilla invariants, shapes the model accepts, CLI output and presets."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from model.cli import register
from model.config import accumulation_steps, load_pretrain_config
from model.llama import ModelConfig, Transformer
from model.hardware import GPUS, gpu_named
from model.plan import PlanError, candidate_shapes, measured_mfu, plan, shape_for

BUDGETS = [0.5, 1, 2, 8, 30, 100, 400, 1000]


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["plan", *argv])
    return args.func(args)


@pytest.mark.parametrize("hours", BUDGETS)
def test_chinchilla_invariants(hours):
    p = plan(hours, "h100")
    # C = 6 N D is the plan's own accounting, exactly.
    assert p["compute_6nd"] == 6 * p["params"] * p["tokens"]
    # D = 20 N up to rounding the tokens to whole optimizer steps.
    assert 20 * p["params"] <= p["tokens"] < 20 * p["params"] + p["batch_tokens"]
    # It fits the budget, and uses most of it (the candidate sizes are a few percent apart).
    assert 0.8 < p["budget_used"] <= 1.0
    assert p["train_flops"] <= p["budget_flops"]
    assert p["wall_hours"] == pytest.approx(p["train_flops"] / (989e12 * 0.4) / 3600)
    # The Chinchilla-optimal size for this compute: N = sqrt(C / 120), counted with 6ND.
    assert p["params"] == pytest.approx((p["compute_6nd"] / 120) ** 0.5, rel=p["batch_tokens"] / p["tokens"])
    assert p["params"] <= (p["budget_flops"] / 120) ** 0.5
    assert p["steps"] * p["batch_tokens"] == p["tokens"]
    assert p["batch_sequences"] == p["micro_batch_per_gpu"] * p["grad_accum_steps"] * p["gpus"]


def test_monotone_in_gpu_hours():
    hours = [0.25 * 1.3 ** i for i in range(30)]
    plans = [plan(h, "a100") for h in hours]
    for key in ("params", "tokens", "budget_flops", "train_flops", "wall_hours"):
        values = [p[key] for p in plans]
        assert values == sorted(values), key
    assert plans[-1]["params"] > 50 * plans[0]["params"]
    # Bigger budgets: larger batches, smaller learning rates (DeepSeek's fits).
    assert plans[-1]["batch_tokens"] > plans[0]["batch_tokens"]
    assert plans[-1]["lr"] < plans[0]["lr"]


def test_faster_gpu_and_higher_mfu_buy_a_bigger_model():
    assert plan(10, "h100")["params"] > plan(10, "a100")["params"]
    assert plan(10, "h100", mfu=0.5)["params"] > plan(10, "h100", mfu=0.3)["params"]
    eight = plan(64, "h100", gpus=8)
    one = plan(64, "h100", gpus=1)
    assert eight["params"] == one["params"]
    assert eight["wall_hours"] == pytest.approx(one["wall_hours"] / 8)


@pytest.mark.parametrize("hours", [0.5, 8, 100])
def test_shape_is_a_valid_llama_and_counts_match_the_model(hours):
    p = plan(hours, "h100", seq_len=1024, vocab_size=8192)
    m = p["model"]
    assert 48 <= m["dim"] / m["n_layers"] <= 96
    assert m["n_heads"] * m["head_dim"] == m["dim"] and m["n_heads"] % m["n_kv_heads"] == 0
    config = ModelConfig(vocab_size=m["vocab_size"], dim=m["dim"], n_layers=m["n_layers"],
                         n_heads=m["n_heads"], n_kv_heads=m["n_kv_heads"], hidden_dim=m["hidden_dim"],
                         max_seq_len=m["max_seq_len"], tie_embeddings=m["tie_embeddings"])
    with torch.device("meta"):
        model = Transformer(config)
    assert model.num_params() == p["params"]
    assert model.flops_per_token(1024) == p["flops_per_token"]


def test_untied_large_shape_counts_match_the_model():
    shape = shape_for(4, 4096, vocab_size=1000)
    assert not shape.tie_embeddings
    config = ModelConfig(vocab_size=1000, dim=4096, n_layers=4, n_heads=shape.n_heads,
                         n_kv_heads=shape.n_kv_heads, hidden_dim=shape.hidden_dim, max_seq_len=64)
    with torch.device("meta"):
        model = Transformer(config)
    assert model.num_params() == shape.params()
    assert model.flops_per_token(64) == shape.flops_per_token(64)


def test_candidates_sorted_and_dense():
    sizes = [s.params() for s in candidate_shapes(32_768)]
    assert sizes == sorted(sizes)
    mid = [n for n in sizes if 1e8 <= n <= 1e10]
    assert max(b / a for a, b in zip(mid, mid[1:])) < 1.1


def test_cuda_device_names_find_their_table_row():
    assert gpu_named("NVIDIA H100 80GB HBM3") is GPUS["h100"]
    assert gpu_named("NVIDIA H100 PCIe") is GPUS["h100-pcie"]
    assert gpu_named("NVIDIA A100-SXM4-40GB") is GPUS["a100-40gb"]
    assert gpu_named("NVIDIA A10") is GPUS["a10"]  # not the A100 row
    assert gpu_named("NVIDIA H200") is GPUS["h200"]
    assert gpu_named("Some Future GPU") is None


def test_bad_arguments():
    with pytest.raises(PlanError, match="unknown gpu"):
        plan(1, "tpu")
    with pytest.raises(PlanError, match="smallest model"):
        plan(1e-9, "h100")
    with pytest.raises(PlanError, match="mfu"):
        plan(1, "h100", mfu=1.5)


def test_json_cli_and_written_preset(tmp_path, capsys):
    preset = tmp_path / "planned.yaml"
    assert run_cli(["--gpu-hours", "8", "--gpu", "h100", "--gpus", "2", "--json",
                    "--write-config", str(preset), "--data-dir", "shards", "--out-dir", "out"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == plan(8, "h100", gpus=2)
    assert {"params", "tokens", "steps", "lr", "wall_hours", "cost_usd", "model"} <= set(printed)
    config = load_pretrain_config(preset)  # the trainer's own strict loader accepts it
    assert config.model.dim == printed["model"]["dim"]
    assert config.train.max_steps == printed["steps"]
    assert config.train.batch_tokens == printed["batch_tokens"]
    assert accumulation_steps(config.train, config.data.seq_len, world_size=2) == printed["grad_accum_steps"]
    assert config.train.peak_flops == 989e12 and config.data.dir == "shards"


def test_text_cli_and_bad_gpu(capsys):
    assert run_cli(["--gpu-hours", "1", "--gpu", "a100", "--mfu", "0.35"]) == 0
    out = capsys.readouterr().out
    assert "tokens/param" in out and "a100" in out and "35%" in out
    with pytest.raises(SystemExit):
        run_cli(["--gpu-hours", "1", "--gpu", "tpu"])


def test_measured_mfu_from_a_trainer_log(tmp_path, capsys):
    log = tmp_path / "log.jsonl"
    # Compile steps are slow and skipped; the median ignores an outlier.
    records = [{"step": i, "mfu": 0.05 if i <= 10 else (0.9 if i == 15 else 0.3)} for i in range(1, 21)]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert measured_mfu(tmp_path) == 0.3
    assert run_cli(["--gpu-hours", "4", "--mfu-from", str(log), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mfu"] == 0.3
    log.write_text(json.dumps({"step": 20, "mfu": None}) + "\n")
    with pytest.raises(PlanError, match="no step"):
        run_cli(["--gpu-hours", "4", "--mfu-from", str(log)])
