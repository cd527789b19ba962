"""Seed 003's multi-level VQ-VAE as a generative family.

The paper has no prior: it is an autoencoder paper. To sample from it as from the seeds' other VQ systems,
this family (our addition, not the paper's) trains seed 000's causal transformer on one flat sequence per
image, the coarse level's tokens first and then each finer level's, with per-level vocabulary offsets: every
fine token is predicted given the whole coarser level, a coarse-to-fine prior. That fits sequences of a few
thousand tokens; the paper's 147,456 fine tokens at 1 mm would need VQ-VAE-2-style conditional priors.
Sampled sequences are split into levels, decoded and ranked by the PatchGAN as in seed 000.
"""

from __future__ import annotations

import numpy as np
import torch

from morphgen.models.base import register_family
from morphgen.models.families.multilevel_vqvae.codec import MultiLevelCodec, vocabulary_of
from morphgen.models.families.multilevel_vqvae.network import split_sequence
from morphgen.models.families.vqvae_transformer.family import VQVAETransformerFamily


@register_family("multilevel_vqvae")
class MultiLevelVQVAEFamily(VQVAETransformerFamily):
    """``config['model']``: autoencoder (channels, levels, reconstruction_loss, ...), prior, sampling."""

    codec_class = MultiLevelCodec
    token_grid_dims = 1  # a latent file holds (copies, L) coarse-first sequences
    sample_description = "morphgen synthetic (multi-level VQ-VAE + coarse-to-fine transformer)"

    def vocabulary(self) -> int:
        return vocabulary_of(self.ae_cfg)

    def code_shape(self, network: dict) -> tuple[int, ...]:
        return (sum(a * b * c for a, b, c in network["latent_shapes"]),)

    def token_ranges(self, network: dict) -> np.ndarray:
        """A level's positions draw only from its own codebook's part of the vocabulary."""
        ranges, low = [], 0
        for level, (a, b, c) in zip(network["levels"], network["latent_shapes"], strict=True):
            ranges += [(low, low + int(level["num_embeddings"]))] * (a * b * c)
            low += int(level["num_embeddings"])
        return np.asarray(ranges, dtype=np.int64)

    def decode_codes(self, model, network: dict, codes: torch.Tensor) -> torch.Tensor:
        shapes = [tuple(s) for s in network["latent_shapes"]]
        return model.net.decode_tokens(split_sequence(codes, network["levels"], shapes)).clamp(0.0, 1.0)
