"""Seed 003's multi-level VQ-VAE: FixUp residual blocks, EMA-VQ levels quantised top-down, a sub-pixel output.

The encoder runs a full-resolution FixUp block and then stride-2 stages (``channels[i]`` channels at
1/2^(i+1) of the input). Each level of ``levels`` (coarse first) taps one stage:

- the coarsest level quantises a bottleneck of its stage's features;
- each finer level quantises a bottleneck of its stage's features concatenated with the level above's
  quantised codes, brought to its resolution by transposed-conv FixUp blocks (top-down conditioning).

The decoder starts from the coarsest codes, goes up stage by stage, concatenates each finer level's codes
where their resolutions meet, and ends in MONAI's ``SubpixelUpsample`` (3D pixel shuffle with the correct 3D
ICNR init, which the port's 2D formula is not). No output activation.

A FixUp block (Zhang et al. 2019): ``conv1(x + b1)`` -> LeakyReLU -> blur (pad one voxel before, average
pool 2, stride 1) -> ``conv2 * scale + b2``, added to a skip (identity, or a conv of the same stride plus the
same blur). ``conv1`` is He-initialised times ``L^-1/2`` (``L``: the network's residual branches), ``conv2``
starts at zero, so every block starts as its skip. ``conv1`` strides 2 (3³) to go down and is a 4³ transposed
conv to go up.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.blocks import SubpixelUpsample
from monai.networks.layers.vector_quantizer import EMAQuantizer, VectorQuantizer
from torch import nn

from morphgen.models.autoencoders.vqvae import restart_quantizer_codes

KINDS = ("same", "down", "up")


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Pad one voxel before each spatial axis, then average-pool 2 with stride 1: same size, smoothed."""
    return F.avg_pool3d(F.pad(x, (1, 0, 1, 0, 1, 0), mode="replicate"), kernel_size=2, stride=1)


def _conv(kind: str, in_ch: int, out_ch: int, bias: bool = False) -> nn.Module:
    if kind == "same":
        return nn.Conv3d(in_ch, out_ch, 3, padding=1, bias=bias)
    if kind == "down":
        return nn.Conv3d(in_ch, out_ch, 3, stride=2, padding=1, bias=bias)
    if kind == "up":
        return nn.ConvTranspose3d(in_ch, out_ch, 4, stride=2, padding=1, bias=bias)
    raise ValueError(f"a FixUp block is one of {KINDS}, got {kind!r}")


class FixUpBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kind: str = "same", n_branches: int = 1, slope: float = 0.01):
        super().__init__()
        self.kind = kind
        self.bias1 = nn.Parameter(torch.zeros(1))
        self.conv1 = _conv(kind, in_ch, out_ch)
        self.bias2 = nn.Parameter(torch.zeros(1))
        self.conv2 = nn.Conv3d(out_ch, out_ch, 3, padding=1, bias=False)
        self.scale = nn.Parameter(torch.ones(1))
        self.bias3 = nn.Parameter(torch.zeros(1))
        self.slope = slope
        self.skip = None if kind == "same" and in_ch == out_ch else _conv(kind, in_ch, out_ch, bias=True)
        nn.init.kaiming_normal_(self.conv1.weight, a=slope, nonlinearity="leaky_relu")
        with torch.no_grad():
            self.conv1.weight.mul_(max(int(n_branches), 1) ** -0.5)
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x + self.bias1), self.slope)
        out = self.conv2(_blur(out) + self.bias2) * self.scale + self.bias3
        skip = x if self.skip is None else _blur(self.skip(x))
        return skip + out


def level_plan(channels: list[int], levels: list[dict]) -> list[dict]:
    """The levels, checked: each ``{"stage", "embedding_dim", "num_embeddings"}``, coarse (deepest) first."""
    if not levels:
        raise ValueError("a multi-level VQ-VAE needs at least one level")
    stages = [int(level["stage"]) for level in levels]
    if any(not 0 <= s < len(channels) for s in stages):
        raise ValueError(f"level stages {stages} must index the {len(channels)} encoder stages")
    if stages != sorted(stages, reverse=True) or len(set(stages)) != len(stages):
        raise ValueError(f"levels must run from coarse to fine on distinct stages, got stages {stages}")
    return [
        {
            "stage": int(level["stage"]),
            "embedding_dim": int(level["embedding_dim"]),
            "num_embeddings": int(level.get("num_embeddings", 256)),
        }
        for level in levels
    ]


