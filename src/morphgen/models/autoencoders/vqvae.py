"""The VQ-VAE (MONAI VQVAE or the normalised network, EMA codebook or FSQ), built from a plain-dict network

The network config is stored inside every checkpoint and ``model.pt`` so that a model rebuilds without
config.yaml. Each level of ``channels`` is one stride-2, kernel-4 convolution (transposed in the decoder), as
in Tudosiu et al. 2022, appendix 6.1, so the latent grid is the image grid divided by ``2 ** len(channels)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.networks.nets import VQVAE
from monai.networks.nets.vqvae import VQVAEResidualUnit
from torch.utils.checkpoint import checkpoint

from morphgen.errors import ConfigError
from morphgen.models.autoencoders.decoder_norm import with_decoder_norm
from morphgen.models.autoencoders.discriminator import discriminator_config
from morphgen.models.autoencoders.fsq import check_levels
from morphgen.models.autoencoders.normalised_vqvae import NormalisedVQVAE

NETWORK_KEYS = (
    "channels",
    "num_res_layers",
    "num_res_channels",
    "codebook_size",
    "embedding_dim",
    "commitment_cost",
    "decay",
    "disc_channels",
    "disc_layers",
)

# stride, kernel, dilation, padding (+ output padding): halves / doubles an even side exactly
DOWNSAMPLE = (2, 4, 1, 1)
UPSAMPLE = (2, 4, 1, 1, 0)
# activations of the VQ-VAE (paper: ReLU). With ReLU the demo's deeper encoder levels died (78-97% of channels
# never positive), so the codes stopped depending on the image; a leaky ReLU keeps every unit's gradient.
ACTIVATIONS = {"relu": ("relu", {}), "leakyrelu": ("leakyrelu", {"negative_slope": 0.1})}
# architecture: vqvae (MONAI VQVAE, the paper's) | normalised (GroupNorm + SiLU blocks of AutoencoderKL)
ARCHITECTURES = ("vqvae", "normalised")
QUANTISERS = ("ema", "fsq")  # MONAI's EMA codebook (the paper's) | finite scalar quantisation


def network_config(ae_cfg: dict, image_shape: tuple[int, ...]) -> dict:
    """The plain-dict description of both networks, from ``config['model']['autoencoder']``.

    Raises :class:`ConfigError` when a key is missing or the grid does not fit the number of levels.
    """
    missing = [k for k in NETWORK_KEYS if k not in ae_cfg]
    if missing:
        raise ConfigError(f"model.autoencoder: missing keys {missing}")
    cfg = {
        "channels": [int(c) for c in ae_cfg["channels"]],
        "num_res_layers": per_level(ae_cfg["num_res_layers"], len(ae_cfg["channels"]), "num_res_layers"),
        "num_res_channels": per_level(
            ae_cfg["num_res_channels"], len(ae_cfg["channels"]), "num_res_channels"
        ),
        "codebook_size": int(ae_cfg["codebook_size"]),
        "embedding_dim": int(ae_cfg["embedding_dim"]),
        "commitment_cost": float(ae_cfg["commitment_cost"]),
        "decay": float(ae_cfg["decay"]),
        "epsilon": float(ae_cfg.get("epsilon", 1e-5)),
        **discriminator_config(ae_cfg, image_shape),
        "image_shape": [int(s) for s in image_shape],
        "normalize_latents": bool(ae_cfg.get("normalize_latents", False)),
        "subtract_mean": bool(ae_cfg.get("subtract_mean", False)),
        "activation": str(ae_cfg.get("activation", "relu")),
        "architecture": str(ae_cfg.get("architecture", "vqvae")),
        "quantiser": str(ae_cfg.get("quantiser", "ema")),
    }
    _check_choice(cfg, "architecture", ARCHITECTURES)
    _check_choice(cfg, "quantiser", QUANTISERS)
    if cfg["architecture"] == "vqvae" and isinstance(cfg["num_res_layers"], list):
        raise ConfigError(
            "model.autoencoder.num_res_layers: MONAI's VQVAE takes one number for every level; a list per "
            "level needs architecture: normalised"
        )
    if cfg["architecture"] == "normalised":
        cfg["norm_num_groups"] = int(ae_cfg.get("norm_num_groups", 8))
        cfg = with_decoder_norm(cfg, ae_cfg)
        bad = [c for c in cfg["channels"] if c % cfg["norm_num_groups"]]
        if bad:
            raise ConfigError(
                f"model.autoencoder.norm_num_groups: {cfg['norm_num_groups']} groups must divide every entry "
                f"of model.autoencoder.channels {cfg['channels']}"
            )
    if cfg["quantiser"] == "fsq":
        if cfg["architecture"] != "normalised":
            raise ConfigError(
                "model.autoencoder.quantiser: fsq needs model.autoencoder.architecture: normalised (the "
                "paper's network lost its encoder with FSQ too, BENCHMARKS.md)"
            )
        cfg["fsq_levels"] = check_levels(ae_cfg.get("fsq_levels") or [])
        cfg["codebook_size"] = math.prod(cfg["fsq_levels"])
        cfg["embedding_dim"] = len(cfg["fsq_levels"])
    if cfg["activation"] not in ACTIVATIONS:
        raise ConfigError(
            f"model.autoencoder.activation: one of {sorted(ACTIVATIONS)}, got {cfg['activation']!r}"
        )
    if not cfg["channels"]:
        raise ConfigError("model.autoencoder.channels: give at least one level")
    if cfg["codebook_size"] < 2 or cfg["codebook_size"] > 2**31 - 2:
        raise ConfigError(f"model.autoencoder.codebook_size: {cfg['codebook_size']} is out of range")
    # the normalised encoder's first level keeps the grid; each further level halves it
    halvings = len(cfg["channels"]) - (cfg["architecture"] == "normalised")
    cfg["latent_shape"] = latent_shape(cfg["image_shape"], halvings)
    return cfg


def _check_choice(cfg: dict, key: str, choices: tuple[str, ...]) -> None:
    if cfg[key] not in choices:
        raise ConfigError(f"model.autoencoder.{key}: one of {list(choices)}, got {cfg[key]!r}")


def codebook_size_of(ae_cfg: dict) -> int:
    """Tokens a model of ``config['model']['autoencoder']`` can give: the codebook, or FSQ's level product."""
    if ae_cfg.get("quantiser", "ema") == "fsq":
        return math.prod(check_levels(ae_cfg.get("fsq_levels") or []))
    return int(ae_cfg["codebook_size"])


