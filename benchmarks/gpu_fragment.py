"""The paper-scale fragment for a lent GPU: per memory tier, VQ-VAE training steps at 160x224x160 and prior
training steps at the tier's batch sizes, with their peak memory; then the prior's sampling throughput.

Usage (on the GPU machine, from the repository root):
  python benchmarks/gpu_fragment.py                                   # 50 steps per tier, sampling 1 16 64
  python benchmarks/gpu_fragment.py --tiers configs/paper/gpu-80gb.yaml --steps 10 --sample-batch 1

Each tier is ``config.yaml`` and ``configs/paper/paper.yaml`` with the tier file on top (as
``snakemake --configfile`` merges them), plus ``--override`` files last (the test uses one to shrink the
networks). The VQ-VAE steps are full steps of morphgen's own trainer (encoder, codebook, decoder, L1 + FFT,
PatchGAN, backward, Adam) on random images; the prior steps are the prior's own update (forward,
cross-entropy, backward, clipping, AdamW) at the tier's precision and checkpointing. Peak memory is
``torch.cuda.max_memory_allocated`` (NaN on CPU). The first step of each kind is a warm-up and is not timed.
Sampling times the first ``--sample-steps`` token steps of a batch: on a GPU a cached step is bound by kernel
launches, not by its position, and a whole 1,400-token batch takes minutes. Each tier's VQ-VAE steps run
in a process of their own on a GPU, as each training job of the workflow does.
Output: two TSV tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from memory_plan import merged_config
from sampling_profile import timed_steps

from morphgen.models.autoencoders.training import AutoencoderTrainer
from morphgen.models.autoencoders.vqvae import latent_shape
from morphgen.models.engine.precision import autocast_for
from morphgen.models.families.vqvae_transformer.prior import build_prior, training_step
from morphgen.models.memory import GIB
from morphgen.nifti import save_volume

BASE = ["config.yaml", "configs/paper/paper.yaml"]  # as the README runs the paper config
TIERS = ["configs/paper/gpu-24gb.yaml", "configs/paper/gpu-40gb.yaml", "configs/paper/gpu-80gb.yaml"]


class Peak:
    """Peak memory of what runs inside, in GiB (CUDA only; NaN elsewhere)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.gib = math.nan

    def __enter__(self) -> Peak:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.gib = torch.cuda.max_memory_allocated() / GIB


def timed(fn, steps: int, device: str) -> tuple[float, float]:
    """Median seconds per call over ``steps`` calls after one warm-up call, and the peak memory."""
    with Peak(device) as peak:
        fn()
        times = []
        for _ in range(steps):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return float(np.median(times)), peak.gib


def autoencoder_steps(ae_cfg: dict, shape: tuple, steps: int, device: str) -> tuple[float, float]:
    cfg = {**ae_cfg, "adversarial_start_epoch": 0, "augment": {"enabled": False}}
    with tempfile.TemporaryDirectory() as tmp:
        image = np.random.default_rng(0).random(shape, dtype=np.float32)
        path = save_volume(Path(tmp) / "random.nii.gz", image, np.eye(4))
        batch = int(cfg["batch_size"])
        trainer = AutoencoderTrainer([path] * batch, [], cfg, Path(tmp) / "model", seed=0, device=device)
        return timed(trainer.train_epoch, steps, device)  # one batch per epoch: one step per call


def isolated_autoencoder_steps(ae_cfg: dict, shape: tuple, steps: int, device: str, isolate: bool):
    """:func:`autoencoder_steps` in a process of its own when ``isolate``: on a GPU, the blocks a smaller
    tier left in PyTorch's cache fragmented the memory of the next (the 80 GB tier ran out after the 40 GB
    one, with 22 GiB reserved but unused; alone it peaked at 63 GiB)."""
    if not isolate:
        return autoencoder_steps(ae_cfg, shape, steps, device)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(autoencoder_steps, ae_cfg, shape, steps, device).result()


def prior_steps(prior_cfg: dict, codebook: int, seq_len: int, steps: int, device: str):
    """Steps of the prior's own update (``families.vqvae_transformer.prior.training_step``) at the tier's
    settings."""
    torch.manual_seed(0)
    model = build_prior(codebook, seq_len, prior_cfg).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = autocast_for(prior_cfg.get("precision", "fp32"), torch.device(device))
    codes = torch.randint(0, codebook, (int(prior_cfg["batch_size"]), seq_len), device=device)
    return model, *timed(lambda: training_step(model, codes, optimiser, autocast), steps, device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiers", nargs="+", default=TIERS)
    parser.add_argument("--override", nargs="*", default=[], help="config files applied after each tier")
    parser.add_argument("--shape", type=int, nargs=3, help="grid instead of the paper's 160 224 160")
    parser.add_argument("--steps", type=int, default=50, help="timed VQ-VAE steps per tier")
    parser.add_argument("--prior-steps", type=int, default=10, help="timed prior steps per tier")
    parser.add_argument("--sample-batch", type=int, nargs="*", default=[1, 16, 64])
    parser.add_argument(
        "--sample-steps", type=int, default=150, help="token steps timed per batch (0: whole sequences)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--isolate", action="store_true", help="VQ-VAE steps in a child process (GPU: always)"
    )
    args = parser.parse_args(argv)

    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"# device {args.device} ({name}), torch {torch.__version__}")
    print("tier\tae_batch\tae_precision\tae_checkpointing\tae_s_per_step\tae_peak_GiB"
          "\tprior_batch\tprior_s_per_step\tprior_peak_GiB")  # fmt: skip
    model = None
    for tier in args.tiers:
        config = merged_config([*BASE, tier, *args.override])
        ae, prior_cfg = config["model"]["autoencoder"], config["model"]["prior"]
        shape = tuple(args.shape or config["space"]["shape"])
        seq_len = int(np.prod(latent_shape(shape, len(ae["channels"]))))
        isolate = args.isolate or args.device.startswith("cuda")
        ae_s, ae_peak = isolated_autoencoder_steps(ae, shape, args.steps, args.device, isolate)
        model, prior_s, prior_peak = prior_steps(
            prior_cfg, int(ae["codebook_size"]), seq_len, args.prior_steps, args.device
        )
        print(
            f"{Path(tier).stem}\t{ae['batch_size']}\t{ae.get('precision', 'fp32')}"
            f"\t{ae.get('activation_checkpointing', False)}\t{ae_s:.3f}\t{ae_peak:.2f}"
            f"\t{prior_cfg['batch_size']}\t{prior_s:.3f}\t{prior_peak:.2f}",
            flush=True,
        )
    steps = min(args.sample_steps or seq_len, seq_len)
    precision = config["model"]["sampling"]["precision"]
    print(f"# sampling: the first {steps} of {seq_len} token steps, prior of the last tier, {precision}")
    print("sample_batch\tseconds\ttokens_per_s\tpeak_GiB")
    model.eval()
    for batch in args.sample_batch:
        timed_steps(model, min(steps, 20), batch, precision)  # warm-up
        with Peak(args.device) as peak:
            seconds = timed_steps(model, steps, batch, precision)
        print(f"{batch}\t{seconds:.2f}\t{batch * steps / seconds:.0f}\t{peak.gib:.2f}", flush=True)


if __name__ == "__main__":
    main()
