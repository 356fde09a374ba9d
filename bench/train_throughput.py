"""Training throughput: our Llama-style model beside nanoGPT's GPT-2, through the same loop.

    python -m bench.train_throughput                               # configs/124m.yaml shapes
    python -m bench.train_throughput --dim 64 --layers 2 --heads 4 --kv-heads 2 \\
        --hidden-dim 192 --seq-len 128 --batch-size 8 --vocab-size 2048 --steps 10   # CPU-sized

(Run as a module from the repository root: bench/ holds a tokenize.py that would shadow the
standard library's if this file were run as a script.)

Two models, each in a fresh process, trained by the lmforge ``Trainer`` (optimizer,
clipping, accumulation, device-side NaN guard, compile and bf16 as the preset says) at the
same batch: ``lmforge``, the preset's model (``--dim`` etc. override its shape), and
``nanogpt``, GPT-2 as nanoGPT publishes it (``bench/gpt2.py``: learned positions,
LayerNorm, GELU MLP, tied weights) with the same width, depth, heads, context and vocabulary.
The GPT-2 is compiled the same way (per block, plus the loss head). For each it prints

- tokens/s over the measured window (``--steps`` optimizer steps after ``--warmup``);
- MFU against the GPU's dense bf16 peak (``model/hardware.py``) or, on a CPU, against the
  fp32 matmul rate measured here first (so CPU MFU means "share of what this CPU's matmul
  reaches", not of a datasheet figure);
- peak memory: CUDA's max allocated, or the process's peak RSS;
- data loading: host time to make one step's batches, as a share of the step (on CUDA the
  copy overlaps the previous step);
- outside compiled: share of the step's op time (device kernels on CUDA, CPU op time on a
  CPU) not under a compiled region, from a profile of two steps;

then the figure: ``lmforge tokens/s / nanogpt tokens/s``. When the preset's token-shard
directory does not exist, random shards of ``--vocab-size`` stand in (throughput does not
depend on token values). Prints figures; never passes or fails on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.gpt2 import GPT2, GPT2Config
from model.config import PretrainConfig, load_pretrain_config
from model.data import describe_shards
from model.hardware import default_device, peak_flops_for
from model.token_shards import write_token_shard
from model.trainer import Trainer

MODELS = ("lmforge", "nanogpt")


class GPT2Trainer(Trainer):
    """The same Trainer, with nanoGPT's GPT-2 in place of our model."""

    def build_model(self) -> torch.nn.Module:
        self.data_dir = self._prepare_data()
        self.tokenizer_path = None
        shape = self.config.model
        config = GPT2Config(vocab_size=describe_shards(self.data_dir)["vocab_size"], block_size=self.config.data.seq_len,
                            n_layers=shape.n_layers, n_heads=shape.n_heads, dim=shape.dim)
        return GPT2(config).to(self.device)


def cpu_matmul_flops(size: int = 1024, seconds: float = 1.0) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * size**3 * n / (time.perf_counter() - start)


def random_shards(directory: Path, vocab_size: int, tokens: int) -> Path:
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    write_token_shard(directory / "train-00000.bin", [rng.integers(0, vocab_size, tokens)], vocab_size)
    return directory


def bench_config(args: argparse.Namespace, tmp: Path) -> PretrainConfig:
    """The preset with the command line's overrides, set up for a measurement run in ``tmp``."""
    config = load_pretrain_config(args.config)
    shape = {"dim": args.dim, "n_layers": args.layers, "n_heads": args.heads, "n_kv_heads": args.kv_heads,
             "hidden_dim": args.hidden_dim}
    model = dataclasses.replace(config.model, **{k: v for k, v in shape.items() if v is not None})
    seq_len = args.seq_len or config.data.seq_len
    model = dataclasses.replace(model, max_seq_len=max(model.max_seq_len, seq_len))
    batch_size = args.batch_size or config.train.batch_size
    data_dir = config.data.dir
    if data_dir is None or not Path(data_dir).is_dir():
        tokens = 4 * seq_len * batch_size * args.micro_batches * (args.steps + args.warmup + 4)
        data_dir = str(random_shards(tmp / "data", args.vocab_size, tokens))
    data = dataclasses.replace(config.data, dir=data_dir, text_files=None, seq_len=seq_len)
    train = {"out_dir": str(tmp / "run"), "resume": False, "eval_every": 0, "checkpoint_every": 0,
             "max_steps": args.steps + args.warmup + 2, "log_every": 10**9, "batch_size": batch_size,
             "batch_tokens": batch_size * seq_len * args.micro_batches, "device": args.device}
    if args.compile is not None:
        train["compile"] = args.compile
    if args.precision is not None:
        train["precision"] = args.precision
    if args.coordinate_descent_tuning:
        train["coordinate_descent_tuning"] = True
    return dataclasses.replace(config, model=model, data=data, train=dataclasses.replace(config.train, **train))


def outside_compiled_share(prof: torch.profiler.profile, device_type: str) -> float:
    """Share of op time (device kernels on CUDA, CPU time otherwise) not under a compiled
    region: forward ``Torch-Compiled Region`` / ``CompiledFunction``, backward
    ``CompiledFunctionBackward``."""
    def compiled(event: Any) -> bool:
        while event is not None:
            if "CompiledFunction" in event.name or event.name.startswith("Torch-Compiled Region"):
                return True
            event = event.cpu_parent
        return False

    attribute = "self_device_time_total" if device_type == "cuda" else "self_cpu_time_total"
    total = inside = 0.0
    for event in prof.events():
        t = getattr(event, attribute)
        total += t
        inside += t if compiled(event) else 0.0
    return 1 - inside / total if total else float("nan")


