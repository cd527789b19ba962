"""The KL autoencoder of latent diffusion (seed 004): MONAI ``AutoencoderKL``, its KL term and latent scale.

The encoder maps a volume to the mean and standard deviation of a Gaussian over a latent grid (seed 004:
160 x 224 x 160 voxels to 3 x 20 x 28 x 20); training samples from it and pays a KL divergence to the unit
Gaussian, weighted small so the latents stay informative. The diffusion model works on the means, divided by
their standard deviation over the training set (the scale factor of Rombach et al. 2022), so the noise
schedule meets latents of unit variance.
"""

from __future__ import annotations

import torch
from monai.networks.nets import AutoencoderKL

from morphgen.errors import ConfigError
from morphgen.models.autoencoders.decoder_norm import apply_decoder_norm, with_decoder_norm


def network_config(ae_cfg: dict, image_shape: tuple[int, ...] | list[int]) -> dict:
    """``AutoencoderKL``'s constructor arguments and the latent grid they give on ``image_shape``."""
    channels = list(ae_cfg.get("channels", [64, 128, 128, 128]))
    attention = list(ae_cfg.get("attention_levels", [False] * len(channels)))
    if len(attention) != len(channels):
        raise ConfigError(
            f"model.autoencoder: {len(channels)} channels, {len(attention)} attention_levels (one per level)"
        )
    factor = 2 ** (len(channels) - 1)  # one halving between consecutive levels
    shape = [int(s) for s in image_shape]
    if any(s % factor for s in shape):
        raise ConfigError(
            f"the grid {shape} must be divisible by {factor} for {len(channels)} autoencoder levels "
            "(each level after the first halves it)"
        )
    latent_channels = int(ae_cfg.get("latent_channels", 3))
    net = {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 1,
        "channels": channels,
        "attention_levels": attention,
        "latent_channels": latent_channels,
        "num_res_blocks": int(ae_cfg.get("num_res_blocks", 2)),
        "norm_num_groups": int(ae_cfg.get("norm_num_groups", 32)),
        "with_encoder_nonlocal_attn": bool(ae_cfg.get("nonlocal_attention", False)),
        "with_decoder_nonlocal_attn": bool(ae_cfg.get("nonlocal_attention", False)),
        "latent_shape": [latent_channels, *(s // factor for s in shape)],
    }
    return with_decoder_norm(net, ae_cfg)


# the keys of a network config that are AutoencoderKL's arguments (the rest describe the grid, the
# discriminator and the kind of autoencoder)
CONSTRUCTOR_KEYS = (
    "spatial_dims",
    "in_channels",
    "out_channels",
    "channels",
    "attention_levels",
    "latent_channels",
    "num_res_blocks",
    "norm_num_groups",
    "with_encoder_nonlocal_attn",
    "with_decoder_nonlocal_attn",
)


def build_autoencoder_kl(net: dict) -> AutoencoderKL:
    """MONAI AutoencoderKL from a network config of :func:`network_config` (extra keys are ignored)."""
    model = AutoencoderKL(**{k: net[k] for k in CONSTRUCTOR_KEYS})
    apply_decoder_norm(model.decoder, net)
    return model


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over the latent grid, averaged over the batch."""
    var = z_sigma.float() ** 2
    per_item = 0.5 * (z_mu.float() ** 2 + var - torch.log(var) - 1).flatten(1).sum(dim=1)
    return per_item.mean()


@torch.no_grad()
def latent_means(model: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    """The encoder's means: the deterministic latents the diffusion model learns and the decoder reads."""
    z_mu, _ = model.encode(images)
    return z_mu


def scale_factor(latents: torch.Tensor) -> float:
    """1 / standard deviation of the training latents (all values together)."""
    std = float(latents.float().std())
    if not std > 0:
        raise ConfigError("the training latents are constant: the autoencoder has not learnt to encode")
    return 1.0 / std
