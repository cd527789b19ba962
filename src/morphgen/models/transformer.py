"""Decoder-only causal transformer over VQ-VAE codebook indices, with a key/value cache for sampling.

Token ids ``0 .. codebook_size - 1`` are codebook entries; ``codebook_size`` (``vocab_size - 1``) is the
beginning-of-sequence (BOS) token, which is only ever an input. A sequence of ``seq_len`` codes is modelled as
``p(s_1 | BOS) p(s_2 | BOS, s_1) ...``, so inputs occupy positions ``0 .. seq_len`` (``seq_len + 1`` of them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class KVCache:
    """Preallocated keys and values of every layer, filled as tokens are decoded.

    ``keys[i]`` and ``values[i]`` have shape ``(batch, heads, max_len, head_dim)``; ``length`` is the number
    of positions already written (the position of the next token); the model advances it after each call.
    """

    def __init__(
        self,
        layers: int,
        batch_size: int,
        heads: int,
        max_len: int,
        head_dim: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        shape = (batch_size, heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.max_len = max_len
        self.length = 0

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0] if self.keys else 0


class CausalSelfAttention(nn.Module):
    """Multi-head causal softmax self-attention through ``scaled_dot_product_attention``.

    Kept as its own module (projections + cache handling) so another attention back-end (e.g. FAVOR+) with a
    different cache can replace it without touching the rest of the network.
    """

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
        self.heads = heads
        self.head_dim = d_model // heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.out_dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0, start: int = 0
    ) -> torch.Tensor:
        """Attend ``x`` (B, T, d) to itself causally; with a cache, also to the ``start`` cached positions."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        dropout_p = self.dropout if self.training else 0.0
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            end = start + t
            if end > cache.max_len:
                raise ValueError(
                    f"key/value cache holds {cache.max_len} positions, asked to write up to {end}"
                )
            cache.keys[layer][:, :, start:end] = k
            cache.values[layer][:, :, start:end] = v
            keys, values = cache.keys[layer][:, :, :end], cache.values[layer][:, :, :end]
            if t == 1:  # one new token sees every cached position: no mask needed
                y = F.scaled_dot_product_attention(q, keys, values, dropout_p=dropout_p)
            elif start == 0:
                y = F.scaled_dot_product_attention(q, keys, values, dropout_p=dropout_p, is_causal=True)
            else:  # a chunk after a prefix: query i (position start + i) sees keys 0 .. start + i
                allowed = torch.ones(t, end, dtype=torch.bool, device=x.device).tril(diagonal=start)
                y = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(b, t, d)
        return self.out_dropout(self.out(y))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(LN(x))`` then ``x + MLP(LN(x))``."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.norm_attn = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, heads, dropout)
        self.norm_mlp = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model),
            nn.GELU(),
            nn.Linear(4 * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0, start: int = 0
    ) -> torch.Tensor:
        x = x + self.attn(self.norm_attn(x), cache, layer, start)
        return x + self.mlp(self.norm_mlp(x))


class CausalTransformer(nn.Module):
    """Autoregressive prior over flattened VQ-VAE token sequences.

    Args:
        vocab_size: ``codebook_size + 1``; the last id is the BOS token.
        seq_len: number of codebook tokens per sequence (BOS excluded).
        d_model, layers, heads: width, depth and attention heads.
        dropout: dropout on embeddings, attention weights and residual branches (training only).
    """

    def __init__(
        self, vocab_size: int, seq_len: int, d_model: int, layers: int, heads: int, dropout: float = 0.0
    ):
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be codebook_size + 1 >= 2, got {vocab_size}")
        self.vocab_size = vocab_size
        self.codebook_size = vocab_size - 1
        self.bos_token = vocab_size - 1
        self.seq_len = seq_len
        self.d_model = d_model
        self.layers = layers
        self.heads = heads
        self.dropout = dropout
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(seq_len + 1, d_model)  # BOS + seq_len codes
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, self.codebook_size)  # BOS is never predicted
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2 style: small normal weights; residual output projections shrunk with depth
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        for block in self.blocks:
            for proj in (block.attn.out, block.mlp[2]):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * max(self.layers, 1)))

    def hparams(self) -> dict:
        """Constructor arguments as a plain dict (saved beside the weights)."""
        return {
            "vocab_size": self.vocab_size,
            "seq_len": self.seq_len,
            "d_model": self.d_model,
            "layers": self.layers,
            "heads": self.heads,
            "dropout": self.dropout,
        }

    def new_cache(self, batch_size: int, device: torch.device | str | None = None) -> KVCache:
        """An empty key/value cache for ``batch_size`` sequences of up to ``seq_len + 1`` inputs."""
        param = next(self.parameters())
        return KVCache(
            self.layers,
            batch_size,
            self.heads,
            self.seq_len + 1,
            self.d_model // self.heads,
            device=param.device if device is None else device,
            dtype=param.dtype,
        )

    def forward(self, tokens: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, T, codebook_size) for the token following each input position.

        Without a cache, ``tokens`` (B, T) start at position 0 (normally with BOS). With a cache, they
        continue the ``cache.length`` positions already decoded, their keys/values are stored, and
        ``cache.length`` advances by T.
        """
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be (batch, time), got shape {tuple(tokens.shape)}")
        start = 0 if cache is None else cache.length
        t = tokens.shape[1]
        if start + t > self.seq_len + 1:
            raise ValueError(
                f"positions {start}..{start + t - 1} exceed the model's {self.seq_len + 1} positions"
            )
        if cache is not None and cache.batch_size != tokens.shape[0]:
            raise ValueError(f"cache is for batch {cache.batch_size}, tokens have batch {tokens.shape[0]}")
        positions = torch.arange(start, start + t, device=tokens.device)
        x = self.embedding_dropout(self.token_embedding(tokens) + self.position_embedding(positions))
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i, start)
        if cache is not None:
            cache.length = start + t
        return self.head(self.norm(x))
