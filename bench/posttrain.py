"""Post-training figures on the full rasbt/LLMs-from-scratch instruction set, on CPU.

A byte-level BPE tokenizer (the train_tokenizer stage's pre-tokenizer and special tokens)
is trained on the instruction texts; a small Llama starts from random initialisation (no
pretrained base fits this machine's budget), is fine-tuned with SFT on 95% of the 1,100
examples, then aligned with DPO on 95% of the preference pairs.

SFT runs twice in the same process from the same base: padded batches (``--batch``
examples padded to the longest) and packed rows (``data.packing``: ``--batch`` rows of
seq_len, document-masked). The packed run takes as many steps as carry the padded run's
tokens (the same examples seen), so their wall times compare directly. Printed per run:
real (non-padding) tokens per step and the padding share of the batch slots, both over one
epoch of batches; real tokens/s while training; held-out assistant-token loss before/after.
Then held-out DPO loss, reward accuracy, reward margin and chosen-minus-rejected
log-probability margin before/after DPO (from the padded SFT model), with wall time and
tokens/s. Nothing is asserted.

    python -m bench.posttrain [--sft-steps 300] [--dpo-steps 100] [--dim 128] [--layers 4]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import pre_tokenizers, trainers

from model.checkpoint import model_weights
from model.config import TrainConfig
from model.dpo import DPOConfig, DPOSettings, DPOTrainer
from model.llama import ModelConfig, Transformer
from model.posttrain import ChatDataConfig
from model.sft import SFTConfig, SFTTrainer
from stages.tokens.train_tokenizer import BOS, CHAT_TOKENS, EOS, PAD, build_tokenizer

DATA = Path("/work/shared/data/sft")


def base_model(directory: Path, args: argparse.Namespace) -> Path:
    records = json.loads((DATA / "instruction-data-with-preference.json").read_text())
    tokenizer = build_tokenizer("gpt4")
    tokenizer.train_from_iterator(
        [r[k] for r in records for k in ("instruction", "input", "output", "chosen", "rejected") if r[k]],
        trainers.BpeTrainer(vocab_size=args.vocab, special_tokens=[BOS, EOS, PAD, *CHAT_TOKENS], show_progress=False,
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=tokenizer.get_vocab_size(), dim=args.dim, n_layers=args.layers,
                         n_heads=args.dim // 32, max_seq_len=256, tie_embeddings=True)
    model = Transformer(config)
    directory.mkdir(parents=True)
    save_file(model_weights(model, True), directory / "model.safetensors")
    (directory / "model.json").write_text(json.dumps(vars(config)))
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def train(trainer) -> tuple[dict, dict, float, float]:
    before = trainer.evaluate()
    start = time.perf_counter()
    records = trainer.train()
    seconds = time.perf_counter() - start
    after = trainer.evaluate()
    trainer.close()
    tokens_per_s = sum(r["tokens"] - (records[i - 1]["tokens"] if i else 0) for i, r in enumerate(records)) / seconds
    return before, after, seconds, tokens_per_s


def batch_figures(trainer: SFTTrainer) -> tuple[float, float]:
    """(real tokens per step, padding share of the slots) over one epoch of training batches."""
    data, pad_id = trainer.train_data, trainer.template.pad_id
    real = slots = 0
    steps = math.ceil(len(data.examples) / data.batch_size)
    for i in range(steps):
        inputs = data.batch(i)[0]
        real += int((inputs != pad_id).sum())
        slots += inputs.numel()
    return real / steps, 1 - real / slots


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sft-steps", type=int, default=300)
    parser.add_argument("--dpo-steps", type=int, default=100)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8)  # SFT: examples (padded) or rows (packed) per step
    parser.add_argument("--threads", type=int, default=1)  # tiny matmuls: more threads only contend
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-posttrain-"))
    base = base_model(work / "base", args)

    def train_config(out: str, steps: int, lr: float, batch_size: int = 8) -> TrainConfig:
        return TrainConfig(out_dir=str(work / out), batch_size=batch_size, max_steps=steps, lr=lr, min_lr=lr / 10,
                           warmup_steps=10, weight_decay=0.0, eval_every=0, eval_batches=100, log_every=50,
                           checkpoint_every=0, seed=0, device="cpu")

    def sft_trainer(mode: str, steps: int) -> SFTTrainer:
        return SFTTrainer(SFTConfig(init_from=str(base), train=train_config(f"sft-{mode}", steps, 3e-3, args.batch),
                                    data=ChatDataConfig(train_file=str(DATA / "instruction-data.json"), seq_len=256,
                                                        packing=mode == "packed")))

    trainers = {"padded": sft_trainer("padded", args.sft_steps), "packed": sft_trainer("packed", 1)}
    figures = {mode: batch_figures(t) for mode, t in trainers.items()}
    trainers["packed"].close()  # rebuilt with as many steps as carry the padded run's tokens
    trainers["packed"] = sft_trainer("packed", round(args.sft_steps * figures["padded"][0] / figures["packed"][0]))
    params = trainers["padded"].num_params
    sft_runs = {mode: (t.config.train.max_steps, *figures[mode], *train(t)) for mode, t in trainers.items()}
    dpo = DPOTrainer(DPOConfig(init_from=str(work / "sft-padded"), dpo=DPOSettings(beta=0.1),
                               train=train_config("dpo", args.dpo_steps, 1e-4),
                               data=ChatDataConfig(train_file=str(DATA / "instruction-data-with-preference.json"),
                                                   seq_len=256)))
    d_before, d_after, d_seconds, d_tps = train(dpo)

    print(f"\nmodel: {params / 1e6:.2f}M parameters (dim {args.dim}, {args.layers} layers, vocab {args.vocab}), "
          f"{args.threads} CPU threads, SFT seq_len 256, batch {args.batch} (examples padded, rows packed)")
    print(f"{'sft':7} {'steps':>5} {'tokens/step':>11} {'padding':>8} {'seconds':>8} {'tok/s':>7}  "
          f"held-out assistant-token loss before -> after")
    for mode, (steps, per_step, padding, before, after, seconds, tps) in sft_runs.items():
        print(f"{mode:7} {steps:5d} {per_step:11.0f} {padding:8.1%} {seconds:8.1f} {tps:7.0f}  "
              f"{before['val_loss']:.4f} -> {after['val_loss']:.4f}")
    print(f"packed/padded tokens/s: {sft_runs['packed'][-1] / sft_runs['padded'][-1]:.2f}x\n")
    print(f"{'phase':5} {'steps':>5} {'seconds':>8} {'tok/s':>7}  metric (held-out)            before     after")
    for key in ("val_loss", "val_reward_accuracy", "val_reward_margin", "val_logp_margin"):
        lead = f"{'dpo':5} {args.dpo_steps:5d} {d_seconds:8.1f} {d_tps:7.0f}" if key == "val_loss" else " " * 28
        print(f"{lead}  {key[4:]:28} {d_before[key]:9.4f} {d_after[key]:9.4f}")


if __name__ == "__main__":
    main()
