"""The β-VAE that seed 001 compares M³AE with: the same encoder, and a decoder of the same up-blocks whose
last head gives the image itself instead of deformations of a template."""

from __future__ import annotations

import torch
from torch import nn

from morphgen.models.families.m3ae.network import Decoder, Encoder


class BetaVAE(nn.Module):
    """Encoder to q(z | x); one voxel decoder from all of z (L up-blocks, the last head at the image grid)."""

    def __init__(self, network: dict):
        super().__init__()
        channels, shape = list(network["channels"]), list(network["image_shape"])
        self.latent_dim = int(network["latent_dim"])
        self.encoder = Encoder(channels, shape, self.latent_dim)
        self.decoder = Decoder(channels, shape, self.latent_dim, len(channels), 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)[-1]

    def forward(self, x: torch.Tensor):
        """Training pass: (reconstruction, mu, logvar); z by reparameterisation in training mode."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decode(z), mu, logvar
