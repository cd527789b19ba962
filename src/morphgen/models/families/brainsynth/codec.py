"""Seed 002's stage I as a codec of the shared autoencoder trainer: the encoder and decoder of MONAI's
``AutoencoderKL`` (taming-style GroupNorm + SiLU residual blocks) around the split residual quantiser, trained
with the trainer's L1 (+ spectral) and PatchGAN terms and the quantiser's commitment loss; dead codes restart
after every update. Latents: int16 indices (splits, depth, h, w, d) per image (int32 past 32,768 codes)."""

from __future__ import annotations

import numpy as np
import torch

from morphgen.errors import ConfigError
from morphgen.models.autoencoders.codecs import Codec, register_codec
from morphgen.models.autoencoders.discriminator import discriminator_config
from morphgen.models.autoencoders.normalised_vqvae import kl_encoder_decoder
from morphgen.models.autoencoders.vqvae import latent_shape, per_level
from morphgen.models.families.brainsynth.quantiser import SplitResidualQuantizer


class ResidualVQAutoencoder(torch.nn.Module):
    """Encoder -> split residual quantiser -> decoder; ``channels`` one entry per level, each after the first
    halving the grid."""

    def __init__(self, network: dict):
        super().__init__()
        dim = int(network["embedding_dim"])
        self.encoder, self.decoder = kl_encoder_decoder(network, dim)
        self.quantizer = SplitResidualQuantizer(
            dim,
            int(network["codebook_size"]),
            splits=int(network["splits"]),
            depth=int(network["depth"]),
            decay=float(network["decay"]),
            commitment_cost=float(network["commitment_cost"]),
        )

    def indices(self, images: torch.Tensor) -> torch.Tensor:
        return self.quantizer.quantize(self.encoder(images))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.quantizer.lookup(indices))


@register_codec
class ResidualVQCodec(Codec):
    kind, label = "rvq", "split residual VQ autoencoder"
    terms = ("quantisation",)
    restarts_codes = True

    def network_config(self, image_shape):
        cfg = self.ae_cfg
        channels = [int(c) for c in cfg.get("channels", [16, 32, 64, 64])]
        blocks = per_level(cfg.get("num_res_layers", 1), len(channels), "num_res_layers")
        groups = int(cfg.get("norm_num_groups", 8))
        if any(c % groups for c in channels):
            raise ConfigError(
                f"model.autoencoder.norm_num_groups: {groups} does not divide every entry of {channels}"
            )
        dim, splits = int(cfg.get("embedding_dim", 32)), int(cfg.get("splits", 2))
        if dim % splits:
            raise ConfigError(
                f"model.autoencoder.embedding_dim: {dim} does not split into {splits} equal parts"
            )
        image_shape = [int(s) for s in image_shape]
        return {
            "kind": self.kind,
            "module": __name__,
            "image_shape": image_shape,
            # the first level keeps the grid; each further level halves it
            "latent_shape": latent_shape(image_shape, len(channels) - 1),
            "channels": channels,
            "num_res_layers": blocks,
            "norm_num_groups": groups,
            "embedding_dim": dim,
            "splits": splits,
            "depth": int(cfg.get("depth", 2)),
            "codebook_size": int(cfg.get("codebook_size", 1024)),
            "decay": float(cfg.get("decay", 0.99)),
            "commitment_cost": float(cfg.get("commitment_cost", 0.25)),
            **discriminator_config(cfg, image_shape),
        }

    def build(self, network):
        return ResidualVQAutoencoder(network)

    def reconstruct(self, model, images, autocast, recompute=False):
        with autocast():
            encodings = model.encoder(images)
        encodings = encodings.float()  # codebook distances stay float32 at any precision
        quantised, commitment, _ = model.quantizer(encodings)
        with autocast():
            recon = model.decoder(quantised)
        return encodings, recon.float(), {"quantisation": commitment}

    def restart_codes(self, model, encodings, world, generator):
        threshold = float(self.ae_cfg.get("dead_code_threshold", 0.01))
        return model.quantizer.restart_codes(world.all_gather(encodings.detach()), threshold, generator)

    def latents(self, model, images):
        indices = model.indices(images).numpy()
        size = model.quantizer.num_embeddings
        if indices.min() < 0 or indices.max() >= size:
            raise ValueError("code index outside the codebook")
        return indices.astype(np.int16 if size <= np.iinfo(np.int16).max + 1 else np.int32)

    @torch.no_grad()
    def reconstruction(self, model, images):
        return model.decode_indices(model.indices(images))