def per_level(value: int | list[int], levels: int, key: str) -> int | list[int]:
    """An int (same at every level) or one int per level."""
    if isinstance(value, (list, tuple)):
        if len(value) != levels:
            raise ConfigError(f"model.autoencoder.{key}: give one value or one per level ({levels})")
        return [int(v) for v in value]
    return int(value)


def latent_shape(image_shape: list[int] | tuple[int, ...], levels: int) -> list[int]:
    """Token grid of an image: each side divided by ``2 ** levels`` (sides must be divisible)."""
    factor = 2**levels
    bad = [s for s in image_shape if s % factor]
    if bad:
        raise ConfigError(
            f"model.autoencoder.channels: {levels} stride-2 levels need every side of the grid "
            f"{list(image_shape)} divisible by {factor}"
        )
    return [s // factor for s in image_shape]


class UnitSphere(torch.nn.Module):
    """Scales every latent vector (over channels) to length sqrt(C): a fixed scale for the codebook.

    Without it the demo's encoders shrank their outputs until every subject fell onto the same codes
    (the spread between subjects 1e-7, the gap between codes 1e-4): the decoder then draws one brain.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x, dim=1) * math.sqrt(x.shape[1])


class AddImage(torch.nn.Module):
    """Adds ``sign`` times a stored image (a buffer, saved with the weights) to a batch of images."""

    def __init__(self, shape: list[int], sign: float):
        super().__init__()
        self.sign = sign
        self.register_buffer("image", torch.zeros(1, 1, *shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sign * self.image.to(x.dtype)


def build_vqvae(net: dict) -> VQVAE | NormalisedVQVAE:
    """The VQ-VAE described by a network config: MONAI's VQVAE (3D, EMA codebook) or, with ``architecture:
    normalised``, :class:`NormalisedVQVAE`.

    The options are added as encoder and decoder blocks, so that every MONAI code path (forward, encode,
    index_quantize, decode_samples) applies them: ``subtract_mean`` codes each image's difference from the
    training mean (set by :func:`set_mean_image`) and adds the mean back after decoding; ``normalize_latents``
    puts encoder outputs on a sphere of fixed radius.
    """
    if net.get("architecture", "vqvae") == "normalised":
        vqvae = NormalisedVQVAE(net)
    else:
        vqvae = _monai_vqvae(net)
    if net.get("subtract_mean"):
        vqvae.encoder.blocks.insert(0, AddImage(net["image_shape"], -1.0))
        vqvae.decoder.blocks.append(AddImage(net["image_shape"], 1.0))
    if net.get("normalize_latents"):
        vqvae.encoder.blocks.append(UnitSphere())
    return vqvae


def set_mean_image(vqvae: VQVAE, mean: torch.Tensor) -> None:
    """Store the training mean image (H, W, D) in a VQ-VAE built with ``subtract_mean``."""
    shifts = [m for m in vqvae.modules() if isinstance(m, AddImage)]
    if len(shifts) != 2:
        raise ValueError("this VQ-VAE was not built with subtract_mean")
    for shift in shifts:
        shift.image.copy_(mean.reshape(shift.image.shape))


class ResidualUnit(VQVAEResidualUnit):
    """MONAI's residual unit with its last activation the configured one: MONAI's ends in a hard ReLU, so
    ``activation: leakyrelu`` used to leave a ReLU after every residual block."""

    def forward(self, x):
        return self.final_act(x + self.conv2(self.conv1(x)))


def _monai_vqvae(net: dict) -> VQVAE:
    levels = len(net["channels"])
    model = VQVAE(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        channels=tuple(net["channels"]),
        num_res_layers=net["num_res_layers"],
        num_res_channels=tuple(net["num_res_channels"])
        if isinstance(net["num_res_channels"], list)
        else net["num_res_channels"],
        downsample_parameters=(DOWNSAMPLE,) * levels,
        upsample_parameters=(UPSAMPLE,) * levels,
        num_embeddings=net["codebook_size"],
        embedding_dim=net["embedding_dim"],
        commitment_cost=net["commitment_cost"],
        decay=net["decay"],
        epsilon=net["epsilon"],
        ddp_sync=True,  # sums the EMA statistics over training processes (a no-op without a process group)
        act=ACTIVATIONS[net.get("activation", "relu")],
    )
    if net.get("activation", "relu") != "relu":
        slope = ACTIVATIONS[net["activation"]][1]["negative_slope"]
        for unit in model.modules():
            if isinstance(unit, VQVAEResidualUnit):
                unit.__class__ = ResidualUnit  # no parameters change, so state dicts are as before
                unit.final_act = torch.nn.LeakyReLU(slope)
    return model


def token_dtype(codebook_size: int) -> type:
    """Smallest signed integer type that holds every token index."""
    return np.int16 if codebook_size <= np.iinfo(np.int16).max + 1 else np.int32


@torch.no_grad()
def restart_dead_codes(
    vqvae: VQVAE, encodings: torch.Tensor, threshold: float, generator: torch.Generator
) -> int:
    """Move codebook entries whose EMA usage fell below ``threshold`` onto random encoder outputs.

    MONAI's EMA quantiser never revives an entry that no encoder output chose: with the paper's decay of 0.5
    the demo's codebooks collapsed to 2-4 used entries of 256. Random restarts as in Jukebox (Dhariwal et al.
    2020, sec. 3.1; the paper's spectral loss comes from there too) fix that. ``encodings`` are the encoder
    outputs (B, C, h, w, d) of the step just taken; usage is in tokens per step. Returns the number restarted.
    """
    if getattr(vqvae, "fsq", None) is not None:
        return 0  # FSQ has no codebook to restart
    return restart_quantizer_codes(vqvae.quantizer.quantizer, encodings, threshold, generator)


@torch.no_grad()
def restart_quantizer_codes(
    quantizer: torch.nn.Module, encodings: torch.Tensor, threshold: float, generator: torch.Generator
) -> int:
    """:func:`restart_dead_codes` for one MONAI ``EMAQuantizer`` and its encoder outputs (B, C, h, w, d)."""
    dead = quantizer.ema_cluster_size < threshold
    n_dead = int(dead.sum())
    if n_dead == 0:
        return 0
    flat = encodings.detach().float().movedim(1, -1).reshape(-1, quantizer.embedding_dim)
    chosen = flat[torch.randint(len(flat), (n_dead,), generator=generator)]
    # usage 1 and ema_w = vector keep ema_w / usage (what the next EMA update divides) equal to the vector
    quantizer.ema_cluster_size[dead] = 1.0
    quantizer.ema_w[dead] = chosen
    quantizer.embedding.weight[dead] = chosen
    return n_dead


@torch.no_grad()
def token_indices(vqvae: torch.nn.Module, encodings: torch.Tensor) -> torch.Tensor:
    """Tokens (B, h, w, d) of encoder outputs, without updating the codebook."""
    if isinstance(vqvae, NormalisedVQVAE):
        return vqvae.token_indices(encodings)
    return vqvae.quantizer.quantizer.quantize(encodings)[2]


def _through(blocks: torch.nn.ModuleList, x: torch.Tensor, recompute: bool) -> torch.Tensor:
    for block in blocks:
        if recompute and torch.is_grad_enabled():
            x = checkpoint(block, x, use_reentrant=False)
        else:
            x = block(x)
    return x


def encode(vqvae: VQVAE, images: torch.Tensor, recompute: bool = False) -> torch.Tensor:
    """``vqvae.encode``, with activation checkpointing per block when ``recompute``.

    MONAI's own ``use_checkpointing`` recomputes the whole encoder at once, so the backward pass still holds
    all of its activations; per block, it holds one block's.
    """
    return _through(vqvae.encoder.blocks, images, recompute)


def decode(vqvae: VQVAE, quantised: torch.Tensor, recompute: bool = False) -> torch.Tensor:
    """``vqvae.decode``, with activation checkpointing per block when ``recompute``."""
    return _through(vqvae.decoder.blocks, quantised, recompute)


@torch.no_grad()
def encode_tokens(vqvae: VQVAE, images: torch.Tensor) -> torch.Tensor:
    """Codebook indices (B, h, w, d) of a (B, 1, X, Y, Z) batch; the model must be in eval mode.

    (MONAI's ``index_quantize`` runs the EMA quantiser, which would update the codebook in training mode.)
    """
    if vqvae.training:
        raise RuntimeError("encode_tokens needs the VQ-VAE in eval mode (training mode updates the codebook)")
    return vqvae.index_quantize(images)


@torch.no_grad()
def decode_tokens(vqvae: VQVAE, tokens: torch.Tensor) -> torch.Tensor:
    """Images (B, 1, X, Y, Z) decoded from codebook indices (B, h, w, d)."""
    return vqvae.decode_samples(tokens.long())
