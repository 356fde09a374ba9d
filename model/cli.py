"""The model's subcommands of the ``lmforge`` console script.

    train CONFIG                      pretrain (also: torchrun ... -m model.train CONFIG)
    generate CKPT --prompt TEXT       sample a continuation, streamed
    export-hf CKPT OUT / import-hf HF_DIR OUT
    sft CONFIG / dpo CONFIG           post-train a checkpoint
    chat CKPT                         talk to a fine-tuned checkpoint
    eval CKPT --text NAME=PATH --task NAME=PATH.jsonl
                                      held-out bits per byte, multiple-choice accuracy (model/eval.py)
    plan --gpu-hours H --gpu h100     size a run for a budget (model/plan.py)
    inspect-shards DIR                what a folder of token shards holds (model/inspect_shards.py)

``register(subparsers)`` adds them to an ``argparse`` subparsers object; each command
function takes the parsed args and returns 0, or raises. The commands catch nothing: the
program's entry point owns the one error policy, and ``BAD_INPUT`` lists the exception
types that mean bad input (a config, a checkpoint, token shards, a prompt, a missing file)
rather than a failure while running. Imports are inside the commands, so registering them
does not import torch and ``lmforge status`` stays quick.

``chat`` is a prompt loop: each line typed is a user turn, the reply streams as it is
sampled and stops at ``<|end|>``; the conversation is kept, and the oldest turns are
dropped when it no longer fits the model's context. Empty line or end of input quits;
``/reset`` starts over.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _bad_input_types() -> tuple[type[BaseException], ...]:
    from model.chat import ChatDataError
    from model.checkpoint import CheckpointError
    from model.config import TrainConfigError
    from model.eval import EvalDataError
    from model.generate import PromptError
    from model.hf import HFConversionError
    from model.plan import PlanError
    from model.token_shards import TokenShardError

    return (TrainConfigError, CheckpointError, TokenShardError, HFConversionError, ChatDataError, PromptError,
            PlanError, EvalDataError, FileNotFoundError)


def __getattr__(name: str):
    # BAD_INPUT is computed on first use: the types live in modules that import torch.
    if name == "BAD_INPUT":
        return _bad_input_types()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _train(args: argparse.Namespace) -> int:
    from model.train import run

    run(args.config, args.localize)
    return 0


def _load_for_sampling(checkpoint: str):
    """(checkpoint dir, model on the default device) of a checkpoint that has its tokenizer."""
    from model.checkpoint import CheckpointError, load_model, resolve_checkpoint
    from model.hardware import default_device

    ckpt = resolve_checkpoint(checkpoint)
    if not (ckpt / "tokenizer.json").is_file():
        raise CheckpointError(f"{ckpt}: no tokenizer.json beside the weights, cannot encode a prompt")
    return ckpt, load_model(ckpt, default_device())


def _generate(args: argparse.Namespace) -> int:
    from tokenizers import Tokenizer

    from model.generate import continuation, encode_prompt, stream_text
    from model.special_tokens import EOS

    ckpt, model = _load_for_sampling(args.checkpoint)
    tokenizer = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    ids = continuation(model, encode_prompt(tokenizer, args.prompt), args.max_new_tokens, args.temperature,
                       args.top_k, args.top_p, stop_ids=[tokenizer.token_to_id(EOS)], seed=args.seed)
    sys.stdout.write(args.prompt)
    for piece in stream_text(tokenizer, ids):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _chat(args: argparse.Namespace) -> int:
    from model.chat import ChatTemplate
    from model.generate import continuation, stream_text

    ckpt, model = _load_for_sampling(args.checkpoint)
    template = ChatTemplate.from_file(ckpt / "tokenizer.json")
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict[str, str]] = []
    interactive = sys.stdin.isatty()
    seed = args.seed  # reply n samples with seed + n: a session replays exactly
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            break
        if not line.strip():
            break
        if line.strip() == "/reset":
            history = []
            continue
        history.append({"role": "user", "content": line})
        prompt = template.prompt_ids(system + history)
        # Keep room for the reply: drop the oldest exchanges until the prompt fits.
        while len(prompt) + args.max_new_tokens > model.config.max_seq_len and len(history) > 1:
            history = history[2:]
            prompt = template.prompt_ids(system + history)
        if len(prompt) >= model.config.max_seq_len:
            print(f"the message takes {len(prompt)} tokens, the model's context is "
                  f"{model.config.max_seq_len}; say less", file=sys.stderr)
            history.pop()
            continue
        reply = ""
        ids = continuation(model, prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                           stop_ids=template.stop_ids, seed=seed)
        for piece in stream_text(template.tokenizer, ids):
            sys.stdout.write(piece)
            sys.stdout.flush()
            reply += piece
        sys.stdout.write("\n")
        history.append({"role": "assistant", "content": reply})
        seed += 1
    return 0


def _eval(args: argparse.Namespace) -> int:
    from model.eval import EvalDataError, load_evaluator, named_paths, read_task, read_text_set
    from model.hardware import default_device

    text_paths, task_paths = named_paths(args.text), named_paths(args.task)
    if not text_paths and not task_paths:
        raise EvalDataError("nothing to evaluate: give --text NAME=PATH and/or --task NAME=PATH.jsonl")
    texts = {name: read_text_set(path) for name, path in text_paths.items()}
    tasks = {name: read_task(path) for name, path in task_paths.items()}
    evaluator = load_evaluator(args.checkpoint, default_device(args.device), args.batch_size)
    if args.stride is not None and args.stride > evaluator.context:
        raise EvalDataError(f"--stride {args.stride} exceeds the model's context of {evaluator.context} tokens")
    stride = args.stride or evaluator.context
    model = evaluator.model
    result: dict[str, Any] = {"checkpoint": str(args.checkpoint), "parameters": model.num_params(),
                              "context": evaluator.context, "stride": stride, "text": {}, "tasks": {}}
    for name, documents in texts.items():
        score = evaluator.text(documents, stride, source=f"{text_paths[name]} ({name})")
        result["text"][name] = {"bits_per_byte": score.bits_per_byte, "bytes": score.bytes, "tokens": score.tokens}
    for name, items in tasks.items():
        score = evaluator.task(items, source=f"{task_paths[name]} ({name})")
        result["tasks"][name] = {"acc": score.acc, "acc_norm": score.acc_norm, "items": score.items,
                                 "chance": sum(1 / len(item.choices) for item in items) / len(items)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.checkpoint}: {model.num_params() / 1e6:.2f}M parameters, vocab {model.config.vocab_size:,}, "
          f"context windows of {evaluator.context} tokens every {stride}, on {evaluator.device.type}")
    for name, r in result["text"].items():
        print(f"  {name:20s} {r['bits_per_byte']:.4f} bits/byte  ({r['bytes']:,} bytes, {r['tokens']:,} tokens)")
    for name, r in result["tasks"].items():
        print(f"  {name:20s} acc {r['acc']:.4f}  acc_norm {r['acc_norm']:.4f} (per byte)  "
              f"({r['items']:,} items, chance {r['chance']:.4f})")
    return 0


def _export_hf(args: argparse.Namespace) -> int:
    from model.hf import export_hf

    print(f"wrote {export_hf(args.checkpoint, args.out, tokenizer=args.tokenizer)}")
    return 0


def _import_hf(args: argparse.Namespace) -> int:
    from model.hf import import_hf

    print(f"wrote {import_hf(args.hf_dir, args.out)}")
    return 0


def _sft(args: argparse.Namespace) -> int:
    from model.posttrain import run
    from model.sft import SFTConfig, SFTTrainer

    run(SFTTrainer, SFTConfig, args.config)
    return 0


def _dpo(args: argparse.Namespace) -> int:
    from model.dpo import DPOConfig, DPOTrainer
    from model.posttrain import run

    run(DPOTrainer, DPOConfig, args.config)
    return 0


def _plan(args: argparse.Namespace) -> int:
    from model.plan import format_plan, measured_mfu, plan, training_preset

    mfu = measured_mfu(Path(args.mfu_from)) if args.mfu_from else args.mfu
    p = plan(args.gpu_hours, args.gpu, mfu, args.gpus, args.seq_len, args.vocab_size, args.usd_per_gpu_hour)
    print(json.dumps(p, indent=2) if args.json else format_plan(p))
    if args.write_config:
        import yaml

        preset = training_preset(p, args.data_dir, args.out_dir)
        header = (f"# Written by `lmforge plan --gpu-hours {args.gpu_hours:g} --gpu {args.gpu} "
                  f"--gpus {args.gpus}`: {p['params'] / 1e6:.1f}M parameters, "
                  f"{p['tokens'] / 1e9:.3f}B tokens, about {p['wall_hours']:.2f} h.\n"
                  f"# batch_size is the micro-batch per GPU, batch_tokens the global batch; launch with "
                  f"torchrun --nproc_per_node {args.gpus}.\n")
        Path(args.write_config).write_text(header + yaml.safe_dump(preset, sort_keys=False))
        print(f"wrote {args.write_config}", file=sys.stderr if args.json else sys.stdout)
    return 0


def _inspect_shards(args: argparse.Namespace) -> int:
    from model.inspect_shards import shard_report
    from model.token_shards import TokenShardError

    report, problems = shard_report(args.localize(args.dir), args.tokenizer)
    print(report)
    if problems:  # after the report, so what is wrong is read beside the rest
        more = f" (and {len(problems) - 1} more shards, listed above)" if len(problems) > 1 else ""
        raise TokenShardError(problems[0] + more)
    return 0


def _checked(convert: Callable[[str], Any], ok: Callable[[Any], bool], wanted: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``convert(text)`` when ``ok`` holds, else an argument error."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value
    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a whole number >= 1")
_temperature = _checked(float, lambda v: 0 <= v < float("inf"), "a finite number >= 0")  # nan fails both
_probability = _checked(float, lambda v: 0 < v <= 1, "a number in (0, 1]")


def _sampling_options(p: argparse.ArgumentParser, max_new_tokens: int, temperature: float,
                      top_p: float | None) -> None:
    # Bad values are argument errors (exit 2, the usage line), never a failure mid-sampling.
    p.add_argument("checkpoint", help="checkpoint directory, or a run/checkpoints directory (newest is used)")
    p.add_argument("--max-new-tokens", type=_positive_int, default=max_new_tokens)
    p.add_argument("--temperature", type=_temperature, default=temperature, help="0: greedy")
    p.add_argument("--top-k", type=_positive_int, default=None, help="sample among the k likeliest tokens (k >= 1)")
    p.add_argument("--top-p", type=_probability, default=top_p,
                   help="sample among the likeliest tokens holding this much probability, in (0, 1]")
    p.add_argument("--seed", type=int, default=0)


class _WithDefaults:
    """Subparsers whose every parser gets the same extra defaults."""

    def __init__(self, subparsers: argparse._SubParsersAction, **defaults: Any):
        self.subparsers, self.defaults = subparsers, defaults

    def add_parser(self, *args: Any, **kwargs: Any) -> argparse.ArgumentParser:
        parser = self.subparsers.add_parser(*args, **kwargs)
        parser.set_defaults(**self.defaults)
        return parser


def register(subparsers: argparse._SubParsersAction,
             localize: Callable[[str], str] = lambda location: location) -> None:
    """Add the model's subcommands to ``subparsers``. ``localize`` turns a token-shard
    location the user gives (``train``'s ``data.dir``, ``inspect-shards DIR``) into a local
    path; the program that wires model/ in passes one that fetches URLs (model/ reads only
    local files, so it runs where nothing but torch is installed)."""
    from model.plan import DEFAULT_MFU, GPUS

    subparsers = _WithDefaults(subparsers, localize=localize)

    p = subparsers.add_parser("train", help="pretrain a model from a training config")
    p.add_argument("config", help="training config YAML (configs/tiny.yaml, configs/shakespeare.yaml, ...)")
    p.set_defaults(func=_train)

    p = subparsers.add_parser("generate", help="sample text from a checkpoint, streamed")
    _sampling_options(p, max_new_tokens=200, temperature=0.8, top_p=None)
    p.add_argument("--prompt", required=True)
    p.set_defaults(func=_generate)

    p = subparsers.add_parser("export-hf", help="write a checkpoint as a Hugging Face Llama directory")
    p.add_argument("checkpoint")
    p.add_argument("out", type=Path)
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer.json (default: the checkpoint's)")
    p.set_defaults(func=_export_hf)

    p = subparsers.add_parser("import-hf", help="convert a Hugging Face Llama directory into a checkpoint")
    p.add_argument("hf_dir", type=Path)
    p.add_argument("out", type=Path)
    p.set_defaults(func=_import_hf)

    p = subparsers.add_parser("sft", help="supervised fine-tuning of a checkpoint on instruction data")
    p.add_argument("config", help="SFT config YAML (see configs/sft.yaml)")
    p.set_defaults(func=_sft)

    p = subparsers.add_parser("dpo", help="DPO preference alignment of a checkpoint")
    p.add_argument("config", help="DPO config YAML (see configs/dpo.yaml)")
    p.set_defaults(func=_dpo)

    p = subparsers.add_parser("chat", help="talk to a fine-tuned checkpoint, replies streamed")
    _sampling_options(p, max_new_tokens=256, temperature=0.7, top_p=0.9)
    p.add_argument("--system", default=None, help="system prompt")
    p.set_defaults(func=_chat)

    p = subparsers.add_parser("eval", help="held-out bits per byte and multiple-choice accuracy of a checkpoint")
    p.add_argument("checkpoint", help="checkpoint directory, or a run/checkpoints directory (newest is used)")
    p.add_argument("--text", action="append", default=[], metavar="NAME=PATH",
                   help="a held-out text set: a .jsonl file of {\"text\": ...} documents, or any text file "
                        "(one document); repeatable")
    p.add_argument("--task", action="append", default=[], metavar="NAME=PATH",
                   help="a multiple-choice JSONL task ({context, choices, label}, or HellaSwag/ARC rows); "
                        "repeatable")
    p.add_argument("--stride", type=_positive_int, default=None,
                   help="tokens between the starts of context windows (default: the context, no overlap)")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="sequences per forward pass")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.set_defaults(func=_eval)

    p = subparsers.add_parser("plan", help="size a Chinchilla-optimal training run for a GPU budget")
    p.add_argument("--gpu-hours", type=float, required=True, help="total GPU-hours (all GPUs)")
    p.add_argument("--gpu", choices=sorted(GPUS), default="h100")
    p.add_argument("--gpus", type=int, default=1, help="GPUs trained on together")
    mfu = p.add_mutually_exclusive_group()
    mfu.add_argument("--mfu", type=float, default=DEFAULT_MFU, help=f"model FLOPs utilisation (default {DEFAULT_MFU})")
    mfu.add_argument("--mfu-from", metavar="LOG", help="a trainer log.jsonl (or its folder): use its median MFU")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--vocab-size", type=int, default=32_768)
    p.add_argument("--usd-per-gpu-hour", type=float, default=None)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--write-config", metavar="PATH", help="also write a training preset YAML")
    p.add_argument("--data-dir", default="runs/web/tokenize/shards", help="token shards, for --write-config")
    p.add_argument("--out-dir", default="runs/planned", help="training output, for --write-config")
    p.set_defaults(func=_plan)

    p = subparsers.add_parser("inspect-shards", help="token-shard headers, counts, token histogram, a decoded sample")
    p.add_argument("dir", help="a tokenize stage directory, its shards/ folder, or one .bin file")
    p.add_argument("--tokenizer", help="tokenizer.json to decode with (default: found by hash)")
    p.set_defaults(func=_inspect_shards)
