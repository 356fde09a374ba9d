"""lmforge's PyTorch side: a Llama-style model, token shards, the pretraining loop, HF interop.

Depends only on torch, numpy, safetensors and tokenizers (pyyaml for config files), never on
pipeline/ or stages/, so it runs on a GPU machine that has nothing else. Modules:
llama (the model), generate (KV-cache sampling), token_shards (binary format), data
(batches from shards), char_text (character-level shards), config (strict YAML schema),
trainer, parallel (DDP/FSDP2/compile), checkpoint, hf, cli, train (entry point).
"""