def measure(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train ``kind`` in this process and return its figures."""
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        config = bench_config(args, Path(tmp))
        trainer = (Trainer if kind == "lmforge" else GPT2Trainer)(config)
        device = trainer.device
        peak = args.peak_flops or peak_flops_for(device, config.train.peak_flops) or cpu_matmul_flops()
        for _ in range(args.warmup):
            trainer.train_step()
        trainer.read_steps()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args.steps):
            trainer.train_step()
        tokens_per_s = trainer.read_steps()[0]["tokens_per_s"]  # the window's clock: all steps, one sync
        tokens_per_step = config.train.batch_tokens
        step_s = tokens_per_step / tokens_per_s

        start = time.perf_counter()
        for i in range(trainer.grad_accum_steps * 3):
            trainer.train_data.batch(i)
        data_s = (time.perf_counter() - start) / 3

        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            trainer.train_step()
            trainer.train_step()
            trainer.read_steps()
        outside = outside_compiled_share(prof, device.type)

        if device.type == "cuda":
            peak_memory = torch.cuda.max_memory_allocated(device)
            device_name = torch.cuda.get_device_name(device)
        else:
            peak_memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            device_name = f"cpu ({torch.get_num_threads()} threads)"
        result = {
            "model": kind, "device": device_name, "params": trainer.num_params,
            "flops_per_token": trainer.flops_per_token, "tokens_per_step": tokens_per_step,
            "step_s": step_s, "tokens_per_s": tokens_per_s,
            "mfu": trainer.flops_per_token * tokens_per_s / (peak * trainer.world.world_size),
            "peak_flops": peak, "peak_memory_gib": peak_memory / 2**30,
            "data_loading_share": data_s / step_s, "outside_compiled_share": outside,
            "compile": config.train.compile, "bf16": trainer.bf16,
        }
        trainer.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default="configs/124m.yaml", help="a pretraining preset")
    parser.add_argument("--dim", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--kv-heads", type=int, help="ours only; GPT-2 has as many as --heads")
    parser.add_argument("--hidden-dim", type=int, help="ours only; GPT-2's MLP is 4 x dim")
    parser.add_argument("--seq-len", type=int)
    parser.add_argument("--batch-size", type=int, help="micro-batch (sequences)")
    parser.add_argument("--micro-batches", type=int, default=1, help="accumulation steps per optimizer step")
    parser.add_argument("--vocab-size", type=int, default=50304, help="for random shards")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"))
    parser.add_argument("--coordinate-descent-tuning", action="store_true",
                        help="inductor searches kernel configs (slower compile)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--steps", type=int, default=20, help="measured optimizer steps")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured first steps (compile, allocator)")
    parser.add_argument("--peak-flops", type=float, help="for MFU (default: the GPU's datasheet bf16 peak; "
                        "on a CPU, the fp32 matmul rate measured here)")
    parser.add_argument("--only", choices=MODELS, help="measure one model in this process, print its JSON")
    args = parser.parse_args()

    if args.only:
        print(json.dumps(measure(args.only, args)))
        return 0
    argv = sys.argv[1:]
    peak_source = "given" if args.peak_flops else "datasheet bf16"
    if args.peak_flops is None and default_device(args.device).type == "cpu":
        # Measured once, so that both models' MFU share one denominator.
        argv += ["--peak-flops", str(cpu_matmul_flops())]
        peak_source = "measured fp32 matmul"
    results = {}
    for kind in MODELS:  # each in its own process: clean peak memory and compile caches
        out = subprocess.run([sys.executable, "-m", "bench.train_throughput", *argv, "--only", kind],
                             capture_output=True, text=True)
        if out.returncode:
            sys.stderr.write(out.stdout[-2000:] + out.stderr[-4000:])
            return out.returncode
        results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    first = results["lmforge"]
    print(f"{args.config} (shape overrides applied) on {first['device']}: {first['tokens_per_step']:,} tokens/step, "
          f"compile {first['compile']}, bf16 {first['bf16']}")
    print(f"{'':24}{'lmforge':>14}{'nanogpt':>14}")
    rows = [("parameters (M)", "params", 1e-6, ".2f"), ("tokens/s", "tokens_per_s", 1, ",.0f"),
            ("step (ms)", "step_s", 1e3, ".1f"), ("MFU (%)", "mfu", 100, ".1f"),
            ("peak memory (GiB)", "peak_memory_gib", 1, ".2f"), ("data loading (%)", "data_loading_share", 100, ".2f"),
            ("outside compiled (%)", "outside_compiled_share", 100, ".1f")]
    for label, key, scale, fmt in rows:
        print(f"{label:24}" + "".join(f"{format(results[k][key] * scale, fmt):>14}" for k in MODELS))
    ratio = results["lmforge"]["tokens_per_s"] / results["nanogpt"]["tokens_per_s"]
    print(f"tokens/s ratio lmforge / nanogpt: {ratio:.3f}  (MFU peak: {first['peak_flops'] / 1e12:.3f} TFLOP/s, "
          f"{peak_source})")
    print(json.dumps({"ratio": ratio, **results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
