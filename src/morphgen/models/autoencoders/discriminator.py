"""The adversarial discriminator every autoencoder trains against (MONAI's PatchGAN, least squares), and the
score by which generated samples are ranked (seed 000 keeps the top 1%)."""

from __future__ import annotations

import math

import torch
from monai.networks.nets import PatchDiscriminator

from morphgen.errors import ConfigError

DISC_KERNEL = 4


def discriminator_config(ae_cfg: dict, image_shape: tuple[int, ...] | list[int]) -> dict:
    """The PatchGAN's part of a network config (every autoencoder kind has one); its patches must fit."""
    missing = [k for k in ("disc_channels", "disc_layers") if k not in ae_cfg]
    if missing:
        raise ConfigError(f"model.autoencoder: missing keys {missing}")
    cfg = {"disc_channels": int(ae_cfg["disc_channels"]), "disc_layers": int(ae_cfg["disc_layers"])}
    if min(discriminator_output_shape(image_shape, cfg["disc_layers"])) < 1:
        raise ConfigError(
            f"model.autoencoder.disc_layers: {cfg['disc_layers']} layers shrink a {list(image_shape)} image "
            f"to nothing; use fewer"
        )
    return cfg


def discriminator_output_shape(image_shape: list[int] | tuple[int, ...], layers: int) -> list[int]:
    """Patch grid of MONAI's PatchDiscriminator (kernel 4, padding 1): strides 2 x ``layers``, then 1, 1."""
    strides = [2] * layers + [
        1,
        1,
    ]  # initial conv + layers - 1 stride-2 convs, last layer and final conv stride 1
    side = list(image_shape)
    for stride in strides:
        side = [math.floor((s + 2 - DISC_KERNEL) / stride) + 1 for s in side]
    return side


def build_discriminator(net: dict) -> PatchDiscriminator:
    """MONAI PatchDiscriminator (3D, least-squares GAN, raw outputs) described by a network config."""
    return PatchDiscriminator(
        spatial_dims=3,
        channels=net["disc_channels"],
        in_channels=1,
        out_channels=1,
        num_layers_d=net["disc_layers"],
        kernel_size=DISC_KERNEL,
    )


def discriminator_score(disc: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Mean PatchGAN output per image (B,): higher means more real-looking."""
    logits = disc(images)[-1]
    return logits.flatten(1).mean(1)
