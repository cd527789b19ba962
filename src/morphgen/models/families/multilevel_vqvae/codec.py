"""The multi-level VQ-VAE as a codec of the shared autoencoder trainer.

Its reconstruction term is seed 003's (``model.autoencoder.reconstruction_loss``): ``baur``, ``adaptive`` (the
paper: Barron's loss on the 3D DCT with shape and scale learnt per coefficient; they are parameters of the
model, so the optimiser learns them and every checkpoint keeps them) or ``charbonnier`` (the same loss with
``alpha = c = 1`` fixed, what the authors' port trains with). The shared L1 and spectral terms add to it; the
family's configuration sets their weights to 0. Each level's dead codes restart after every update.
Latents are one flat, coarse-first token sequence per image with per-level vocabulary offsets.
"""

from __future__ import annotations

import numpy as np
import torch

from morphgen.errors import ConfigError
from morphgen.models.autoencoders.codecs import Codec, register_codec
from morphgen.models.autoencoders.discriminator import discriminator_config
from morphgen.models.families.multilevel_vqvae.losses import AdaptiveDCTLoss, baur_loss
from morphgen.models.families.multilevel_vqvae.network import (
    MultiLevelVQVAE,
    latent_shapes,
    level_plan,
    restart_dead_codes_per_level,
    token_sequence,
)

LOSSES = ("baur", "adaptive", "charbonnier")


class MultiLevelAutoencoder(torch.nn.Module):
    """The network and, for the DCT losses, the loss's learnt shape and scale, saved and optimised with it."""

    def __init__(self, network: dict):
        super().__init__()
        self.loss_kind = network["reconstruction_loss"]
        self.net = MultiLevelVQVAE(
            network["channels"],
            network["levels"],
            first_channels=network["first_channels"],
            commitment_cost=network["commitment_cost"],
            decay=network["decay"],
        )
        self.dct_loss = (
            None
            if self.loss_kind == "baur"
            else AdaptiveDCTLoss(tuple(network["image_shape"]), learn=self.loss_kind == "adaptive")
        )

    def reconstruction_loss(self, images: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        if self.dct_loss is None:
            return baur_loss(images, recon)
        return self.dct_loss(images, recon)


def _vocabulary(levels: list[dict]) -> int:
    return sum(int(level["num_embeddings"]) for level in levels)


def levels_of(ae_cfg: dict) -> tuple[list[int], list[dict]]:
    """``model.autoencoder``'s channels and checked levels; errors name the key."""
    try:
        channels = [int(c) for c in ae_cfg["channels"]]
        return channels, level_plan(channels, list(ae_cfg["levels"]))
    except KeyError as exc:
        raise ConfigError(f"model.autoencoder.{exc.args[0]} is missing from the configuration") from None
    except ValueError as exc:
        raise ConfigError(f"model.autoencoder.levels: {exc}") from None


def vocabulary_of(ae_cfg: dict) -> int:
    """The prior's vocabulary: every level's codebook, one after the other."""
    return _vocabulary(levels_of(ae_cfg)[1])


@register_codec
class MultiLevelCodec(Codec):
    kind, label = "multilevel_vqvae", "multi-level VQ-VAE"
    terms = ("quantisation", "reconstruction")
    restarts_codes = True

    def network_config(self, image_shape):
        cfg = self.ae_cfg
        loss = str(cfg.get("reconstruction_loss", "adaptive"))
        if loss not in LOSSES:
            raise ConfigError(
                f"model.autoencoder.reconstruction_loss must be one of {list(LOSSES)}, got {loss!r}"
            )
        channels, levels = levels_of(cfg)
        try:
            shapes = latent_shapes(tuple(image_shape), levels)
        except ValueError as exc:
            raise ConfigError(f"model.autoencoder.levels: {exc}") from None
        return {
            "kind": self.kind,
            "module": __name__,
            "image_shape": [int(s) for s in image_shape],
            "channels": channels,
            "levels": levels,
            "latent_shapes": [list(s) for s in shapes],
            "codebook_size": _vocabulary(levels),
            "first_channels": int(cfg.get("first_channels", 4)),
            "commitment_cost": float(cfg.get("commitment_cost", 7.0)),
            "decay": float(cfg.get("decay", 0.99)),
            "reconstruction_loss": loss,
            **discriminator_config(cfg, image_shape),
        }

    def build(self, network):
        return MultiLevelAutoencoder(network)

    def reconstruct(self, model, images, autocast, recompute=False):
        with autocast():
            recon, commitment, encodings = model.net(images)
        recon = recon.float()
        terms = {
            "quantisation": commitment.float(),
            "reconstruction": model.reconstruction_loss(images, recon),
        }
        return encodings, recon, terms

    def restart_codes(self, model, encodings, world, generator):
        threshold = float(self.ae_cfg.get("dead_code_threshold", 0.01))
        gathered = [world.all_gather(z.detach()) for z in encodings]
        return sum(restart_dead_codes_per_level(model.net, gathered, threshold, generator))

    def latents(self, model, images):
        sequence = token_sequence(model.net.tokens(images), model.net.levels).numpy()
        vocabulary = _vocabulary(model.net.levels)
        if sequence.min() < 0 or sequence.max() >= vocabulary:
            raise ValueError("token index outside the levels' vocabularies")
        dtype = np.int16 if vocabulary <= np.iinfo(np.int16).max + 1 else np.int32
        return sequence.astype(dtype)

    @torch.no_grad()
    def reconstruction(self, model, images):
        return model.net.decode_tokens(model.net.tokens(images))
