"""The post-training subcommands of ``lmforge``: ``sft CONFIG``, ``dpo CONFIG``, ``chat CKPT``.

``register(subparsers)`` adds them; each handler takes the parsed args and returns an exit
code, and expected failures (bad config, missing checkpoint, bad record) print one line to
stderr and return 2, as ``model/cli.py`` does. Heavy imports live inside the handlers.

``chat`` is a prompt loop: each line typed is a user turn, the reply streams as it is
sampled and stops at ``<|end|>``; the conversation is kept, and the oldest turns are
dropped when it no longer fits the model's context. Empty line or end of input quits;
``/reset`` starts over.
"""

from __future__ import annotations

import argparse
import sys

from model.cli import _guarded


def _sft(args: argparse.Namespace) -> int:
    from model.posttrain import run
    from model.sft import SFTConfig, SFTTrainer

    return run(SFTTrainer, SFTConfig, args.config)


def _dpo(args: argparse.Namespace) -> int:
    from model.dpo import DPOConfig, DPOTrainer
    from model.posttrain import run

    return run(DPOTrainer, DPOConfig, args.config)


def _chat(args: argparse.Namespace) -> int:
    import torch

    from model.chat import ChatTemplate, stream_text
    from model.checkpoint import CheckpointError, load_model, resolve_checkpoint
    from model.generate import generate

    ckpt = resolve_checkpoint(args.checkpoint)
    if not (ckpt / "tokenizer.json").is_file():
        raise CheckpointError(f"{ckpt}: no tokenizer.json beside the weights, cannot render the chat template")
    template = ChatTemplate.from_file(ckpt / "tokenizer.json")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(ckpt, device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict[str, str]] = []
    interactive = sys.stdin.isatty()
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
            print(f"error: the message takes {len(prompt)} tokens, the model's context is "
                  f"{model.config.max_seq_len}", file=sys.stderr)
            history.pop()
            continue
        tokens = generate(model, torch.tensor([prompt], device=device), args.max_new_tokens, args.temperature,
                          args.top_k, args.top_p, eos_id=template.end_id, generator=generator)

        def reply_ids():
            for token in tokens:
                if token.item() in template.stop_ids:
                    return
                yield token.item()

        reply = ""
        for piece in stream_text(template.tokenizer, reply_ids()):
            sys.stdout.write(piece)
            sys.stdout.flush()
            reply += piece
        sys.stdout.write("\n")
        history.append({"role": "assistant", "content": reply})
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the post-training subcommands to ``subparsers``."""
    p = subparsers.add_parser("sft", help="supervised fine-tuning of a checkpoint on instruction data")
    p.add_argument("config", help="SFT config YAML (see configs/sft.yaml)")
    p.set_defaults(func=_guarded(_sft))

    p = subparsers.add_parser("dpo", help="DPO preference alignment of a checkpoint")
    p.add_argument("config", help="DPO config YAML (see configs/dpo.yaml)")
    p.set_defaults(func=_guarded(_dpo))

    p = subparsers.add_parser("chat", help="talk to a fine-tuned checkpoint, replies streamed")
    p.add_argument("checkpoint", help="checkpoint directory, or a run/checkpoints directory (newest is used)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.7, help="0: greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_guarded(_chat))


def main(argv: list[str] | None = None) -> int:
    """Run the post-training subcommands alone: ``python -m model.posttrain_cli sft ...``."""
    parser = argparse.ArgumentParser(prog="python -m model.posttrain_cli")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
