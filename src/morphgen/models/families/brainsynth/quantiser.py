"""Seed 002's quantiser: each latent vector split into parts, each part coded by residual steps from one
shared EMA codebook, Q(z) = e(I(z)) + e(I(z - e(I(z)))) for two steps (RQ-VAE's residual quantisation)."""

from __future__ import annotations

import torch
from torch import nn

from morphgen.models.autoencoders.vqvae import restart_quantizer_codes


class SplitResidualQuantizer(nn.Module):
    """``splits`` parts of ``channels // splits`` each, ``depth`` residual codes per part, one codebook of
    ``num_embeddings`` vectors for every part and step (the paper: 256 channels, 2 parts, 2 steps,
    1,024 x 128).

    The codebook follows the EMA of the residuals assigned to each code at every step, and the commitment loss
    pulls each part towards its cumulative code at every step (seed-specs, choice 2). The buffer names are
    those of MONAI's ``EMAQuantizer``, so :func:`restart_quantizer_codes` restarts dead codes here too.
    """

    def __init__(
        self,
        channels: int,
        num_embeddings: int,
        splits: int = 2,
        depth: int = 2,
        decay: float = 0.99,
        commitment_cost: float = 0.25,
        epsilon: float = 1e-5,
    ):
        super().__init__()
        if channels % splits:
            raise ValueError(f"{channels} latent channels do not split into {splits} equal parts")
        self.channels, self.splits, self.depth = int(channels), int(splits), int(depth)
        self.embedding_dim = self.channels // self.splits
        self.num_embeddings = int(num_embeddings)
        self.decay, self.commitment_cost, self.epsilon = float(decay), float(commitment_cost), float(epsilon)
        self.embedding = nn.Embedding(self.num_embeddings, self.embedding_dim)
        self.embedding.weight.requires_grad_(False)
        self.register_buffer("ema_cluster_size", torch.zeros(self.num_embeddings))
        self.register_buffer("ema_w", self.embedding.weight.detach().clone())

    def _parts(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w, d) -> (B, splits, h, w, d, D)."""
        b, _, *grid = z.shape
        return z.reshape(b, self.splits, self.embedding_dim, *grid).movedim(2, -1)

    def _nearest(self, vectors: torch.Tensor) -> torch.Tensor:
        flat = vectors.reshape(-1, self.embedding_dim).float()
        codes = self.embedding.weight.float()
        distances = (flat**2).sum(1, keepdim=True) - 2 * flat @ codes.T + (codes**2).sum(1)[None]
        return distances.argmin(1).reshape(vectors.shape[:-1])

    def _code(self, parts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Indices (B, splits, depth, h, w, d), the code after each step (B, splits, depth, h, w, d, D) and
        the residual each step coded, of parts (B, splits, h, w, d, D)."""
        residual, total = parts, torch.zeros_like(parts)
        indices, cumulative, residuals = [], [], []
        for _ in range(self.depth):
            index = self._nearest(residual)
            code = self.embedding(index).to(parts.dtype)
            indices.append(index)
            residuals.append(residual)
            total = total + code
            cumulative.append(total)
            residual = residual - code
        return torch.stack(indices, dim=2), torch.stack(cumulative, dim=2), residuals

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Indices (B, splits, depth, h, w, d) of latents (B, C, h, w, d); no update."""
        return self._code(self._parts(z))[0]

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """The quantised latent (B, C, h, w, d) of indices (B, splits, depth, h, w, d)."""
        return self._join(self.embedding(indices).sum(dim=2))

    def _join(self, parts: torch.Tensor) -> torch.Tensor:
        """(B, splits, h, w, d, D) -> (B, C, h, w, d)."""
        b, _, *grid, _ = parts.shape
        return parts.movedim(-1, 2).reshape(b, self.channels, *grid)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Straight-through quantised latent, commitment loss, indices; the codebook's EMA moves in
        training."""
        parts = self._parts(z)
        indices, cumulative, residuals = self._code(parts)
        if self.training:
            self._ema_update(indices, residuals)
        commitment = sum(
            torch.mean((parts - cumulative[:, :, step].detach()) ** 2) for step in range(self.depth)
        )
        loss = self.commitment_cost * commitment / self.depth
        total = cumulative[:, :, -1]
        return self._join(parts + (total - parts).detach()), loss, indices

    @torch.no_grad()
    def _ema_update(self, indices: torch.Tensor, residuals: list[torch.Tensor]) -> None:
        flat_index = torch.cat([indices[:, :, step].reshape(-1) for step in range(self.depth)])
        flat = torch.cat([r.reshape(-1, self.embedding_dim) for r in residuals]).float()
        onehot = torch.zeros(len(flat_index), self.num_embeddings, device=flat.device)
        onehot[torch.arange(len(flat_index)), flat_index] = 1.0
        size = onehot.sum(0)
        self.ema_cluster_size.mul_(self.decay).add_(size, alpha=1 - self.decay)
        self.ema_w.mul_(self.decay).add_(onehot.T @ flat, alpha=1 - self.decay)
        n = self.ema_cluster_size.sum()
        smoothed = (self.ema_cluster_size + self.epsilon) / (n + self.num_embeddings * self.epsilon) * n
        self.embedding.weight.copy_(self.ema_w / smoothed[:, None])

    def restart_codes(self, z: torch.Tensor, threshold: float, generator: torch.Generator) -> int:
        """Dead codes (EMA usage below ``threshold``) restarted at parts of the encoder outputs ``z``."""
        parts = self._parts(z).movedim(-1, 1)  # (B, D, splits, h, w, d)
        return restart_quantizer_codes(self, parts.flatten(2, 3), threshold, generator)
