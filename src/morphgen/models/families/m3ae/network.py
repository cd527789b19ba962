"""The metamorphic autoencoder of seed 001 (M³AE; Kapoor, Macke & Baumgartner): a β-VAE whose decoders do not
paint voxels. One decoder gives stationary velocity fields, the other additive intensity maps, one per scale;
both are applied coarse to fine to one template T at the image's resolution:

    x⁽⁰⁾ = T,   x⁽ⁱ⁾ = (x⁽ⁱ⁻¹⁾ + A⁽ⁱ⁾↑) ∘ exp(v⁽ⁱ⁾↑)  for i = 1 .. L-1,   x̂ = x⁽ᴸ⁻¹⁾ + A⁽ᴸ⁾

with L = len(channels) levels (the paper: four), ↑ trilinear upsampling to the image grid, and exp the
scaling-and-squaring integration of MONAI's ``DVF2DDF``. Level i runs at the image grid divided by
2^(L-i); the last level has no warp. Velocities are in voxels of the image grid (seed-specs choice 2: the
penalties act on v at its own grid, in those units). Each velocity is integrated on its own grid and its
displacement upsampled: integrating the upsampled fields on the image grid instead spent half of a demo
training step in ``grid_sample`` (BENCHMARKS.md, "M³AE").

Blocks (the paper's Fig. 6 is not in its text; seed-specs' choice): conv3 → GroupNorm → LeakyReLU, twice; a
down-block's first convolution has stride 2; an up-block upsamples 2× (trilinear) first and takes the previous
block's features with the previous level's output. Each head starts at zero, so training starts at the
template.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from morphgen.errors import ConfigError

SQUARING_STEPS = 7  # MONAI DVF2DDF's default: exp(v) = (exp(v / 2^7))^(2^7)


def _groups(channels: int) -> int:
    return math.gcd(int(channels), 8)


class ConvBlock(nn.Module):
    """Two 3x3x3 convolutions with GroupNorm and LeakyReLU; the first has ``stride``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1),
            nn.GroupNorm(_groups(out_channels), out_channels),
            nn.LeakyReLU(0.2),
            nn.Conv3d(out_channels, out_channels, 3, padding=1),
            nn.GroupNorm(_groups(out_channels), out_channels),
            nn.LeakyReLU(0.2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def bottleneck_shape(image_shape, levels: int) -> list[int]:
    """The grid after ``levels`` stride-2 blocks: every side must be divisible by 2^levels."""
    factor = 2**levels
    if any(int(s) % factor for s in image_shape):
        raise ConfigError(
            f"model.autoencoder.channels: {levels} levels need every side of the grid {list(image_shape)} "
            f"divisible by {factor}"
        )
    return [int(s) // factor for s in image_shape]


class Encoder(nn.Module):
    """Down-blocks, then one fully connected layer to the mean and log-variance of q(z | x)."""

    def __init__(self, channels: list[int], image_shape: list[int], latent_dim: int):
        super().__init__()
        sizes = [1, *channels]
        blocks = [ConvBlock(a, b, stride=2) for a, b in zip(sizes, sizes[1:], strict=False)]
        self.blocks = nn.Sequential(*blocks)
        flat = channels[-1] * math.prod(bottleneck_shape(image_shape, len(channels)))
        self.fc = nn.Linear(flat, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.fc(self.blocks(x).flatten(1)).chunk(2, dim=1)
        return mu, logvar


class Decoder(nn.Module):
    """A fully connected layer to the bottleneck grid, then ``levels`` up-blocks, each with a head of
    ``out_channels`` at its resolution. Block i sees block i-1's features and head output."""

    def __init__(
        self, channels: list[int], image_shape: list[int], in_dim: int, levels: int, out_channels: int
    ):
        super().__init__()
        self.grid = bottleneck_shape(image_shape, len(channels))
        up = list(reversed(channels))  # e.g. [128, 64, 32, 16]
        self.fc = nn.Linear(in_dim, up[0] * math.prod(self.grid))
        self.blocks, self.heads = nn.ModuleList(), nn.ModuleList()
        previous = up[0]
        for i in range(levels):
            self.blocks.append(ConvBlock(previous + (out_channels if i else 0), up[i]))
            head = nn.Conv3d(up[i], out_channels, 3, padding=1)
            nn.init.normal_(head.weight, std=1e-5)  # starts at the identity: no warp, no intensity change
            nn.init.zeros_(head.bias)
            self.heads.append(head)
            previous = up[i]

    def forward(self, z: torch.Tensor) -> list[torch.Tensor]:
        x = self.fc(z).view(len(z), -1, *self.grid)
        outputs: list[torch.Tensor] = []
        for i, (block, head) in enumerate(zip(self.blocks, self.heads, strict=True)):
            if i:
                x = torch.cat([x, outputs[-1]], dim=1)
            x = block(F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False))
            outputs.append(head(x))
        return outputs


def network_config(ae_cfg: dict, image_shape) -> dict:
    """The plain-dict description of an M³AE (stored in model.pt); sizes from ``model.autoencoder``."""
    channels = [int(c) for c in ae_cfg.get("channels", [16, 32, 64, 128])]
    if len(channels) < 2:
        raise ConfigError("model.autoencoder.channels: the metamorphic autoencoder needs at least two levels")
    latent_dim = int(ae_cfg.get("latent_dim", 512))
    if latent_dim < 2 or latent_dim % 2:
        raise ConfigError(f"model.autoencoder.latent_dim must be even and at least 2, got {latent_dim}")
    bottleneck_shape(image_shape, len(channels))
    return {
        "channels": channels,
        "latent_dim": latent_dim,
        "image_shape": [int(s) for s in image_shape],
        "squaring_steps": int(ae_cfg.get("squaring_steps", SQUARING_STEPS)),
    }


class MetamorphicAutoencoder(nn.Module):
    """Encoder, velocity decoder (levels 1 .. L-1), intensity decoder (levels 1 .. L) and the template."""

    def __init__(self, network: dict):
        super().__init__()
        from monai.networks.blocks import DVF2DDF, Warp

        channels, shape = list(network["channels"]), list(network["image_shape"])
        self.latent_dim = int(network["latent_dim"])
        self.levels = len(channels)
        self.image_shape = shape
        half = self.latent_dim // 2  # z = (z_phi, z_A), as in the paper
        self.encoder = Encoder(channels, shape, self.latent_dim)
        self.velocity = Decoder(channels, shape, half, self.levels - 1, 3)
        self.intensity = Decoder(channels, shape, half, self.levels, 1)
        steps = int(network["squaring_steps"])
        with warnings.catch_warnings():  # "using PyTorch native grid_sample": the only one on CPU
            warnings.simplefilter("ignore")
            # one per level, so that each keeps its grid's reference coordinates
            self.integrators = nn.ModuleList(
                DVF2DDF(num_steps=steps, mode="bilinear") for _ in range(self.levels - 1)
            )
            self.warp = Warp(mode="bilinear", padding_mode="border")
        self.register_buffer("template", torch.zeros(1, 1, *shape))

    def factors(self) -> list[int]:
        """How many image voxels one voxel of each level spans."""
        return [2 ** (self.levels - 1 - i) for i in range(self.levels)]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def _full(self, field: torch.Tensor) -> torch.Tensor:
        if list(field.shape[2:]) == self.image_shape:
            return field
        return F.interpolate(field, size=self.image_shape, mode="trilinear", align_corners=False)

    def decode(self, z: torch.Tensor, parts: bool = False):
        """The image of ``z`` (B, 1, ...); with ``parts``, also a dict of each level's image (``levels``), the
        native-grid velocities and intensity maps and the displacements (``ddfs``, image voxels)."""
        z_phi, z_a = z.chunk(2, dim=1)
        velocities, intensities = self.velocity(z_phi), self.intensity(z_a)
        x = self.template.expand(len(z), -1, -1, -1, -1)
        levels, ddfs = [], []
        steps = zip(velocities, intensities, self.integrators, self.factors(), strict=False)
        for v, a, integrate, factor in steps:
            ddf = self._full(integrate(v / factor) * factor)  # on the level's grid, in its voxels
            x = self.warp(x + self._full(a), ddf)
            levels.append(x)
            ddfs.append(ddf)
        x = x + self._full(intensities[-1])
        if not parts:
            return x
        return x, {"levels": levels, "velocities": velocities, "intensities": intensities, "ddfs": ddfs}

    def forward(self, x: torch.Tensor):
        """Training pass: (reconstruction, mu, logvar, parts); z is drawn by reparameterisation in training
        mode, the mean otherwise."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        recon, parts = self.decode(z, parts=True)
        return recon, mu, logvar, parts

    @torch.no_grad()
    def deformation(self, ddfs: list[torch.Tensor]) -> torch.Tensor:
        """The displacement (image voxels) of the whole map that carries the template to the image,
        phi_1 ∘ phi_2 ∘ ... (x̂(x) draws the template at x + u(x)): u_ab = u_b + u_a(x + u_b)."""
        total = ddfs[-1]
        for ddf in reversed(ddfs[:-1]):
            total = total + self.warp(ddf, total)
        return total


def velocity_penalties(velocity: torch.Tensor, factor: int) -> dict[str, torch.Tensor]:
    """Per-sample sums (B,) of |grad v|², (div v)² and |v|² of a velocity field on a grid ``factor`` times
    coarser than the image, with derivatives per image voxel (central differences)."""
    grads = torch.gradient(velocity, spacing=float(factor), dim=(2, 3, 4))  # grads[k][:, j] = d v_j / d x_k
    divergence = sum(grads[k][:, k] for k in range(3))
    return {
        "gradient": sum((g**2).flatten(1).sum(1) for g in grads),
        "divergence": (divergence**2).flatten(1).sum(1),
        "magnitude": (velocity**2).flatten(1).sum(1),
    }


def medoid(images: np.ndarray) -> int:
    """The index of the image nearest (L1) the voxel-wise median of ``images`` (N, ...)."""
    median = np.median(images, axis=0)
    return int(np.argmin(np.abs(images - median).reshape(len(images), -1).sum(1)))
