"""Trainer: schedule, learning, exact resume, NaN guard, logs; checkpoints: atomic, pruned, pickle-free."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file
from torch.utils._python_dispatch import TorchDispatchMode

from model.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_model,
    load_safetensors,
    load_torch_weights,
)
from model.data import ShardDataset
from model.llama import Transformer
from model.trainer import Trainer, TrainingHalted, cosine_lr

from .conftest import tiny_model_config, tiny_run_config, write_shards


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
    config = tiny_run_config(tmp_path / "run", data, max_steps=30, eval_every=15, batch_tokens=256, peak_flops=1e12)
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
    straight = Trainer(tiny_run_config(tmp_path / "straight", data, batch_tokens=256))
    straight.train()

    first = Trainer(tiny_run_config(tmp_path / "resumed", data, batch_tokens=256))
    first.train(stop_at=4)  # checkpoint_every=4: step-00000004 is written, then the "crash"
    # A half-written checkpoint from the crash must be ignored on resume.
    (tmp_path / "resumed" / "checkpoints" / ".tmp-step-00000005-999").mkdir()
    second = Trainer(tiny_run_config(tmp_path / "resumed", data, batch_tokens=256))
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
    trainer.train_step()
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in before.items())
    assert trainer.optimizer.state[next(trainer.model.parameters())]["step"] == 1  # AdamW's count too
    first, second = trainer.read_steps()
    assert "skipped" not in first and second["skipped"] and second["step"] == 2 and trainer.bad_steps == 1
    trainer.model.forward = forward
    trainer.train_step()
    assert "skipped" not in trainer.read_steps()[0] and trainer.bad_steps == 0
    trainer.model.forward = lambda *a, **k: forward(*a, **k) * float("inf")
    for _ in range(3):
        trainer.train_step()
    # Checked when the steps are read: the halting window is still logged.
    with pytest.raises(TrainingHalted, match="3 consecutive steps had a non-finite loss"):
        trainer.read_steps()
    assert [r["step"] for r in read_log(tmp_path / "run")] == [1, 2, 3, 4, 5, 6]


def test_a_non_finite_first_step_leaves_no_optimizer_state(tmp_path):
    data = write_shards(tmp_path / "data")
    trainer = Trainer(tiny_run_config(tmp_path / "run", data, checkpoint_every=0))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    forward = trainer.model.forward
    trainer.model.forward = lambda *a, **k: forward(*a, **k) * float("nan")
    trainer.train_step()
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in before.items())
    for p in trainer.model.parameters():
        state = trainer.optimizer.state[p]
        assert state["step"] == 0 and not state["exp_avg"].any() and not state["exp_avg_sq"].any()


def plain_loop_losses(data, steps: int, accum: int, lr: float, min_lr: float, warmup: int) -> list[float]:
    """The training loop the Trainer replaced, written out: same init, data order, schedule,
    AdamW groups, clipping and accumulation; each step's loss read at once."""
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(vocab_size=97))
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))
    batches = ShardDataset(data, "train", seq_len=32, batch_size=4, seed=0)
    losses = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, lr, min_lr, warmup, steps)
        loss_sum = torch.zeros(())
        for _ in range(accum):
            inputs, targets = batches.next_batch()
            loss = model(inputs, targets) / accum
            loss.backward()
            loss_sum += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss_sum.item())
    return losses


def test_trainer_losses_equal_the_plain_loop_over_20_steps(tmp_path):
    data = write_shards(tmp_path / "data")
    trainer = Trainer(tiny_run_config(tmp_path / "run", data, max_steps=20, batch_tokens=256, log_every=7,
                                      eval_every=0, checkpoint_every=0))
    assert trainer.grad_accum_steps == 2
    got = [r["loss"] for r in trainer.train()]
    want = plain_loop_losses(data, steps=20, accum=2, lr=1e-2, min_lr=1e-3, warmup=2)
    assert got == want  # bit for bit on the CPU: the device-side guard and deferred reads change no value
    assert got[-1] < got[0] - 1.0


class HostReads(TorchDispatchMode):
    """Counts every tensor value read to the host: .item(), bool(t), float(t) all end in
    aten._local_scalar_dense; .tolist() and torch.cuda.synchronize are counted by patches."""

    def __init__(self, monkeypatch):
        super().__init__()
        self.count = 0
        tolist, synchronize = torch.Tensor.tolist, torch.cuda.synchronize

        def counted(f):
            def wrapper(*args, **kwargs):
                self.count += 1
                return f(*args, **kwargs)
            return wrapper

        monkeypatch.setattr(torch.Tensor, "tolist", counted(tolist))
        monkeypatch.setattr(torch.cuda, "synchronize", counted(synchronize))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_no_host_reads_inside_train_step_until_the_logging_step(tmp_path, monkeypatch):
    data = write_shards(tmp_path / "data")
    trainer = Trainer(tiny_run_config(tmp_path / "run", data, batch_tokens=256, log_every=4, eval_every=0,
                                      checkpoint_every=0))
    # The CUDA configuration, on the CPU: fused AdamW, which skips a bad step through found_inf.
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in trainer.optimizer.param_groups]
    trainer.optimizer = torch.optim.AdamW(groups, fused=True)
    reads = HostReads(monkeypatch)
    forward = trainer.model.forward
    with reads:
        for step in range(1, 4):
            if step == 2:  # a non-finite step is skipped without a read as well
                trainer.model.forward = lambda *a, **k: forward(*a, **k) * float("nan")
            trainer.train_step()
            trainer.model.forward = forward
            assert reads.count == 0, f"step {step} read a tensor to the host"
        records = trainer.read_steps()
    assert reads.count >= 1  # the counter does see reads: the logging step makes them
    assert [r["step"] for r in records] == [1, 2, 3] and [bool(r.get("skipped")) for r in records] == [0, 1, 0]
    assert all(r["tokens_per_s"] == records[0]["tokens_per_s"] for r in records)  # timed as one window
    assert records[-1]["tokens"] == 3 * 256


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