class MultiLevelVQVAE(nn.Module):
    """Seed 003's network for one-channel volumes; every spatial size must divide by 2^len(channels)."""

    def __init__(
        self,
        channels: list[int],
        levels: list[dict],
        first_channels: int = 4,
        commitment_cost: float = 7.0,
        decay: float = 0.99,
        epsilon: float = 1e-5,
    ):
        super().__init__()
        self.channels = [int(c) for c in channels]
        self.levels = level_plan(self.channels, levels)
        deepest = self.levels[0]["stage"]
        n = len(self.levels)
        # residual branches: encoder stages used, bottlenecks, the up blocks of the conditioning and decoder
        ups = sum(self.levels[k - 1]["stage"] - self.levels[k]["stage"] for k in range(1, n))
        n_branches = 1 + (deepest + 1) + n + ups + deepest
        self.stem = FixUpBlock(1, first_channels, "same", n_branches)
        self.down = nn.ModuleList()
        c_in = first_channels
        for c in self.channels[: deepest + 1]:
            self.down.append(FixUpBlock(c_in, c, "down", n_branches))
            c_in = c
        self.bottlenecks, self.conditioners, self.to_codes, self.quantizers = (
            nn.ModuleList() for _ in range(4)
        )
        for k, level in enumerate(self.levels):
            c = self.channels[level["stage"]]
            if k == 0:
                self.conditioners.append(nn.Identity())
                self.bottlenecks.append(FixUpBlock(c, c, "same", n_branches))
            else:
                above = self.levels[k - 1]
                blocks, c_up = [], above["embedding_dim"]
                for s in range(above["stage"] - 1, level["stage"] - 1, -1):
                    blocks.append(FixUpBlock(c_up, self.channels[s], "up", n_branches))
                    c_up = self.channels[s]
                self.conditioners.append(nn.Sequential(*blocks))
                self.bottlenecks.append(FixUpBlock(2 * c, c, "same", n_branches))
            self.to_codes.append(nn.Conv3d(c, level["embedding_dim"], 1))
            self.quantizers.append(
                VectorQuantizer(
                    EMAQuantizer(
                        spatial_dims=3,
                        num_embeddings=level["num_embeddings"],
                        embedding_dim=level["embedding_dim"],
                        commitment_cost=commitment_cost,
                        decay=decay,
                        epsilon=epsilon,
                    )
                )
            )
        # decoder: from the deepest stage up to stage 0, each finer level's codes joined where they meet
        self.up = nn.ModuleList()
        joins = {level["stage"]: level["embedding_dim"] for level in self.levels[1:]}
        c_in = self.levels[0]["embedding_dim"]
        for s in range(deepest, 0, -1):
            self.up.append(FixUpBlock(c_in, self.channels[s - 1], "up", n_branches))
            c_in = self.channels[s - 1] + joins.get(s - 1, 0)
        self.decoder_input = c_in
        self.output = SubpixelUpsample(3, c_in, 1, scale_factor=2, apply_pad_pool=True)

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The stage features the levels tap (before their bottlenecks), coarse first."""
        x = self.stem(images)
        features = []
        for block in self.down:
            x = block(x)
            features.append(x)
        return [features[level["stage"]] for level in self.levels]

    def _level_input(self, k: int, feature: torch.Tensor, quantised: list[torch.Tensor]) -> torch.Tensor:
        """Level ``k``'s encoder output: its stage's features, joined below the coarsest level by the codes of
        the level above brought to its resolution, through its bottleneck (float32 for the codebook)."""
        x = feature if k == 0 else torch.cat([feature, self.conditioners[k](quantised[-1])], dim=1)
        return self.to_codes[k](self.bottlenecks[k](x)).float()

    def quantise(
        self, features: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Top-down: (encoder outputs of each level, their quantised codes, the summed commitment loss)."""
        encodings, quantised, loss = [], [], torch.zeros((), device=features[0].device)
        for k, feature in enumerate(features):
            z = self._level_input(k, feature, quantised)
            level_loss, q = self.quantizers[k](z)
            encodings.append(z)
            quantised.append(q)
            loss = loss + level_loss
        return encodings, quantised, loss

    def decode(self, quantised: list[torch.Tensor]) -> torch.Tensor:
        joins = {level["stage"]: q for level, q in zip(self.levels[1:], quantised[1:], strict=True)}
        x = quantised[0]
        stage = self.levels[0]["stage"]
        for block in self.up:
            x = block(x)
            stage -= 1
            if stage in joins:
                x = torch.cat([x, joins[stage]], dim=1)
        return self.output(x)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(reconstruction, commitment loss, each level's encoder outputs)."""
        encodings, quantised, loss = self.quantise(self.encode(images))
        return self.decode(quantised), loss, encodings

    @torch.no_grad()
    def tokens(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Each level's code indices (B, h, w, d), coarse first, without touching the codebooks."""
        features = self.encode(images)
        out, quantised = [], []
        for k, feature in enumerate(features):
            z = self._level_input(k, feature, quantised)
            indices = self.quantizers[k].quantizer.quantize(z)[2]
            out.append(indices)
            quantised.append(self.quantizers[k].embed(indices))
        return out

    @torch.no_grad()
    def decode_tokens(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        """Images (B, 1, X, Y, Z) from each level's code indices, coarse first."""
        return self.decode([self.quantizers[k].embed(t.long()) for k, t in enumerate(tokens)])


@torch.no_grad()
def restart_dead_codes_per_level(
    model: MultiLevelVQVAE, encodings: list[torch.Tensor], threshold: float, generator: torch.Generator
) -> list[int]:
    """Each level's codes used less than ``threshold`` (EMA tokens per step) moved onto random encoder outputs
    of that level (Jukebox's restarts, as the single-level VQ-VAE does); the number restarted per level."""
    return [
        restart_quantizer_codes(q.quantizer, z, threshold, generator)
        for q, z in zip(model.quantizers, encodings, strict=True)
    ]


def latent_shapes(image_shape: tuple[int, int, int], levels: list[dict]) -> list[tuple[int, int, int]]:
    """Each level's token grid for an input of ``image_shape``, coarse first."""
    shapes = []
    for level in levels:
        factor = 2 ** (int(level["stage"]) + 1)
        if any(n % factor for n in image_shape):
            raise ValueError(
                f"an input of shape {tuple(image_shape)} does not divide by {factor} (stage {level['stage']})"
            )
        shapes.append(tuple(n // factor for n in image_shape))
    return shapes


def token_sequence(tokens: list[torch.Tensor], levels: list[dict]) -> torch.Tensor:
    """One flat sequence per image: each level's tokens, coarse first, offset by the vocabularies before it,
    so that a single prior vocabulary (their sum) holds every level."""
    offsets = [0]
    for level in levels[:-1]:
        offsets.append(offsets[-1] + int(level["num_embeddings"]))
    return torch.cat([t.reshape(len(t), -1).long() + o for t, o in zip(tokens, offsets, strict=True)], dim=1)


def split_sequence(
    sequence: torch.Tensor, levels: list[dict], shapes: list[tuple[int, int, int]]
) -> list[torch.Tensor]:
    """The inverse of :func:`token_sequence`: each level's (B, h, w, d) tokens; an index outside its level's
    vocabulary raises."""
    expected = sum(math.prod(shape) for shape in shapes)
    if sequence.shape[1] != expected:
        raise ValueError(f"a sequence of {sequence.shape[1]} tokens does not hold levels of {expected}")
    out, start, offset = [], 0, 0
    for level, shape in zip(levels, shapes, strict=True):
        n = math.prod(shape)
        part = sequence[:, start : start + n].long() - offset
        if bool(((part < 0) | (part >= int(level["num_embeddings"]))).any()):
            raise ValueError(f"a token of the stage-{level['stage']} level lies outside its vocabulary")
        out.append(part.reshape(len(sequence), *shape))
        start += n
        offset += int(level["num_embeddings"])
    return out
