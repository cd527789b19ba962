"""Seed 001's β-VAE baseline as a family: M³AE's encoder, Gaussian prior and generation, a voxel decoder."""

from __future__ import annotations

from morphgen.models.base import register_family
from morphgen.models.families.beta_vae.codec import BetaVAECodec
from morphgen.models.families.m3ae.family import GaussianLatentFamily


@register_family("beta_vae")
class BetaVAEFamily(GaussianLatentFamily):
    """The β-VAE, from ``config['model']``: autoencoder, latent_prior, sampling (as ``m3ae``)."""

    codec_class = BetaVAECodec
