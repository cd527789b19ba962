"""A VQ-VAE with normalised blocks: the encoder and decoder of MONAI's ``AutoencoderKL`` (GroupNorm + SiLU
residual blocks), quantised by finite scalar quantisation or by MONAI's EMA codebook.

The paper's network (MONAI ``VQVAE``: no normalisation, ReLU) lost its deeper encoder on the demo within two
epochs: most channels were never active, every subject got the same codes, and the decoder drew the mean brain
(BENCHMARKS.md). With normalised blocks the units keep their gradients. The class offers the methods of
MONAI's ``VQVAE`` that morphgen calls, so training, encoding, generation and memory estimates use either.
"""

from __future__ import annotations

import torch
from monai.networks.layers.vector_quantizer import EMAQuantizer, VectorQuantizer
from monai.networks.nets.autoencoderkl import Decoder, Encoder

from morphgen.models.autoencoders.decoder_norm import apply_decoder_norm
from morphgen.models.autoencoders.fsq import FSQ


def kl_encoder_decoder(net: dict, latent_channels: int) -> tuple[Encoder, Decoder]:
    """MONAI ``AutoencoderKL``'s encoder and decoder for ``net`` (``channels``, ``num_res_layers`` one number
    or one per level, ``norm_num_groups``), meeting in ``latent_channels``; no attention."""
    channels = list(net["channels"])
    blocks = net["num_res_layers"]
    blocks = [int(b) for b in blocks] if isinstance(blocks, list) else [int(blocks)] * len(channels)
    common = dict(
        spatial_dims=3,
        channels=channels,
        num_res_blocks=blocks,
        norm_num_groups=int(net["norm_num_groups"]),
        norm_eps=1e-6,
        attention_levels=[False] * len(channels),
        with_nonlocal_attn=False,
    )
    return (
        Encoder(in_channels=1, out_channels=latent_channels, **common),
        Decoder(in_channels=latent_channels, out_channels=1, **common),
    )


class NormalisedVQVAE(torch.nn.Module):
    """Encoder -> quantiser -> decoder. ``quantiser``: ``fsq`` (levels ``fsq_levels``) or ``ema`` (a codebook
    of ``codebook_size`` x ``embedding_dim``). ``channels``: one entry per level; each level after the
    first halves the grid."""

    def __init__(self, net: dict):
        super().__init__()
        dim = int(net["embedding_dim"])  # network_config sets it to len(fsq_levels) for FSQ
        self.encoder, self.decoder = kl_encoder_decoder(net, dim)
        apply_decoder_norm(self.decoder, net)
        if net["quantiser"] == "fsq":
            self.fsq = FSQ(net["fsq_levels"])
            self.quantizer = None
            self.num_embeddings = self.fsq.num_embeddings
        else:
            self.fsq = None
            self.quantizer = VectorQuantizer(
                EMAQuantizer(
                    spatial_dims=3,
                    num_embeddings=int(net["codebook_size"]),
                    embedding_dim=dim,
                    commitment_cost=float(net["commitment_cost"]),
                    decay=float(net["decay"]),
                    epsilon=float(net.get("epsilon", 1e-5)),
                    ddp_sync=True,
                )
            )
            self.num_embeddings = int(net["codebook_size"])
        self.embedding_dim = dim

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def quantize(self, encodings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(quantised latents, quantisation loss): FSQ has none (zero), the EMA codebook its commitment."""
        if self.fsq is not None:
            return self.fsq(encodings), encodings.new_zeros((), dtype=torch.float32)
        loss, quantised = self.quantizer(encodings)
        return quantised, loss

    def decode(self, quantised: torch.Tensor) -> torch.Tensor:
        return self.decoder(quantised)

    def token_indices(self, encodings: torch.Tensor) -> torch.Tensor:
        """Tokens (B, h, w, d) of encoder outputs, without updating a codebook."""
        if self.fsq is not None:
            return self.fsq.indices(encodings)
        return self.quantizer.quantizer.quantize(encodings)[2]

    def index_quantize(self, images: torch.Tensor) -> torch.Tensor:
        return self.token_indices(self.encode(images))

    def decode_samples(self, indices: torch.Tensor) -> torch.Tensor:
        codes = self.fsq.embed(indices) if self.fsq is not None else self.quantizer.embed(indices)
        return self.decode(codes.contiguous())  # as the encoder's layout, so decoding takes the same kernels

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        quantised, loss = self.quantize(self.encode(images))
        return self.decode(quantised), loss
