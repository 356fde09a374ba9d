"""A Llama-3 style decoder, written for one device and meant to be read top to bottom.

Config first, then the blocks (RMSNorm, rotary embeddings, grouped-query attention, SwiGLU),
then the model. Choices that matter:

- Rotary embeddings use the "rotate half" layout (the first and second halves of each head
  form the complex pairs), the same layout as Hugging Face's Llama, so HF weights map one to
  one without permuting q/k projections.
- Grouped-query attention: ``n_kv_heads`` key/value heads shared by ``n_heads`` query heads;
  ``n_kv_heads == n_heads`` is multi-head attention, ``n_kv_heads == 1`` multi-query.
  Attention is ``F.scaled_dot_product_attention`` (FlashAttention kernels on GPU).
- Initialisation: normal(0, ``init_std``) everywhere, with the two projections that write
  into the residual stream (attention output, feed-forward down) scaled by
  ``1/sqrt(2 * n_layers)`` so the residual variance does not grow with depth (GPT-2).
- Fused projections: one ``wqkv`` matmul yields queries, keys and values (rows in that
  order) and one ``w13`` matmul yields the SwiGLU gate and up halves (gate rows first). The
  Hugging Face layout keeps them apart; ``model/checkpoint.py`` joins and splits them.
- Padded vocabulary: the embedding and output matrices have ``padded_vocab_size`` rows (the
  true ``vocab_size`` rounded up to ``vocab_multiple``, 128 by default) so the output matmul
  has a tensor-core-friendly width. Logits are sliced back to ``vocab_size`` before anything
  reads them, so padding ids are never sampled and never in the loss; their rows start at
  zero and, receiving no gradient, stay there.
- The final RMSNorm, output projection and cross-entropy live in ``LossHead``, a module
  without parameters of its own (the norm gain and output matrix stay ``norm.weight`` and
  ``output.weight``), so ``model/parallel.py`` compiles it beside the blocks and the full
  (tokens x vocab) logits never leave the compiled region in fp32.
- Packed sequences (several examples in one row, post-training): ``forward(positions=...)``
  takes each token's RoPE position, restarting at 0 where an example starts, and attention
  is confined to each example (``document_mask``): a FlexAttention block mask on CUDA, whose
  kernels skip the blocks across examples, else a dense boolean mask for SDPA.
- Generation uses a preallocated ``KVCache``; the model itself knows nothing about data
  parallelism, compilation or config files (see ``model/parallel.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention


@dataclass
class ModelConfig:
    """Shape of the network. ``vocab_size`` None means "take it from the data"."""

    vocab_size: int | None = None  # the tokenizer's; ids >= vocab_size never occur
    vocab_multiple: int = 128  # embedding/output rows are padded up to a multiple of this
    dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    n_kv_heads: int | None = None  # None: same as n_heads (multi-head attention)
    hidden_dim: int | None = None  # None: SwiGLU width 8/3 * dim rounded up to multiple_of
    multiple_of: int = 64
    max_seq_len: int = 1024
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.hidden_dim is None:
            hidden = int(8 * self.dim / 3)
            self.hidden_dim = self.multiple_of * math.ceil(hidden / self.multiple_of)
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if (self.dim // self.n_heads) % 2:
            raise ValueError("head dimension must be even for rotary embeddings")
        if self.vocab_multiple < 1:
            raise ValueError(f"vocab_multiple must be >= 1, got {self.vocab_multiple}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding and output matrices: vocab_size rounded up to vocab_multiple."""
        return self.vocab_multiple * math.ceil(self.vocab_size / self.vocab_multiple)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # Normalise in fp32 even under bf16 autocast: the mean of squares loses too much in bf16.
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def rope_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of shape (max_seq_len, head_dim), in the rotate-half layout."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x of shape (B, heads, T, head_dim) by the angles for its T positions."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


