"""Seconds per training step of the metamorphic autoencoder (seed 001) on this machine's CPU threads.

One step: the codec's forward pass and loss terms, backward, an AdamW update, batch ``--batch`` at the grid
``--shape``; the third of three steps is reported, for each network given.

    python benchmarks/m3ae_step.py                       # the paper's and the demo's networks at 48 x 64 x 48
    python benchmarks/m3ae_step.py --shape 80 96 80      # the paper's grid
"""

from __future__ import annotations

import argparse
import time

import torch

from morphgen.models.engine.precision import autocast_for
from morphgen.models.families.m3ae.codec import MetamorphicCodec

NETWORKS = {"paper": ([16, 32, 64, 128], 512), "demo": ([8, 16, 32, 64], 128)}


def step_seconds(
    channels: list[int], latent_dim: int, shape: tuple[int, ...], batch: int
) -> tuple[float, int]:
    codec = MetamorphicCodec(
        {"channels": channels, "latent_dim": latent_dim, "disc_channels": 8, "disc_layers": 3}
    )
    model = codec.build(codec.network_config(shape))
    optimiser = torch.optim.AdamW(model.parameters(), 3e-4)
    images = torch.rand(batch, 1, *shape)
    autocast = autocast_for("fp32", torch.device("cpu"))
    for _ in range(3):
        start = time.perf_counter()
        _, recon, terms = codec.reconstruct(model, images, autocast)
        loss = (recon - images).abs().mean() + sum(terms.values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        seconds = time.perf_counter() - start
    return seconds, sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", type=int, nargs=3, default=[48, 64, 48])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name, (channels, latent_dim) in NETWORKS.items():
        seconds, parameters = step_seconds(channels, latent_dim, tuple(args.shape), args.batch)
        print(
            f"{name}: channels {channels}, z {latent_dim}, {parameters / 1e6:.2f} M parameters, "
            f"{seconds:.2f} s/step"
        )


if __name__ == "__main__":
    main()
