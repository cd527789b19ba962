"""Token steps of the paper's prior on a GPU: seconds per step at batch 1 / 16 / 64 in bf16 and fp32, then a
profile of 30 steps (CPU and GPU time per operation).

Usage (on the GPU machine, from the repository root): python benchmarks/sampling_profile.py [--steps 150]

The prior is that of ``config.yaml`` + ``configs/paper/paper.yaml`` + ``configs/paper/gpu-24gb.yaml``
(24 layers, d = 256, FAVOR+ with 8 local heads, 1,400 tokens), randomly initialised, sampled with the
key/value cache by morphgen's own sampling loop, stopped after ``--steps`` tokens: a whole 1,400-token
sequence takes minutes when a step is launch-bound, and every step costs the same.
"""

from __future__ import annotations

import argparse
import time

import torch
from memory_plan import merged_config
from torch.profiler import ProfilerActivity, profile

from morphgen.models.engine.precision import autocast_for
from morphgen.models.families.vqvae_transformer.prior import _sample_batch, build_prior

CONFIGS = ["config.yaml", "configs/paper/paper.yaml", "configs/paper/gpu-24gb.yaml"]


class _Stop(Exception):
    pass


def timed_steps(model, steps: int, batch: int, precision: str) -> float:
    """Seconds for the first ``steps`` token steps of one batch."""
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    count = [0]

    def on_step():
        count[0] += 1
        if count[0] == steps:
            raise _Stop

    generator = torch.Generator(device=device).manual_seed(0)
    autocast = autocast_for(precision, device)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            _sample_batch(model, batch, 1.0, None, generator, True, on_step, autocast)
    except _Stop:
        pass
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--device", default="cuda", help="cpu: the code path only (no GPU profile)")
    args = parser.parse_args()
    config = merged_config(CONFIGS)
    prior_cfg = config["model"]["prior"]
    codebook = int(config["model"]["autoencoder"]["codebook_size"])
    model = build_prior(codebook, 1400, prior_cfg).to(args.device).eval()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"# {name}, torch {torch.__version__}", flush=True)
    timed_steps(model, 20, 1, "bf16")  # warm-up
    print("precision\tbatch\tms_per_step\ttokens_per_s", flush=True)
    for precision in ("bf16", "fp32"):
        for batch in (1, 16, 64):
            seconds = timed_steps(model, args.steps, batch, precision)
            rate = args.steps * batch / seconds
            print(f"{precision}\t{batch}\t{seconds / args.steps * 1e3:.1f}\t{rate:.0f}", flush=True)
    if not args.device.startswith("cuda"):
        return
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        timed_steps(model, 30, 1, "bf16")
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=18), flush=True)


if __name__ == "__main__":
    main()