def document_mask(positions: torch.Tensor, flex: bool | None = None) -> torch.Tensor | BlockMask:
    """Causal attention within each example of packed rows, never across examples.

    ``positions`` (B, T) are RoPE positions that restart at 0 where an example starts, so a
    0 opens a new example. ``flex`` None: a FlexAttention ``BlockMask`` on CUDA, else a
    dense (B, 1, T, T) boolean mask (True: may attend) for ``scaled_dot_product_attention``.
    """
    B, T = positions.shape
    example = (positions == 0).cumsum(dim=-1)
    use_flex = positions.is_cuda if flex is None else flex
    if use_flex:
        def same_example(b, h, q, kv):
            return (example[b, q] == example[b, kv]) & (kv <= q)
        return create_block_mask(same_example, B, None, T, T, device=positions.device)
    causal = torch.ones(T, T, dtype=torch.bool, device=positions.device).tril()
    return ((example[:, :, None] == example[:, None, :]) & causal).unsqueeze(1)


_compiled_flex = None


def _flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: BlockMask,
                    enable_gqa: bool) -> torch.Tensor:
    # Eager FlexAttention materialises the scores; compiled it is a fused kernel. Inside an
    # already compiled block the compiled function is traced into the block's graph.
    global _compiled_flex
    if q.is_cuda and _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    attend = _compiled_flex if q.is_cuda else flex_attention
    return attend(q, k, v, block_mask=mask, enable_gqa=enable_gqa)


