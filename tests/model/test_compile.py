"""torch.compile of the blocks and the loss head: no graph break, no recompile, no eager softmax/NLL kernel, same loss.

The fast test traces with the ``aot_eager`` backend (dynamo and AOT autograd, no code
generation), which is where graph breaks and recompiles happen. The slow ones compile a
Trainer's model with inductor, as ``train.compile: true`` does: one reads a profiler trace,
one shards the compiled model with FSDP2 over two CPU processes.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
import torch._dynamo
import yaml
from torch._dynamo.utils import counters
from torch.profiler import ProfilerActivity, profile

from model.llama import Transformer
from model.parallel import compile_model
from model.trainer import Trainer

from .conftest import REPO, tiny_model_config, tiny_run_config, write_shards

# What an eager cross-entropy runs, forward and backward (the positive control checks the names).
EAGER_LOSS_OPS = {"aten::cross_entropy_loss", "aten::log_softmax", "aten::_log_softmax", "aten::nll_loss",
                  "aten::nll_loss_nd", "aten::nll_loss_forward", "aten::_log_softmax_backward_data",
                  "aten::nll_loss_backward"}


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def op_names(step) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return {event.key for event in prof.key_averages()}


def test_compiled_step_has_no_graph_break_no_recompile_and_the_eager_loss(fresh_dynamo):
    torch.manual_seed(0)
    eager = Transformer(tiny_model_config())
    compiled = copy.deepcopy(eager)
    compile_model(compiled, backend="aot_eager")
    for step in range(3):
        tokens = torch.randint(0, 97, (2, 16))
        targets = tokens.roll(-1, dims=1)
        targets[:, -3:] = -100
        losses = [model(tokens, targets) for model in (eager, compiled)]
        for loss in losses:
            loss.backward()
        assert torch.allclose(losses[1], losses[0], rtol=1e-6, atol=1e-6)
        if step == 0:
            # One graph for the blocks (both layers share it) and one for the loss head.
            assert counters["stats"]["unique_graphs"] == 2
    assert counters["stats"]["unique_graphs"] == 2  # steps 2 and 3 reused them: no recompile
    assert dict(counters["graph_break"]) == {}
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        assert torch.allclose(q.grad, p.grad, rtol=1e-5, atol=1e-7), name


@pytest.mark.slow
def test_inductor_trainer_step_runs_the_loss_compiled(tmp_path, fresh_dynamo):
    """Cold, inductor's C++ code generation takes about 90 s on two shared cores."""
    data = write_shards(tmp_path / "data")

    def trainer(name: str, compile: bool) -> Trainer:
        return Trainer(tiny_run_config(tmp_path / name, data, compile=compile, max_steps=3, eval_every=0,
                                       checkpoint_every=0))

    eager, compiled = trainer("eager", False), trainer("compiled", True)
    expected, records = eager.train(), compiled.train()
    assert len(records) == 3
    for got, want in zip(records, expected, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    assert EAGER_LOSS_OPS <= op_names(eager.train_step)  # the names are right
    ops = op_names(compiled.train_step)
    assert any(name.startswith("Torch-Compiled Region") for name in ops)
    assert not EAGER_LOSS_OPS & ops, sorted(EAGER_LOSS_OPS & ops)
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] <= 3  # blocks, loss head, at most one recompile


@pytest.mark.slow
def test_compiled_fsdp_run_matches_one_compiled_process(tmp_path):
    """The loss head takes the root's norm gain and output matrix as inputs, so FSDP2 keeps
    sharding per block plus the root, and two sharded ranks reproduce one process."""
    data = write_shards(tmp_path / "data")
    common = dict(max_steps=3, eval_every=0, checkpoint_every=0, compile=True, log_every=1)
    expected = Trainer(tiny_run_config(tmp_path / "single", data, batch_size=4, **common)).train()
    config = tiny_run_config(tmp_path / "fsdp", data, batch_size=2, parallel="fsdp", **common)
    (tmp_path / "fsdp.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config)))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "model.train", str(tmp_path / "fsdp.yaml")],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "fsdp" / "log.jsonl").read_text().splitlines()]
    assert len(log) == len(expected) == 3
    for got, want in zip(log, expected):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-4)
