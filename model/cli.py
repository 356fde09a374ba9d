"""The model subcommands of the ``lmforge`` console script: train, generate, export-hf, import-hf.

``register(subparsers)`` adds them to an ``argparse`` subparsers object; each handler takes
the parsed args and returns an exit code. Expected failures (a bad config, a missing or
unsafe checkpoint, an HF model we cannot represent) print one line to stderr and return 2.
Imports are inside the handlers, so registering the commands does not import torch and
``lmforge status`` stays quick.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path



def _train(args: argparse.Namespace) -> int:
    from model.train import run

    return run(args.config)


def _generate(args: argparse.Namespace) -> int:
    import torch
    from tokenizers import Tokenizer

    from model.checkpoint import CheckpointError, load_model, resolve_checkpoint
    from model.generate import generate
    from model.hf import special_tokens

    ckpt = resolve_checkpoint(args.checkpoint)
    tokenizer_path = ckpt / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise CheckpointError(f"{ckpt}: no tokenizer.json beside the weights, cannot encode the prompt")
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(ckpt, device)
    eos = special_tokens(tokenizer_path).get("eos_token")
    try:
        prompt_ids = tokenizer.encode(args.prompt, add_special_tokens=False).ids
    except Exception as e:  # tokenizers raises a bare Exception, e.g. a character a char vocab lacks
        raise ValueError(f"cannot encode the prompt with {tokenizer_path}: {e}") from None
    if not prompt_ids:
        raise ValueError("the prompt encodes to no tokens")
    generator = torch.Generator(device=device).manual_seed(args.seed)
    prompt = torch.tensor([prompt_ids], device=device)
    ids: list[int] = []
    printed = ""
    sys.stdout.write(args.prompt)
    for token in generate(model, prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                          eos_id=eos[1] if eos else None, generator=generator):
        if eos and token.item() == eos[1]:
            break
        ids.append(token.item())
        # Decode the whole continuation each time: a byte-level BPE character can span tokens.
        text = tokenizer.decode(ids)
        if not text.endswith("\ufffd"):
            sys.stdout.write(text[len(printed):])
            sys.stdout.flush()
            printed = text
    sys.stdout.write(tokenizer.decode(ids)[len(printed):] + "\n")
    return 0


def _export_hf(args: argparse.Namespace) -> int:
    from model.hf import export_hf

    out = export_hf(args.checkpoint, args.out, tokenizer=args.tokenizer)
    print(f"wrote {out}")
    return 0


def _import_hf(args: argparse.Namespace) -> int:
    from model.hf import import_hf

    out = import_hf(args.hf_dir, args.out)
    print(f"wrote {out}")
    return 0


def _guarded(handler):
    def run(args: argparse.Namespace) -> int:
        # ConfigError and CheckpointError are ValueErrors; so are HFConversionError and TokenShardError.
        try:
            return handler(args)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the model subcommands to ``subparsers``."""
    p = subparsers.add_parser("train", help="pretrain a model from a training config")
    p.add_argument("config", help="training config YAML (configs/tiny.yaml, configs/shakespeare.yaml, ...)")
    p.set_defaults(func=_guarded(_train))

    p = subparsers.add_parser("generate", help="sample text from a checkpoint, streamed")
    p.add_argument("checkpoint", help="checkpoint directory, or a run/checkpoints directory (newest is used)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_guarded(_generate))

    p = subparsers.add_parser("export-hf", help="write a checkpoint as a Hugging Face Llama directory")
    p.add_argument("checkpoint")
    p.add_argument("out", type=Path)
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer.json (default: the checkpoint's)")
    p.set_defaults(func=_guarded(_export_hf))

    p = subparsers.add_parser("import-hf", help="convert a Hugging Face Llama directory into a checkpoint")
    p.add_argument("hf_dir", type=Path)
    p.add_argument("out", type=Path)
    p.set_defaults(func=_guarded(_import_hf))


def main(argv: list[str] | None = None) -> int:
    """Run the model subcommands alone: ``python -m model.cli generate ...``."""
    parser = argparse.ArgumentParser(prog="python -m model.cli")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
