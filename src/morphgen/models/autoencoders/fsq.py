"""Finite scalar quantisation (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple").

Each of the ``len(levels)`` latent channels is bounded with a tanh and rounded to one of ``levels[i]`` values;
a position's code is the tuple of its rounded channels, its token the tuple read as a mixed-radix number, so
the codebook (``prod(levels)`` entries) is fixed and every entry stays reachable: no codebook to learn, no
commitment loss, no dead codes. The demo's EMA codebooks needed restarts and still lost their encoders.
"""

from __future__ import annotations

import math

import torch

from morphgen.errors import ConfigError

# widens the tanh's bound a little past the end levels, so they are reached (and atanh of the even-level
# shift stays finite at 2 levels); rounding still gives exactly ``levels`` values
BOUND_EPS = 1e-3


def check_levels(levels) -> list[int]:
    """The levels as ints; ConfigError unless every level is at least 2 and the codebook fits int32."""
    out = [int(v) for v in levels]
    if not out or min(out) < 2:
        raise ConfigError(f"model.autoencoder.fsq_levels: each level must be at least 2, got {levels}")
    if math.prod(out) > 2**31 - 2:
        raise ConfigError(f"model.autoencoder.fsq_levels: {out} make more than 2**31 - 2 codes")
    return out


class FSQ(torch.nn.Module):
    """Quantises (B, len(levels), ...) latents; codes are scaled to [-1, 1] per channel."""

    def __init__(self, levels: list[int]):
        super().__init__()
        levels = check_levels(levels)
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32), persistent=False)
        basis = [math.prod(levels[:i]) for i in range(len(levels))]
        self.register_buffer("basis", torch.tensor(basis, dtype=torch.int64), persistent=False)
        self.num_embeddings = math.prod(levels)
        self.embedding_dim = len(levels)

    def _view(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return t.view(1, -1, *([1] * (ndim - 2)))

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Channel i squashed into (-levels_i / 2, levels_i / 2) (shifted by 1/2 for even levels), so that
        rounding gives exactly ``levels_i`` integers."""
        levels = self._view(self.levels, z.ndim)
        half = (levels - 1.0) * (1.0 + BOUND_EPS) / 2.0
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def digits(self, z: torch.Tensor) -> torch.Tensor:
        """Each channel's rounded level, 0 .. levels_i - 1 (int64)."""
        levels = self._view(self.levels, z.ndim)
        return (torch.round(self.bound(z.float())) + torch.floor(levels / 2)).long()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Quantised latents with a straight-through gradient, scaled to [-1, 1]."""
        z = z.float()
        half_width = self._view(torch.floor(self.levels / 2), z.ndim)
        bounded = self.bound(z)
        scaled = bounded / half_width
        codes = torch.round(bounded) / half_width
        # adds an exact zero, so the value is the code :meth:`embed` gives, bit for bit
        return codes + (scaled - scaled.detach())

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Tokens (B, ...) of latents (B, C, ...)."""
        basis = self._view(self.basis, z.ndim)
        return (self.digits(z) * basis).sum(dim=1)

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """The codes (B, C, ...) of tokens (B, ...), as :meth:`forward` gives them."""
        indices = indices.long()
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_embeddings):
            raise ValueError(f"token outside the FSQ codebook of {self.num_embeddings}")
        basis = self.basis.view(*([1] * indices.ndim), -1)
        levels = self.levels.long().view(*([1] * indices.ndim), -1)
        digits = (indices.unsqueeze(-1) // basis) % levels
        codes = (digits - levels // 2).float() / (levels // 2).float()
        return codes.movedim(-1, 1).contiguous()  # a strided view would take another conv kernel path
