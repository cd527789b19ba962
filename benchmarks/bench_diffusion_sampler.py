"""Time DDIM (seed 004: 50 steps) against DDPM (all 1,000 steps) per sample, in one run, with one U-Net.

Usage: python benchmarks/bench_diffusion_sampler.py [--config configs/demo/ldm.yaml] [--latent 3 12 16 12]
       [--batch 1] [--ddim-steps 50] [--ddpm-steps 1000] [--threads 2] [--device cpu]

A randomly initialised U-Net costs what a trained one does. The U-Net comes from ``model.diffusion`` of the
config (``--paper`` for the brain LDM that seed 004 released: channels 256/512/768, attention on the two lower
levels, 2 residual blocks, latents 3 x 20 x 28 x 20). ``--ddpm-steps`` below 1,000 times that many DDPM steps
and scales to 1,000 (each step is one U-Net call, like DDIM's); the table says which rows were scaled.
"""

from __future__ import annotations

import argparse
import time

import torch
import yaml

from morphgen.models.covariates import covariate_columns
from morphgen.models.families.ldm.diffusion import (
    TRAIN_STEPS,
    build_unet,
    make_scheduler,
    sample_latents,
    unet_config,
)

PAPER = {
    "channels": [256, 512, 768],
    "attention_levels": [False, True, True],
    "num_res_blocks": 2,
    "num_head_channels": [0, 512, 768],
    "norm_num_groups": 32,
}


def seconds(unet, kind: str, steps: int, cov: torch.Tensor, shape: tuple[int, ...]) -> float:
    scheduler = make_scheduler(kind, steps)
    generator = torch.Generator(device=cov.device).manual_seed(0)
    if cov.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        sample_latents(unet, scheduler, cov, shape, generator, progress=False)
    if cov.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/demo/ldm.yaml")
    parser.add_argument("--paper", action="store_true", help="seed 004's U-Net and latent grid")
    parser.add_argument("--latent", type=int, nargs=4, default=[3, 12, 16, 12], metavar=("C", "H", "W", "D"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--ddpm-steps", type=int, default=TRAIN_STEPS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with open(args.config) as f:
        model_cfg = yaml.safe_load(f)["model"]
    diffusion = PAPER if args.paper else model_cfg["diffusion"]
    latent = [3, 20, 28, 20] if args.paper else args.latent
    n_cov = len(covariate_columns(model_cfg.get("conditioning")))
    unet = build_unet(unet_config(diffusion, latent[0], n_cov)).to(args.device)
    cov = torch.rand((args.batch, n_cov), device=args.device)
    shape = tuple(latent)
    seconds(unet, "ddim", 2, cov, shape)  # warm-up: allocator, kernels
    params = sum(p.numel() for p in unet.parameters()) / 1e6
    print(
        f"# U-Net {diffusion['channels']}, {params:.1f} M parameters, latents {latent}, batch {args.batch}, "
        f"device {args.device}, threads {args.threads}, torch {torch.__version__}"
    )
    print("sampler\tsteps\ttimed_steps\tseconds_per_sample\tseconds_per_step\tratio_to_ddim")
    ddim = seconds(unet, "ddim", args.ddim_steps, cov, shape) / args.batch
    ddpm = seconds(unet, "ddpm", args.ddpm_steps, cov, shape) / args.batch * TRAIN_STEPS / args.ddpm_steps
    for name, steps, timed, per_sample in (
        ("ddim", args.ddim_steps, args.ddim_steps, ddim),
        ("ddpm", TRAIN_STEPS, args.ddpm_steps, ddpm),
    ):
        ratio = per_sample / ddim
        row = (name, steps, timed, f"{per_sample:.3f}", f"{per_sample / steps:.4f}", f"{ratio:.1f}")
        print("\t".join(map(str, row)))


if __name__ == "__main__":
    main()