class KVCache:
    """Preallocated keys and values for every layer, filled as generation proceeds."""

    def __init__(self, config: ModelConfig, batch_size: int, max_len: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        shape = (batch_size, config.n_kv_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.max_len = max_len

    def update(self, layer: int, pos: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v at positions pos..pos+T and return everything cached up to there."""
        end = pos + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; asked to write up to {end}")
        self.keys[layer][:, :, pos:end] = k
        self.values[layer][:, :, pos:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.head_dim
        self.widths = [config.n_heads * self.head_dim] + 2 * [config.n_kv_heads * self.head_dim]
        self.wqkv = nn.Linear(config.dim, sum(self.widths), bias=False)
        self.wo = nn.Linear(config.n_heads * self.head_dim, config.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None, pos: int = 0,
                mask: torch.Tensor | BlockMask | None = None) -> torch.Tensor:
        """``mask``: ``document_mask`` of packed rows (then no cache); None: causal."""
        B, T, _ = x.shape
        qkv = self.wqkv(x)
        # Under tensor parallelism this rank's wqkv yields 1/tp of the heads (model/parallel.py).
        shards = sum(self.widths) // qkv.shape[-1]
        q, k, v = qkv.split([width // shards for width in self.widths], dim=-1)
        q = q.view(B, T, -1, self.head_dim).transpose(1, 2)
        k = k.view(B, T, -1, self.head_dim).transpose(1, 2)
        v = v.view(B, T, -1, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        gqa = self.n_kv_heads != self.n_heads
        if isinstance(mask, BlockMask):
            return self.wo(_flex_attention(q, k, v, mask, gqa).transpose(1, 2).reshape(B, T, -1))
        is_causal = mask is None
        if cache is not None:
            k, v = cache.update(self.layer_id, pos, k, v)
            if T == 1:
                is_causal = False  # one new query may see every cached position
            elif pos > 0:
                # Queries at pos..pos+T-1 against keys 0..pos+T-1: causal, shifted by pos.
                is_causal = False
                mask = torch.ones(T, pos + T, dtype=torch.bool, device=x.device).tril(diagonal=pos)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=gqa)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(gate) * up), with gate and up from one fused matmul ``w13``."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w13 = nn.Linear(dim, 2 * hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class TransformerBlock(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.attention = Attention(config, layer_id)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)
        self.feed_forward = FeedForward(config.dim, config.hidden_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None, pos: int = 0,
                mask: torch.Tensor | BlockMask | None = None) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin, cache, pos, mask)
        return x + self.feed_forward(self.ffn_norm(x))


class LossHead(nn.Module):
    """Final RMSNorm, output projection and cross-entropy, as one module to compile.

    It owns no parameters: the norm gain and output matrix are passed in, so they keep their
    names in the model (and under FSDP2 stay with the root's shard) while this forward is
    compiled on its own. Compiled, the fp32 upcast of the logits and the log-softmax fuse
    into the loss kernels; eager, they are separate passes over an fp32 copy of the logits.
    The model's ``norm`` module holds the final gain; this head applies it.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.eps = config.norm_eps
        self.vocab_size = config.vocab_size

    def logits(self, h: torch.Tensor, norm_weight: torch.Tensor, output_weight: torch.Tensor) -> torch.Tensor:
        """Logits over the true vocabulary: the padding columns are sliced away."""
        return F.linear(rms_norm(h, norm_weight, self.eps), output_weight)[..., :self.vocab_size]

    def forward(self, h: torch.Tensor, norm_weight: torch.Tensor, output_weight: torch.Tensor,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy over targets != -100; without ``targets``, the logits."""
        logits = self.logits(h, norm_weight, output_weight)
        if targets is None:
            return logits
        return F.cross_entropy(logits.flatten(0, -2).float(), targets.reshape(-1), ignore_index=-100)


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.vocab_size is None:
            raise ValueError("ModelConfig.vocab_size is not set")
        self.config = config
        self.tok_embeddings = nn.Embedding(config.padded_vocab_size, config.dim)
        self.layers = nn.ModuleList(TransformerBlock(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.padded_vocab_size, bias=False)
        if config.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.loss_head = LossHead(config)
        # Not parameters and not saved: rebuilt from the config, so checkpoints hold weights only.
        cos, sin = rope_tables(config.head_dim, config.max_seq_len, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith(("attention.wo.weight", "feed_forward.w2.weight")):
                nn.init.normal_(p, mean=0.0, std=residual_std)
            else:
                nn.init.normal_(p, mean=0.0, std=std)
        with torch.no_grad():  # padding rows: never looked up, never scored
            self.tok_embeddings.weight[self.config.vocab_size:].zero_()
            self.output.weight[self.config.vocab_size:].zero_()
        cos, sin = rope_tables(self.config.head_dim, self.config.max_seq_len, self.config.rope_theta)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None, pos: int = 0, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of shape (B, T, vocab_size); with ``targets``, the mean cross-entropy instead.

        ``targets`` entries equal to -100 are ignored. ``cache``/``pos`` are for generation:
        tokens sit at positions pos..pos+T-1 and their keys/values are stored in the cache.
        ``positions`` (B, T) are for packed rows: each token's position within its example,
        0 where an example starts; a token attends only to its own example's earlier tokens.
        """
        T = tokens.shape[1]
        if pos + T > self.config.max_seq_len:
            raise ValueError(f"sequence of {pos + T} positions exceeds max_seq_len {self.config.max_seq_len}")
        mask = None
        if positions is None:
            cos, sin = self.rope_cos[pos:pos + T], self.rope_sin[pos:pos + T]
        else:
            if cache is not None:
                raise ValueError("packed rows (positions) are for training; generation uses the cache")
            # (B, 1, T, head_dim): one table row per token, broadcast over the heads.
            cos, sin = self.rope_cos[positions].unsqueeze(1), self.rope_sin[positions].unsqueeze(1)
            mask = document_mask(positions)
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h, cos, sin, cache, pos, mask)
        return self.loss_head(h, self.norm.weight, self.output.weight, targets)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Parameter count; a tied embedding/output matrix counts once.

        The padding rows of the embedding and output matrices count, as they are real memory
        and (in the output matmul) real FLOPs; at the default multiple of 128 they add at
        most 127 rows per matrix.
        """
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.tok_embeddings.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs (forward + backward) per token at context ``seq_len``.

        6 per weight of every matmul (the output head included with its padding rows, which
        the matmul computes; the embedding lookup not), plus the attention score and value
        products, 12 * layers * heads * head_dim * T (PaLM appendix B; the causal mask is not
        discounted, as in nanoGPT's MFU).
        """
        c = self.config
        # Tied: the shared matrix is still one matmul (the head); untied: drop the lookup table.
        matmul_params = self.num_params(exclude_embeddings=not c.tie_embeddings)
        return 6 * matmul_params + 12 * c.n_layers * c.n_heads * c.head_dim * seq_len
