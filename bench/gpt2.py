"""GPT-2 as nanoGPT publishes it, the yardstick of ``bench/train_throughput.py``.

Written from the architecture description (Radford et al. 2019; nanoGPT's README and
``GPTConfig``), not from nanoGPT's code: learned token and position embeddings, pre-norm
blocks with LayerNorm (with bias), multi-head causal self-attention through
``scaled_dot_product_attention`` with one fused QKV projection, a GELU MLP of width 4 x dim,
a final LayerNorm, and an output projection tied to the token embedding; biases on every
linear but the output; no dropout. nanoGPT's 124M run is 12 layers x 768, 12 heads, block
1024, vocabulary 50304 (GPT-2's 50257 padded to a multiple of 64). Initialisation: normal
(0, 0.02), residual output projections scaled by 1/sqrt(2 x layers), zero biases.

It exposes what the lmforge ``Trainer`` and ``model/parallel.py`` use, so both models train
through the same loop and the same compile pattern: ``config``, ``layers`` (compiled one by
one), ``loss_head`` (final norm, output projection and cross-entropy, compiled on its own),
``num_params()`` and ``flops_per_token()`` (counted as ``model/llama.py`` counts, which is
nanoGPT's ``estimate_mfu``: 6 per matmul weight plus the attention products).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GPT2Config:
    vocab_size: int = 50304
    block_size: int = 1024
    n_layers: int = 12
    n_heads: int = 12
    dim: int = 768

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, dim = x.shape
        q, k, v = self.qkv(x).split(dim, dim=-1)
        q, k, v = (t.view(batch, seq, self.n_heads, -1).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(batch, seq, dim))


class Block(nn.Module):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.dim)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.dim)
        self.fc = nn.Linear(config.dim, 4 * config.dim)
        self.fc_proj = nn.Linear(4 * config.dim, config.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.fc_proj(F.gelu(self.fc(self.ln_2(x))))


class LossHead(nn.Module):
    """Final LayerNorm, tied output projection and cross-entropy, as one module to compile."""

    def forward(self, h: torch.Tensor, norm_weight: torch.Tensor, norm_bias: torch.Tensor,
                output_weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = F.linear(F.layer_norm(h, norm_weight.shape, norm_weight, norm_bias), output_weight)
        return F.cross_entropy(logits.flatten(0, -2).float(), targets.reshape(-1), ignore_index=-100)


class GPT2(nn.Module):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.pos_embeddings = nn.Embedding(config.block_size, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.dim)
        self.loss_head = LossHead()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                residual = name.endswith(("attn.proj.weight", "fc_proj.weight"))
                std = 0.02 / math.sqrt(2 * self.config.n_layers) if residual else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def num_params(self) -> int:
        """Every weight once (the tied embedding/output matrix once)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6 per matmul weight (the tied matrix as the output head; the
        position table is a lookup, so not counted) plus the attention products."""
        c = self.config
        matmul_params = self.num_params() - self.pos_embeddings.weight.numel()
        return 6 * matmul_params + 12 * c.n_layers * c.n_heads * c.head_dim * seq_len

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        h = self.tok_embeddings(tokens) + self.pos_embeddings(positions)
        for layer in self.layers:
            h = layer(h)
        if targets is None:
            return F.linear(self.ln_f(h), self.tok_embeddings.weight)
        return self.loss_head(h, self.ln_f.weight, self.ln_f.bias, self.tok_embeddings.weight, targets)
