"""Seed 002's stage I as a codec of the shared autoencoder trainer: the encoder and decoder of MONAI's
``AutoencoderKL`` (taming-style GroupNorm + SiLU residual blocks) around the split residual quantiser, trained
with the trainer's L1 (+ spectral) and PatchGAN terms and the quantiser's commitment loss; dead codes restart
after every update. Latents: int16 indices (splits, depth, h, w, d) per image (int32 past 32,768 codes)."""

from __future__ import annotations

import numpy as np
import torch
from monai.networks.nets.autoencoderkl import Decoder, Encoder

from morphgen.errors import ConfigError
from morphgen.models.autoencoders.codecs import Codec, register_codec
from morphgen.models.autoencoders.discriminator import discriminator_config
from morphgen.models.families.brainsynth.quantiser import SplitResidualQuantizer


class ResidualVQAutoencoder(torch.nn.Module):
    """Encoder -> split residual quantiser -> decoder; ``channels`` one entry per level, each after the first
    halving the grid."""

    def __init__(self, network: dict):
        super().__init__()
        common = dict(
            spatial_dims=3,
            channels=list(network["channels"]),
            num_res_blocks=list(network["num_res_layers"]),
            norm_num_groups=int(network["norm_num_groups"]),
            norm_eps=1e-6,
            attention_levels=[False] * len(network["channels"]),
            with_nonlocal_attn=False,
        )
        dim = int(network["embedding_dim"])
        self.encoder = Encoder(in_channels=1, out_channels=dim, **common)
        self.decoder = Decoder(in_channels=dim, out_channels=1, **common)
        self.quantizer = SplitResidualQuantizer(
            dim,
            int(network["codebook_size"]),
            splits=int(network["splits"]),
            depth=int(network["depth"]),
            decay=float(network["decay"]),
            commitment_cost=float(network["commitment_cost"]),
        )

    def indices(self, images: torch.Tensor) -> torch.Tensor:
        return self.quantizer.quantize(self.encoder(images))[0]

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.quantizer.lookup(indices))


def _levels(cfg: dict) -> tuple[list[int], list[int]]:
    channels = [int(c) for c in cfg.get("channels", [16, 32, 64, 64])]
    blocks = cfg.get("num_res_layers", 1)
    blocks = [int(b) for b in blocks] if isinstance(blocks, list) else [int(blocks)] * len(channels)
    if len(blocks) != len(channels):
        raise ConfigError(
            f"model.autoencoder.num_res_layers: {len(blocks)} entries for {len(channels)} levels of channels"
        )
    return channels, blocks


@register_codec
class ResidualVQCodec(Codec):
    kind, label = "rvq", "split residual VQ autoencoder"
    terms = ("quantisation",)
    restarts_codes = True

    def network_config(self, image_shape):
        cfg = self.ae_cfg
        channels, blocks = _levels(cfg)
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
        factor = 2 ** (len(channels) - 1)
        if any(int(s) % factor for s in image_shape):
            raise ConfigError(
                f"the grid {list(image_shape)} does not divide by {factor} ({len(channels)} levels)"
            )
        return {
            "kind": self.kind,
            "module": __name__,
            "image_shape": [int(s) for s in image_shape],
            "latent_shape": [int(s) // factor for s in image_shape],
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
