"""Trainer: schedule, learning, exact resume, NaN guard, logs; checkpoints: atomic, pruned, pickle-free."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from model.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_model,
    load_safetensors,
    load_torch_weights,
)
from model.trainer import Trainer, TrainingHalted, cosine_lr

from .conftest import tiny_run_config, write_shards


def read_log(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]


def test_warmup_then_cosine_to_min_lr():
    lrs = [cosine_lr(s, lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110) for s in range(111)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[60] == pytest.approx(0.55) and lrs[110] == pytest.approx(0.1)


def test_training_lowers_loss_and_logs_every_step(tmp_path):
    data = write_shards(tmp_path / "data")
    config = tiny_run_config(tmp_path / "run", data, max_steps=30, eval_every=15, grad_accum_steps=2, peak_flops=1e12)
    trainer = Trainer(config)
    records = trainer.train()
    log = read_log(tmp_path / "run")
    assert [r["step"] for r in log] == list(range(1, 31))
    assert log == json.loads(json.dumps(records))
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "mfu"} <= set(log[0])
    assert log[0]["tokens"] == 4 * 2 * 32
    assert log[0]["mfu"] == pytest.approx(trainer.flops_per_token * log[0]["tokens_per_s"] / 1e12)
    assert log[-1]["val_loss"] < log[14]["val_loss"] < 4.4  # ln(97) = 4.57 at the start
    assert log[-1]["loss"] < log[0]["loss"] - 1.0


def test_resumed_run_reproduces_the_uninterrupted_losses_exactly(tmp_path):
    data = write_shards(tmp_path / "data")
    straight = Trainer(tiny_run_config(tmp_path / "straight", data, grad_accum_steps=2))
    straight.train()

    first = Trainer(tiny_run_config(tmp_path / "resumed", data, grad_accum_steps=2))
    first.train(stop_at=4)  # checkpoint_every=4: step-00000004 is written, then the "crash"
    # A half-written checkpoint from the crash must be ignored on resume.
    (tmp_path / "resumed" / "checkpoints" / ".tmp-step-00000005-999").mkdir()
    second = Trainer(tiny_run_config(tmp_path / "resumed", data, grad_accum_steps=2))
    assert second.step == 4
    second.train()

    expected = [(r["step"], r["loss"], r["grad_norm"], r.get("val_loss")) for r in read_log(tmp_path / "straight")]
    got = [(r["step"], r["loss"], r["grad_norm"], r.get("val_loss")) for r in read_log(tmp_path / "resumed")]
    assert got == expected
    for name, weight in straight.model.state_dict().items():
        assert torch.equal(weight, second.model.state_dict()[name]), name


def test_non_finite_step_is_skipped_and_repeated_ones_halt(tmp_path):
    data = write_shards(tmp_path / "data")
    trainer = Trainer(tiny_run_config(tmp_path / "run", data, max_bad_steps=3, checkpoint_every=0))
    trainer.train_step()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    forward = trainer.model.forward
    trainer.model.forward = lambda *a, **k: forward(*a, **k) * float("nan")
    record = trainer.train_step()
    assert record["skipped"] and record["step"] == 2
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in before.items())
    trainer.model.forward = forward
    assert "skipped" not in trainer.train_step() and trainer.bad_steps == 0
    trainer.model.forward = lambda *a, **k: forward(*a, **k) * float("inf")
    trainer.train_step()
    trainer.train_step()
    with pytest.raises(TrainingHalted, match="3 consecutive steps had a non-finite loss"):
        trainer.train_step()


def test_checkpoints_keep_the_newest_k_and_load_for_inference(tmp_path):
    data = write_shards(tmp_path / "data")
    trainer = Trainer(tiny_run_config(tmp_path / "run", data, max_steps=12, checkpoint_every=2, keep_checkpoints=2))
    trainer.train()
    root = tmp_path / "run" / "checkpoints"
    assert [p.name for p in list_checkpoints(root)] == ["step-00000010", "step-00000012"]
    assert latest_checkpoint(root).name == "step-00000012"
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp")]
    model = load_model(tmp_path / "run")
    tokens = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        assert torch.equal(model(tokens), trainer.model.eval()(tokens))


class _Payload:
    """Unpickling this writes a file: proof that the loader executed pickled code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payloads_are_refused_without_being_executed(tmp_path):
    marker = tmp_path / "pwned"
    data = write_shards(tmp_path / "data")
    trainer = Trainer(tiny_run_config(tmp_path / "run", data, max_steps=2, checkpoint_every=2))
    trainer.train()
    ckpt = latest_checkpoint(tmp_path / "run" / "checkpoints")

    # A torch.save zip in the safetensors slot.
    torch.save({"weights": _Payload(marker)}, ckpt / "model.safetensors")
    with pytest.raises(UnsafeCheckpointError, match="model.safetensors: holds a pickle payload"):
        load_model(ckpt)
    # A raw pickle.
    (ckpt / "trainer_state.safetensors").write_bytes(pickle.dumps(_Payload(marker), protocol=4))
    with pytest.raises(UnsafeCheckpointError, match="trainer_state.safetensors"):
        Trainer(tiny_run_config(tmp_path / "run", data, max_steps=2))
    # A .bin read through torch.load(weights_only=True).
    torch.save({"w": _Payload(marker)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match="refusing to unpickle"):
        load_torch_weights(tmp_path / "pytorch_model.bin")
    assert not marker.exists()

    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(CheckpointError, match="junk.safetensors: not a readable safetensors"):
        load_safetensors(tmp_path / "junk.safetensors")
    save_file({"w": torch.zeros(2)}, tmp_path / "ok.safetensors")
    assert torch.equal(load_safetensors(tmp_path / "ok.safetensors")["w"], torch.zeros(2))
    assert os.listdir(tmp_path).count("pwned") == 0


@pytest.mark.slow  # inductor compiles C++ kernels: ~25 s on 2 cores
def test_compiled_training_matches_eager_and_saves_plain_names(tmp_path):
    data = write_shards(tmp_path / "data")
    losses = {}
    for compiled in (False, True):
        run = tmp_path / f"compiled-{compiled}"
        trainer = Trainer(tiny_run_config(run, data, compile=compiled, max_steps=4, eval_every=0, checkpoint_every=0))
        losses[compiled] = [r["loss"] for r in trainer.train()]
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
    eager, compiled = load_model(tmp_path / "compiled-False"), load_model(tmp_path / "compiled-True")
    for name, weight in eager.state_dict().items():
        assert torch.allclose(compiled.state_dict()[name], weight, atol=1e-4), name
