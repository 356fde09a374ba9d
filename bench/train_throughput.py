"""Training throughput of a preset on this machine: tokens/s, MFU, peak memory, data-loading share.

    python -m bench.train_throughput configs/tiny.yaml            # CPU
    python -m bench.train_throughput configs/124m.yaml --steps 30  # one GPU

(Run as a module from the repository root: bench/ holds a tokenize.py that would shadow the
standard library's if this file were run as a script.)

Runs real ``Trainer.train_step()`` calls (optimizer, clipping, accumulation, compile and bf16
as the preset says) in a temp directory, without checkpoints or validation. When the preset's
token-shard directory does not exist, random shards with ``--vocab-size`` stand in (throughput
does not depend on token values). MFU is against the GPU's dense bf16 peak; on a CPU, against
the fp32 matmul rate measured here first (so CPU MFU means "share of what this CPU's matmul
reaches", not of a datasheet figure). Prints figures; never passes or fails on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from model.config import load_pretrain_config
from model.token_shards import write_token_shard
from model.hardware import peak_flops_for
from model.trainer import Trainer


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
    write_token_shard(directory / "train-00000.bin", [rng.integers(0, vocab_size, tokens)], vocab_size)
    return directory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default="configs/tiny.yaml")
    parser.add_argument("--steps", type=int, default=20, help="measured optimizer steps")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured first steps (compile, allocator)")
    parser.add_argument("--batch-size", type=int, default=None, help="override train.batch_size")
    parser.add_argument("--batch-tokens", type=int, default=None, help="override train.batch_tokens")
    parser.add_argument("--vocab-size", type=int, default=50304, help="for random shards")
    args = parser.parse_args()

    config = load_pretrain_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if config.data.dir is not None and not Path(config.data.dir).is_dir():
            tokens = 4 * config.data.seq_len * (args.batch_size or config.train.batch_size) * 8
            config.data = dataclasses.replace(config.data, dir=str(random_shards(tmp / "data", args.vocab_size, tokens)))
        overrides = {"out_dir": str(tmp / "run"), "resume": False, "eval_every": 0, "checkpoint_every": 0,
                     "max_steps": args.steps + args.warmup, "log_every": 10**9}
        if args.batch_size:
            overrides["batch_size"] = args.batch_size
        if args.batch_tokens:
            overrides["batch_tokens"] = args.batch_tokens
        config.train = dataclasses.replace(config.train, **overrides)
        trainer = Trainer(config)
        peak = peak_flops_for(trainer.device, config.train.peak_flops)
        peak_source = "datasheet bf16" if peak else "measured fp32 matmul"
        if peak is None:
            peak = cpu_matmul_flops()
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(trainer.device)

        step_times = []
        for i in range(args.warmup + args.steps):
            start = time.perf_counter()
            trainer.train_step()
            if i >= args.warmup:
                step_times.append(time.perf_counter() - start)
        fetch_start = time.perf_counter()
        micro_batches = trainer.grad_accum_steps
        for i in range(micro_batches * 5):
            trainer.train_data.batch(i)
        data_time = (time.perf_counter() - fetch_start) / 5

        step = statistics.median(step_times)
        tokens_per_step = (config.train.batch_size * trainer.grad_accum_steps * config.data.seq_len
                           * trainer.world.world_size)
        tokens_per_s = tokens_per_step / step
        if trainer.device.type == "cuda":
            peak_memory = torch.cuda.max_memory_allocated(trainer.device)
            device = torch.cuda.get_device_name(trainer.device)
        else:
            peak_memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            device = f"cpu ({torch.get_num_threads()} threads)"
        result = {
            "config": args.config, "device": device, "params": trainer.num_params,
            "tokens_per_step": tokens_per_step, "median_step_s": step, "tokens_per_s": tokens_per_s,
            "mfu": trainer.flops_per_token * tokens_per_s / (peak * trainer.world.world_size),
            "peak_flops": peak, "peak_flops_source": peak_source,
            "peak_memory_gib": peak_memory / 2**30, "data_loading_share": data_time / step,
            "compile": config.train.compile, "bf16": trainer.bf16,
        }
        trainer.close()
    print(f"{args.config} on {device}: {result['params'] / 1e6:.2f}M params, {tokens_per_step} tokens/step")
    print(f"  tokens/s        {tokens_per_s:,.0f}  (median of {args.steps} steps, {step * 1000:.1f} ms/step)")
    print(f"  MFU             {result['mfu'] * 100:.1f}%  (peak {peak / 1e12:.3f} TFLOP/s, {peak_source})")
    print(f"  peak memory     {result['peak_memory_gib']:.2f} GiB")
    print(f"  data loading    {result['data_loading_share'] * 100:.2f}% of step time")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
