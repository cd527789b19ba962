"""Decoder-only causal transformer over VQ-VAE codebook indices, with a key/value cache for sampling.

Token ids ``0 .. codebook_size - 1`` are codebook entries; ``codebook_size`` (``vocab_size - 1``) is the
beginning-of-sequence (BOS) token, which is only ever an input. A sequence of ``seq_len`` codes is modelled as
``p(s_1 | BOS) p(s_2 | BOS, s_1) ...``, so inputs occupy positions ``0 .. seq_len`` (``seq_len + 1`` of them).

The paper's Performer (appendix 6.2) is this model with ``attention="favor"``, ``local_heads=8``,
``local_window=420`` and ``rezero=True``; see :mod:`.attention` for the
back-ends.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from morphgen.models.families.vqvae_transformer.attention import AttentionCache, CausalSelfAttention


class KVCache:
    """Per-layer attention caches for ``batch_size`` sequences of up to ``max_len`` positions.

    ``length`` is the number of positions already decoded (the position of the next token); the model
    advances it after each call.
    """

    def __init__(self, layers: list[AttentionCache], batch_size: int, max_len: int):
        self.layers = layers
        self.batch_size = batch_size
        self.max_len = max_len
        self.length = 0


class TransformerBlock(nn.Module):
    """Pre-norm block ``x + attn(LN(x))``, ``x + MLP(LN(x))``; with ``rezero``, ``x + g * f(x)`` instead,
    with a learnt scalar ``g`` starting at 0 and no LayerNorm (Bachlechner et al. 2021; the paper's prior)."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, *, rezero: bool = False, **attention):
        super().__init__()
        self.rezero = rezero
        norm = nn.Identity if rezero else nn.LayerNorm
        self.norm_attn = norm(d_model)
        self.attn = CausalSelfAttention(d_model, heads, dropout, **attention)
        self.norm_mlp = norm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model),
            nn.GELU(),
            nn.Linear(4 * d_model, d_model),
            nn.Dropout(dropout),
        )
        if rezero:
            self.gate_attn = nn.Parameter(torch.zeros(()))
            self.gate_mlp = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, cache: AttentionCache | None = None, start: int = 0) -> torch.Tensor:
        attn = self.attn(self.norm_attn(x), cache, start)
        if self.rezero:
            x = x + self.gate_attn * attn
            return x + self.gate_mlp * self._mlp(x)
        x = x + attn
        return x + self._mlp(self.norm_mlp(x))

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.mlp(x)
        return self.mlp[2](self.mlp[1](self.mlp[0](x)))  # no dropout call: decoding is op-bound


class CausalTransformer(nn.Module):
    """Autoregressive prior over flattened VQ-VAE token sequences.

    Args:
        vocab_size: ``codebook_size + 1``; the last id is the BOS token.
        seq_len: number of codebook tokens per sequence (BOS excluded).
        d_model, layers, heads: width, depth and attention heads.
        dropout: dropout on embeddings, attention weights and residual branches (training only).
        attention: ``"exact"`` (softmax) or ``"favor"`` (FAVOR+) for the global heads.
        local_heads, local_window: heads that attend only to the last ``local_window`` positions.
        favor_features: FAVOR+ random features per head (default ``head_dim * ln(head_dim)``).
        rezero: ReZero residual gates instead of pre-LayerNorm.
        activation_checkpointing: recompute each block's activations in the backward pass (less memory,
            about a third more compute); training only.
    """

    def __init__(
        self,
        vocab_size: int,
        seq_len: int,
        d_model: int,
        layers: int,
        heads: int,
        dropout: float = 0.0,
        *,
        attention: str = "exact",
        local_heads: int = 0,
        local_window: int | None = None,
        favor_features: int | None = None,
        rezero: bool = False,
        activation_checkpointing: bool = False,
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
        self.attention = attention
        self.local_heads = int(local_heads)
        self.local_window = int(local_window) if self.local_heads and local_window is not None else None
        self.rezero = bool(rezero)
        self.activation_checkpointing = bool(activation_checkpointing)
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(seq_len + 1, d_model)  # BOS + seq_len codes
        self.embedding_dropout = nn.Dropout(dropout)
        # each layer draws its own FAVOR+ features; seeded from torch's global generator like the weights
        self.blocks = nn.ModuleList(
            TransformerBlock(
                d_model,
                heads,
                dropout,
                rezero=self.rezero,
                local_heads=self.local_heads,
                window=self.local_window,
                backend=attention,
                features=favor_features,
            )
            for _ in range(layers)
        )
        self.favor_features = self.blocks[0].attn.features if layers else favor_features
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
            "attention": self.attention,
            "local_heads": self.local_heads,
            "local_window": self.local_window,
            "favor_features": self.favor_features,
            "rezero": self.rezero,
            "activation_checkpointing": self.activation_checkpointing,
        }

    def new_cache(self, batch_size: int, device: torch.device | str | None = None) -> KVCache:
        """An empty cache for ``batch_size`` sequences of up to ``seq_len + 1`` inputs."""
        param = next(self.parameters())
        device = param.device if device is None else device
        max_len = self.seq_len + 1
        layers = [block.attn.new_cache(batch_size, max_len, device, param.dtype) for block in self.blocks]
        return KVCache(layers, batch_size, max_len)

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
        # slicing the table equals looking positions up, and saves two ops per decoding step
        x = self.token_embedding(tokens) + self.position_embedding.weight[start : start + t]
        if self.training:
            x = self.embedding_dropout(x)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            if cache is not None:
                x = block(x, cache.layers[i], start)
            elif recompute:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        if cache is not None:
            cache.length = start + t
        return self.head(self.norm(x))
